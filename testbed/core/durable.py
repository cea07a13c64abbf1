"""Durable names: what a result computed by code depends on, as a hash that outlives the
process, and values kept on disk under such a name.

A compiled program (`testbed.training.executables`), a drawn figure
(`testbed.report.figure_cache`) or an array a task's program computes (`kept`, e.g. its
evaluation sets) is reused by a later run only under a name that changes with everything
that made it: the code (`code_fingerprint`: the testbed package, every module loaded from
outside the installed packages, given files such as a task's spec) and the environment
(`environment`: the machine, package versions, XLA's flags and JAX's numerics settings).
Code that no file hash covers (a function defined at a prompt or in a notebook,
`defined_in_code`) gets no name, and its results are computed every time.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

PACKAGE = Path(__file__).resolve().parents[1]  # the testbed package folder
STATS = {"loaded": 0, "saved": 0}  # values read from and written to disk (`kept`), for tests and benchmarks
_LOCK = threading.Lock()


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


def covered_fingerprint(factories, extra: tuple[str, ...] = ()) -> tuple[str, list[Path]] | None:
    """`code_fingerprint` (with ``extra`` files) and the `plugin_files` it read, or None when
    any of ``factories`` (registered task, method or model factories) is in no file it covers
    (`defined_in_code`): what such a factory builds is named by nothing."""
    files = plugin_files()
    covered = set(files)
    if not all(defined_in_code(f, covered) for f in factories):
        return None
    return code_fingerprint(extra, files), files


_SEEN: dict[Path, int] = {}  # file -> its modification time when a durable name first read it


def unchanged(files: list[Path]) -> bool:
    """Whether none of ``files`` (plug-ins: `plugin_files`) changed since this process first
    named anything by them: an edited plug-in's module in memory is still the old code (until
    it is reloaded), so a value computed by it must not be named by the new file's hash."""
    ok = True
    for p in files:
        mtime = Path(p).stat().st_mtime_ns
        with _LOCK:
            ok &= _SEEN.setdefault(Path(p), mtime) == mtime
    return ok


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    from testbed.core.platform import cache_key, versions

    return f"{cache_key()}|{sorted(versions().items())!r}|{sys.version}"


def environment() -> str:
    """What else decides a compiled program: package versions, Python, the CPU and XLA's flags,
    JAX's numerics and optimization settings and testbed's lowering choices."""
    import jax

    from testbed.core.platform import unrolled_threefry

    names = ("jax_enable_x64", "jax_default_matmul_precision", "jax_threefry_partitionable", "jax_default_prng_impl",
             "jax_random_seed_offset", "jax_disable_most_optimizations")
    # (a state is an attribute and may be set in a context; a flag, e.g. the last, is only in values)
    flags = {name: str(getattr(jax.config, name, jax.config.values.get(name))) for name in names}
    parts = [_machine(), os.environ.get("XLA_FLAGS", ""), repr(sorted(flags.items())),
             f"threefry_unrolled={unrolled_threefry()}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def values_folder() -> Path | None:
    """Where `kept` keeps values (None: the compile cache is off, ``TESTBED_COMPILE_CACHE=off``)."""
    from testbed.core.platform import configure_compile_cache

    root = configure_compile_cache()
    return None if root is None else root / "values"


def kept(name: str | None, compute: Callable[[], dict[str, np.ndarray]],
         valid: Callable[[dict[str, np.ndarray]], bool] | None = None) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, kept on disk under ``name`` (a durable name: it must change with
    everything the values depend on) and read from there next time, read-only, in the order
    ``compute`` gave them. ``compute`` runs when ``name`` is None, when the compile cache is
    off, and when the file is missing, cannot be read or fails ``valid`` (it is then written
    again); a folder that cannot be written is skipped (the values computed are returned).
    Values are stored exactly (``.npz``, names kept apart from the arrays' keys), so a value
    read is bitwise the value computed."""
    from testbed.core.files import atomic_write_bytes

    folder = values_folder() if name is not None else None
    path = None if folder is None else folder / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.npz"
    if path is not None:
        try:
            with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as f:
                names = [str(n) for n in f["names"]]
                out = {n: f[f"a{i}"] for i, n in enumerate(names)}
            if valid is None or valid(out):
                with _LOCK:
                    STATS["loaded"] += 1
                return _read_only(out)
        except Exception:  # noqa: BLE001  (no file, a damaged or foreign one: compute instead)
            pass
    out = {k: np.asarray(v) for k, v in compute().items()}
    if path is not None:
        try:
            buf = io.BytesIO()
            np.savez(buf, names=np.array(list(out), dtype=str), **{f"a{i}": v for i, v in enumerate(out.values())})
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
            with _LOCK:
                STATS["saved"] += 1
        except Exception:  # noqa: BLE001  (an unwritable folder, a full disk: the values are still returned)
            pass
    return _read_only(out)


def _read_only(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    for v in arrays.values():
        v.flags.writeable = False
    return arrays
