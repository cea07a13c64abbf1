"""Devices and provenance: one host device per core, and what every result records.

JAX runs a CPU program on one device, which leaves the other cores of this
2-core machine mostly idle for small models. Exposing one host device per core
and sharding the seed axis over them keeps every core busy. The count must be
set before JAX initializes its backends, so `configure_host_devices` runs when
``testbed`` is imported; set ``TESTBED_HOST_DEVICES`` to override (1 disables).
On a GPU machine the setting only affects the (unused) CPU platform.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

_CONFIGURED: dict[str, object] = {}


def configure_host_devices() -> int | None:
    """Ask JAX for one CPU device per core (or ``TESTBED_HOST_DEVICES``).

    Returns the count set, or None when it was too late (JAX already running) or
    the user already chose through ``XLA_FLAGS``.
    """
    if "count" in _CONFIGURED:
        return _CONFIGURED["count"]  # type: ignore[return-value]
    count = None
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        want = os.environ.get("TESTBED_HOST_DEVICES", "").strip()
        n = int(want) if want.isdigit() and int(want) > 0 else (os.cpu_count() or 1)
        if "jax" not in sys.modules:
            # JAX not imported yet: say it through XLA's flag, without paying for the import
            # (``import testbed`` stays fast, and JAX reads the flag whenever it starts)
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       f" --xla_force_host_platform_device_count={n}").strip()
            count = n
        else:
            import jax

            try:
                jax.config.update("jax_num_cpu_devices", n)
                count = n
            except RuntimeError:  # backends already initialized by the caller
                count = None
    _CONFIGURED["count"] = count
    return count


CACHE_ENV = "TESTBED_COMPILE_CACHE"  # a folder for compiled programs, or "off"


def cache_key() -> str:
    """What a compiled CPU program depends on: CPU model and flags, machine, Python and package
    versions. Programs cached under one key never load under another (JAX may silently
    reject an executable built for other CPU features)."""
    import hashlib

    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
        cpu += next((ln.split(":", 1)[1] for ln in info.splitlines() if ln.startswith("flags")), "")
    except OSError:
        pass
    parts = [cpu, platform.machine(), sys.version.split()[0], *(f"{k}={v}" for k, v in sorted(versions().items()))]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def compile_cache_dir() -> Path | None:
    """The persistent compilation cache folder: ``TESTBED_COMPILE_CACHE`` if set (``off``
    disables it), else ``$XDG_CACHE_HOME/testbed/jax/<cache_key>`` (``~/.cache``)."""
    want = os.environ.get(CACHE_ENV, "").strip()
    if want.lower() in ("off", "0", "no", "false", "none"):
        return None
    if want:
        return Path(want).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "testbed" / "jax" / cache_key()


def configure_compile_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache (every program, however fast it compiled),
    so a second run of the same configuration loads its programs instead of compiling them.
    Returns the folder, or None when turned off (``TESTBED_COMPILE_CACHE=off``, the CLI's
    ``--no-compile-cache``) or when the user configured JAX's cache already."""
    if "cache" in _CONFIGURED:
        return _CONFIGURED["cache"]  # type: ignore[return-value]
    import jax

    folder = compile_cache_dir()
    if folder is not None and not jax.config.jax_compilation_cache_dir:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            folder = None
        if folder is not None:
            jax.config.update("jax_compilation_cache_dir", str(folder))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
            atomic_cache_writes()
    else:
        folder = None
    _CONFIGURED["cache"] = folder
    return folder


def unrolled_threefry() -> bool:
    """Lower JAX's threefry random-bit hash on CPU as straight-line code, as JAX does on GPU,
    instead of its CPU default (a 5-iteration while loop).

    The bits are the same (the same integer operations; checked in tests/test_platform.py),
    but XLA:CPU compiles a while loop slowly: a vmapped ``jax.random.bits`` compiles in
    0.06 s against 0.40 s and runs 3x faster, and every training program samples its data
    and initializes its model with it (`benchmarks/perf/threefry_speed.py`). JAX 0.10
    keeps both lowerings in ``jax._src.random.threefry2x32``; returns whether the unrolled
    one is now used on CPU (False, and JAX's own kept, where that module changed)."""
    if "threefry" in _CONFIGURED:
        return bool(_CONFIGURED["threefry"])
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as tf

        rule, prim = tf._threefry2x32_lowering_rule, tf.threefry2x32_p
    except (ImportError, AttributeError):
        _CONFIGURED["threefry"] = False
        return False
    mlir.register_lowering(prim, rule, platform="cpu")
    _CONFIGURED["threefry"] = True
    return True


def atomic_cache_writes() -> bool:
    """Make JAX's persistent cache write each entry atomically (a temp file renamed into place).

    JAX (0.10, without a cache size limit) writes entries in place, so another process or
    thread loading the same program at that moment reads half a file and crashes (seen: two
    test workers sharing a cache folder, "Fatal Python error: Aborted" while loading). A size
    limit would turn on JAX's file lock, but its eviction then scans every entry on every
    write. Returns whether the writer was replaced (False when JAX's cache class changed)."""
    import os
    import threading

    try:
        from jax._src import lru_cache
    except ImportError:
        return False
    cls = getattr(lru_cache, "LRUCache", None)
    suffix = getattr(lru_cache, "_CACHE_SUFFIX", None)
    if cls is None or suffix is None or not hasattr(cls, "put"):
        return False
    if getattr(cls, "_testbed_atomic", False):
        return True
    original = cls.put

    def put(self, key: str, value: bytes) -> None:
        folder = getattr(self, "path", None)
        if getattr(self, "eviction_enabled", True) or folder is None or not key or "://" in str(folder):
            return original(self, key, value)  # a size limit (JAX locks) or a remote folder: JAX's own way
        target = Path(str(folder)) / f"{key}{suffix}"
        if target.exists():
            return None
        tmp = target.with_name(f".{key}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            tmp.write_bytes(value)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return None

    cls.put = put
    cls._testbed_atomic = True
    return True


def versions() -> dict[str, str]:
    """Versions of Python and the packages that decide the numbers."""
    out = {"python": sys.version.split()[0]}
    for pkg in ("testbed", "jax", "jaxlib", "flax", "optax", "numpy", "pandas"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def git_commit() -> str | None:
    """The commit of the checkout testbed runs from, if it is one (else None)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@functools.cache
def _host() -> tuple:
    return platform.platform(), platform.machine(), os.cpu_count(), tuple(versions().items()), git_commit()


@functools.cache
def _devices() -> tuple:
    import jax

    return jax.default_backend(), tuple(str(d) for d in jax.devices())


def provenance(*, devices: bool = True) -> dict[str, object]:
    """Platform, devices, versions and commit: what every result records (read once per process).

    ``devices=False``: without ``backend`` and ``devices``, the two that start JAX (for a
    record of a run that computed nothing, such as a finished suite reopened)."""
    plat, machine, cpus, vers, commit = _host()
    out = {"platform": plat, "machine": machine, "cpu_count": cpus, "versions": dict(vers), "git_commit": commit}
    if devices:
        backend, devs = _devices()
        out |= {"backend": backend, "devices": list(devs)}
    return out
