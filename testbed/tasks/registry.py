"""The task registry: Python factories plus TOML spec folders.

A registry is a dict, a `register_task` that refuses duplicates, and a `make_task`
that validates what it returns (the gymnax way). TOML specs are found in the
built-in ``tasks/`` folder (shipped inside the wheel as ``testbed.tasks.specs``), in every
folder of the ``TESTBED_TASKS`` path list, and in folders added with
`add_task_dir` (the CLI's ``--tasks-dir``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from testbed.core import catalog
from testbed.core.catalog import add_task_dir, read_spec  # noqa: F401  (add_task_dir: re-exported)
from testbed.core.errors import ConfigError, TestbedError, UnknownNameError, call_factory
from testbed.tasks.spec import load_task
from testbed.tasks.task import Task

_FACTORIES: dict[str, Callable[..., Task]] = {}
_EXTRA_DIRS: list[Path] = catalog.EXTRA_DIRS  # the folders `add_task_dir` added (kept in the catalog)
_CACHE: dict[tuple, Task] = {}


def register_task(name: str | Callable[..., Task] | None = None):
    """Register a Python task factory ``(**overrides) -> Task`` under a name.

    Use as ``@register_task`` (the function's name) or ``@register_task("name")``.
    Refuses a name that is already registered (Python or TOML).
    """
    def deco(fn: Callable[..., Task], task_name: str | None = None) -> Callable[..., Task]:
        task_name = task_name or fn.__name__
        if task_name in _FACTORIES:
            raise ConfigError(f"task {task_name!r} is already registered")
        spec = _spec_paths().get(task_name)
        if spec is not None:
            raise ConfigError(f"task {task_name!r} is already defined by {spec}; choose another name")
        _FACTORIES[task_name] = fn
        return fn

    if callable(name):
        return deco(name)
    return lambda fn: deco(fn, name)


def task_dirs() -> list[Path]:
    """Folders searched for specs: built-in, then TESTBED_TASKS, then added folders."""
    return catalog.spec_dirs(_EXTRA_DIRS)


def spec_files() -> dict[str, Path]:
    """Task name -> spec file, over every spec folder. Refuses a name defined twice."""
    return catalog.spec_files(task_dirs(), _FACTORIES)


def _spec_paths() -> dict[str, Path]:
    """Task name -> spec file over the folders that can be read now, without judging them
    (a bad folder or spec is reported by `spec_files`, not while registering)."""
    out: dict[str, Path] = {}
    try:
        dirs = task_dirs()
    except TestbedError:
        return out
    for d in dirs:
        for path in sorted(d.glob("*.toml")):
            try:
                name = catalog.spec_name(path, path.stat().st_mtime_ns)
            except (TestbedError, OSError):
                continue
            if isinstance(name, str):
                out.setdefault(name, path)
    return out


def list_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    files = spec_files()
    return sorted([*_FACTORIES, *files])


def make_task(name: str, **overrides) -> Task:
    """Build a registered task by name.

    The same name and overrides return the same Task object, so compiled programs
    that close over it are reused.

    Args:
        name: a name from `list_tasks`.
        **overrides: TOML tasks: new values for ``[params]``; Python tasks: factory keywords.

    Raises:
        UnknownNameError: the name is not registered.
        SpecError / ConfigError: the spec or an override is invalid.
    """
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}  # hashable
    if name in _FACTORIES:
        key = (name, None, tuple(sorted(overrides.items())))
        if key not in _CACHE:  # setdefault: two threads building at once end up with one Task
            _CACHE.setdefault(key, call_factory("task", name, _FACTORIES[name], overrides, Task))
        return _CACHE[key]
    files = spec_files()
    if name not in files:
        raise UnknownNameError("task", name, list_tasks())
    path = files[name]
    key = (name, str(path), path.stat().st_mtime_ns, tuple(sorted(overrides.items())))
    if key not in _CACHE:
        _CACHE.setdefault(key, load_task(path, **overrides))
    return _CACHE[key]


def durable_name(task: Task) -> str | None:
    """A name for a task built by `make_task` that outlives this process
    (`testbed.core.durable`): its name and overrides, the code that builds it (the package,
    the plug-ins and, for a TOML task, its spec file), the environment and the device that
    computes its values. None for a Task built by hand (not by `make_task`: nothing names its
    functions), when any registered task factory is not in a file the code fingerprint covers
    (defined at a prompt or in a notebook; a factory may build on another task), when its spec
    file or a plug-in changed since this process read it (the task in memory is the old one),
    and when a file cannot be read."""
    import jax

    from testbed.core import durable

    key = next((k for k, v in list(_CACHE.items()) if v is task), None)
    if key is None:
        return None
    try:
        spec = () if key[1] is None else (key[1],)
        if spec and Path(key[1]).stat().st_mtime_ns != key[2]:
            return None
        covered = durable.covered_fingerprint(list(_FACTORIES.values()), spec)
        if covered is None or not durable.unchanged(covered[1]):
            return None
        code = covered[0]
        device = jax.devices()[0]
    except (OSError, ValueError, RuntimeError):
        return None
    text = (f"{key[0]}|{key[1]}|{key[-1]!r}|{code}|{durable.environment()}|{device.platform}|"
            f"{getattr(device, 'device_kind', '')}")
    return hashlib.sha256(text.encode()).hexdigest()


def task_values(task: Task, what: str, compute: Callable[[], dict[str, np.ndarray]],
                valid: Callable[[dict[str, np.ndarray]], bool] | None = None) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, which depend on ``task`` and ``what`` (the other arguments, as
    text) alone, kept on disk under the task's `durable_name` (`testbed.core.durable.kept`):
    a warm run reads a task's evaluation sets, target range and candidate behaviours instead
    of tracing, lowering and loading the programs that compute them (~1 s of CPU a task).
    Computed every time for a task without a durable name or with the compile cache off;
    ``valid``: a check of values read (`testbed.core.durable.kept`)."""
    from testbed.core.durable import kept

    name = durable_name(task)
    return kept(None if name is None else f"{name}|{what}", compute, valid)


def describe(name: str) -> dict[str, object]:
    """What `testbed tasks` lists of a task: dims, target, pieces, splits, description.

    A TOML task is described from its spec text without building it (no program is
    compiled); a Python task is built.
    """
    files = spec_files()
    if name in files:
        spec = read_spec(files[name])
        dom = spec.get("domain") or {}
        low = dom.get("low") if isinstance(dom.get("low"), list) else []
        dims = f"{len(low)}" if dom.get("kind", "box") == "box" else f"{len(low)} int ({dom.get('encoding', 'scalar')})"
        target = str(spec.get("target", "scalar"))
        if spec.get("classes") is not None:
            target = f"{target}[{spec['classes']}]"
        splits = spec.get("splits") or {}
        return {"task": name, "dims": dims, "target": target, "pieces": len(spec.get("pieces") or []),
                "splits": ", ".join(splits), "description": str(spec.get("description", ""))}
    t = make_task(name)
    dims = f"{t.dim}" if t.domain.kind == "box" else f"{t.dim} int ({t.domain.encoding})"
    return {"task": name, "dims": dims, "target": t.target if t.target == "scalar" else f"{t.target}[{t.out_dim}]",
            "pieces": len(t.pieces), "splits": ", ".join(t.splits), "description": t.description}
