"""What can be named in a suite file, known without importing JAX.

A suite file is checked name by name before anything is built, and a finished suite is
reopened from its names alone (`testbed.suites.spec.load_suite` with ``build=False``). The
registries that hold the names sit in modules that import JAX (a method's record, a task's
sampler), and importing JAX is most of the time a finished ``testbed bench`` takes. So this
module answers ``which names exist`` on its own:

- once a kind's registry module has been imported (by a plug-in that registers into it, or
  by anything that builds), that registry answers: it holds the plug-ins' names too;
- before that, the built-in names below answer, with the TOML task specs found on disk.

The same holds for in-context suites: prompt tasks and models, shifts and baselines.

A plug-in cannot register anything without importing its registry, so the two agree.
`tests/test_catalog.py` checks ``BUILTIN`` against the registries of a fresh process: a new
built-in method, model, optimizer, Python task, function class, prompt model, shift or
baseline that is not listed here fails there.

The TOML spec folders are found here too (`spec_dirs`, `spec_files`, with the folders added at
run time by `add_task_dir`, the CLI's ``--tasks-dir``): the task registry uses the same ones.
"""

from __future__ import annotations

import functools
import os
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from testbed.core.errors import ConfigError, SpecError

# the built-in names of each kind, as their registries list them (in their order) in a process
# without plug-ins
BUILTIN: dict[str, tuple[str, ...]] = {
    "method": ("ce", "mse", "myopic", "nonmyopic", "routing"),
    "model": ("deep_linear", "lowrank", "matrix", "mlp"),
    "optimizer": ("adam", "adamw", "sgd"),
    "task": ("deep_linear", "lowrank_logits", "lowrank_global"),  # Python tasks; TOML tasks are found on disk
    # in-context (prompt) suites
    "prompt_task": ("icl_linear", "icl_piecewise_linear", "icl_relu2", "icl_sparse_linear", "icl_tree"),
    "prompt_model": ("transformer", "linear_attention"),
    "shift": ("none", "scale_0.33", "scale_0.5", "scale_2", "scale_3", "skewed", "orthogonal", "half_space",
              "noisy_y", "more_points"),
    "baseline": ("least_squares", "ridge", "knn", "averaging", "one_step_gd", "lasso", "two_layer_net",
                 "greedy_tree"),
}

# where each kind's registry lives, and the function (or collection) that lists it
REGISTRIES: dict[str, tuple[str, str]] = {
    "method": ("testbed.methods", "list_methods"),
    "model": ("testbed.models", "list_models"),
    "optimizer": ("testbed.training.optim", "list_optimizers"),
    "task": ("testbed.tasks", "list_tasks"),  # the package: its Python tasks are registered by then
    "prompt_task": ("testbed.tasks.prompts", "list_prompt_tasks"),
    "prompt_model": ("testbed.models.sequence", "list_prompt_models"),
    "shift": ("testbed.tasks.prompts", "SHIFTS"),
    "baseline": ("testbed.tasks.prompt_baselines", "BASELINES"),
}


@functools.cache
def builtin_specs() -> Path:
    """The folder of the built-in TOML tasks, the package ``testbed.tasks.specs``: inside the
    package in a wheel, the repository's ``tasks/`` in a checkout (``pyproject.toml`` maps it).
    Found by path, since asking importlib for it would import ``testbed.tasks`` (and JAX)."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "tasks" / "specs", package.parent / "tasks"):
        if folder.is_dir() and any(folder.glob("*.toml")):
            return folder
    import importlib.resources  # an unusual install: ask importlib (this imports testbed.tasks)

    return Path(str(importlib.resources.files("testbed.tasks.specs")))


def names(kind: str) -> list[str]:
    """Every name of ``kind`` (a key of `REGISTRIES`) that can be named now, in the registry's
    order: the registry's own list when its module is imported, else the built-in ones (and,
    for tasks, the TOML specs of `spec_dirs`). Imports nothing that imports JAX."""
    module_name, lister = REGISTRIES[kind]
    module = sys.modules.get(module_name)
    importing = getattr(getattr(module, "__spec__", None), "_initializing", False)  # half-registered
    if module is not None and not importing and hasattr(module, lister):
        listed = getattr(module, lister)
        return list(listed() if callable(listed) else listed)
    if kind == "task":
        return sorted([*BUILTIN["task"], *spec_files(spec_dirs(EXTRA_DIRS), BUILTIN["task"])])
    return list(BUILTIN[kind])


EXTRA_DIRS: list[Path] = []  # spec folders added at run time (`add_task_dir`, the CLI's --tasks-dir)


def add_task_dir(path: str | Path) -> None:
    """Also look for TOML task specs in this folder."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"--tasks-dir: {str(path)!r} is not a folder")
    if path not in EXTRA_DIRS:
        EXTRA_DIRS.append(path)


def spec_dirs(extra: Sequence[Path] = ()) -> list[Path]:
    """Folders searched for TOML task specs: built-in, then ``TESTBED_TASKS``, then ``extra``."""
    dirs = [builtin_specs()]
    for part in os.environ.get("TESTBED_TASKS", "").split(os.pathsep):
        if part.strip():
            p = Path(part.strip())
            if not p.is_dir():
                raise ConfigError(f"TESTBED_TASKS: {part!r} is not a folder")
            dirs.append(p)
    return dirs + [d for d in extra if d not in dirs]


def spec_files(dirs: Iterable[Path], python: Iterable[str] = ()) -> dict[str, Path]:
    """Task name -> spec file, over ``dirs``. Refuses a name defined twice, or by a spec and
    a Python task (``python``: their names)."""
    python = set(python)
    found: dict[str, Path] = {}
    for d in dirs:
        for path in sorted(d.glob("*.toml")):
            name = spec_name(path, path.stat().st_mtime_ns)
            if not isinstance(name, str):
                raise SpecError("expected str", file=str(path), field="name", text=str(name))
            if name in found or name in python:
                other = str(found[name]) if name in found else "a Python task"
                raise SpecError(f"task name {name!r} is already defined by {other}", file=str(path), field="name")
            found[name] = path
    return found


@functools.lru_cache(maxsize=1024)
def spec_name(path: Path, mtime_ns: int):
    """A spec file's task name, parsed once per version of the file (the mtime is the key)."""
    return read_spec(path).get("name", path.stem)


def read_spec(path: str | Path) -> dict[str, Any]:
    """Parse a spec file's TOML (no compilation). Raises SpecError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read task spec: {e.strerror}", file=str(path)) from None
    except UnicodeDecodeError:
        raise SpecError("task spec is not UTF-8 text", file=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"not valid TOML: {e}", file=str(path)) from None
