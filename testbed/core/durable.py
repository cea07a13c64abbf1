"""Durable names: what a result computed by code depends on, as a hash that outlives the
process.

A compiled program (`testbed.training.executables`) or a drawn figure
(`testbed.report.figure_cache`) is reused
by a later run only under a name that changes with everything that made it: the code
(`code_fingerprint`: the testbed package, every module loaded from outside the installed
packages, given files such as a task's spec) and the environment (`environment`: the
machine, package versions, XLA's flags and JAX's numerics settings). Code that no file
hash covers (a function defined at a prompt or in a notebook, `defined_in_code`) gets no
name, and its results are computed every time.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # the testbed package folder


@functools.lru_cache(maxsize=1)
def _package_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*")):
        if p.suffix in (".py", ".toml", ".json") and p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(PACKAGE)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _installed() -> tuple[str, ...]:
    """Folders of installed code (the standard library, site-packages) and of the testbed
    package, as path prefixes: their modules are not `plugin_files`."""
    import site
    import sysconfig

    roots = {sys.prefix, sys.base_prefix, *site.getsitepackages(), site.getusersitepackages(),
             *(sysconfig.get_paths().get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib"))}
    out = {str(PACKAGE)}
    for r in filter(None, roots):
        out |= {str(Path(r)), str(Path(r).resolve())}
    return tuple(sorted(r.rstrip("/") + "/" for r in out))


def plugin_files() -> list[Path]:
    """The source files of every module loaded from outside the installed packages and the
    testbed package: the plug-ins, any helper they import (wherever it lives), the script
    that runs. Raises ValueError for a loaded plug-in without a source file."""
    from testbed.core.plugins import _LOADED

    for name, module in _LOADED.items():
        if not getattr(module, "__file__", None):
            raise ValueError(f"plug-in {name!r} has no source file")
    skip = _installed()
    out = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or not path.endswith(".py") or path.startswith(skip):
            continue
        p = Path(path).resolve()
        if not str(p).startswith(skip) and p.is_file():
            out.add(p)
    return sorted(out)


def defined_in_code(obj, files: set[Path] | None = None) -> bool:
    """Whether function ``obj`` (a factory, a figure function) is defined in a file
    `code_fingerprint` covers (``files``: `plugin_files`, when the caller has them); not one
    defined at a prompt, in a notebook or in an installed package other than testbed."""
    import inspect

    try:
        filename = inspect.getsourcefile(obj)
    except TypeError:  # a builtin: no file
        return False
    if not filename:
        return False
    try:
        path = Path(filename).resolve()
    except (OSError, ValueError):
        return False
    return path.is_file() and (PACKAGE in path.parents or path in (files if files is not None else set(plugin_files())))


def code_fingerprint(extra: tuple[str, ...] = (), files: list[Path] | None = None) -> str:
    """A hash of the testbed package's files, `plugin_files` (``files``, when the caller has
    them) and ``extra`` files (e.g. a task's spec): any edit to them names new programs."""
    h = hashlib.sha256(_package_digest().encode())
    for p in [*(plugin_files() if files is None else files), *map(Path, extra)]:
        h.update(str(p).encode() + b"\0" + Path(p).read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    from testbed.core.platform import cache_key, versions

    return f"{cache_key()}|{sorted(versions().items())!r}|{sys.version}"


def environment() -> str:
    """What else decides a compiled program: package versions, Python, the CPU and XLA's flags,
    JAX's numerics settings and testbed's lowering choices."""
    import jax

    from testbed.core.platform import unrolled_threefry

    flags = {name: str(getattr(jax.config, name, None)) for name in (
        "jax_enable_x64", "jax_default_matmul_precision", "jax_threefry_partitionable", "jax_default_prng_impl")}
    parts = [_machine(), os.environ.get("XLA_FLAGS", ""), repr(sorted(flags.items())),
             f"threefry_unrolled={unrolled_threefry()}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()

