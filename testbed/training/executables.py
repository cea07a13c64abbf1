"""Compiled training programs kept on disk under what defines them, so that a warm run loads
them without tracing or lowering.

JAX's persistent cache (`testbed.core.platform.configure_compile_cache`) finds a program by
its lowered HLO, so a warm run still traces and lowers every program before the cache can
answer: 0.5-1.5 s a program on 2 cores, most of it holding the GIL while other cells train.
A caller that can name a program durably (a suite's cell: `testbed.suites.runner.durable_key`)
passes that name as ``program_key`` to `testbed.training.engine.train`; the engine then keeps
the serialized executables (`jax.experimental.serialize_executable`) in
``<compile cache>/executables/`` under a hash of that name, the number of runs, the devices,
the environment (`environment`) and the code (`testbed.core.durable.code_fingerprint`: the package and every
module loaded from outside the installed packages), and loads them from there
next time. A file whose inputs do not match the call's shapes is ignored and replaced.

A program JAX's cache answered (its HLO unchanged under a new name, e.g. after an edit
elsewhere in the code) is stored with the bytes JAX read (`compile_keeping`).

``TESTBED_COMPILE_CACHE=off`` (the CLI's ``--no-compile-cache``) turns this off with JAX's
cache. Nothing is ever evicted: remove the folder to reclaim its space.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import threading
from pathlib import Path

from testbed.core.durable import environment

STATS = {"loaded": 0, "saved": 0}  # programs loaded from and written to disk, for tests and benchmarks


_HITS = threading.local()  # per thread: programs JAX's persistent cache answered, the last one's bytes


def _count_hit(event: str, **_) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        _HITS.n = getattr(_HITS, "n", 0) + 1


@functools.lru_cache(maxsize=1)
def _listening() -> bool:
    """Count JAX's cache hits per thread, and keep the bytes of the last executable it read
    (whether the hook on JAX's cache reader is in place)."""
    from jax._src import compilation_cache, monitoring

    monitoring.register_event_listener(_count_hit)
    extract = getattr(compilation_cache, "extract_executable_and_time", None)
    if extract is None:
        return False

    def keeping(executable_and_time):
        serialized, compile_time = extract(executable_and_time)
        _HITS.raw = serialized
        return serialized, compile_time

    compilation_cache.extract_executable_and_time = keeping
    return True


def cache_hits() -> int:
    """Programs JAX's persistent cache has answered on this thread so far."""
    _listening()
    return getattr(_HITS, "n", 0)


def compile_keeping(lowered) -> tuple[object, bytes | None | bool]:
    """``lowered.compile()``, and what `save` needs to store it: None when it was compiled here;
    the serialized executable JAX's cache read when the cache answered (an executable loaded
    from JAX's cache serializes without its machine code, XLA:CPU: another process then fails
    with "Function ... not found", so the bytes JAX read are stored instead); False when the
    cache answered and those bytes could not be kept (it is then not stored)."""
    hooked = _listening()
    before, _HITS.raw = cache_hits(), None
    compiled = lowered.compile()
    if cache_hits() == before:
        return compiled, None
    raw = getattr(_HITS, "raw", None)
    return compiled, raw if hooked and raw is not None else False


def _serialize(compiled, raw: bytes | None) -> tuple:
    """`jax.experimental.serialize_executable.serialize`, with ``raw`` (`compile_keeping`) as the
    executable's bytes when given (the same pickle, its executable's bytes replaced)."""
    import io

    import jax
    from jax._src.lib import xla_client as xc
    from jax.experimental import serialize_executable as se

    if raw is None:
        return se.serialize(compiled)

    class Pickler(se._JaxPjrtPickler):
        def persistent_id(self, obj):
            return ("exec", raw) if isinstance(obj, xc.LoadedExecutable) else super().persistent_id(obj)

    unloaded = getattr(compiled._executable, "_unloaded_executable", None)
    if unloaded is None or compiled._params.const_args:
        raise ValueError("not serializable")
    args_info, in_tree = jax.tree_util.tree_flatten(compiled.args_info)
    with io.BytesIO() as f:
        Pickler(f).dump((unloaded, args_info, compiled._no_kwargs))
        return f.getvalue(), in_tree, compiled.out_tree


def folder() -> Path | None:
    """Where executables are kept (None: the compile cache is off)."""
    from testbed.core.platform import configure_compile_cache

    root = configure_compile_cache()
    return None if root is None else root / "executables"


def _path(key: str, n_runs: int, devices) -> Path | None:
    root = folder()
    if root is None:
        return None
    where = repr([(d.platform, getattr(d, "device_kind", ""), d.id) for d in devices])
    name = hashlib.sha256(f"{key}|{n_runs}|{where}|{environment()}".encode()).hexdigest()[:32]
    return root / f"{name}.pkl"


def signature(*args) -> str:
    """The shapes and dtypes of a program's inputs (checked when a file is loaded)."""
    import jax

    return repr(jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), args))


def load(key: str, n_runs: int, devices, inputs: str) -> dict | None:
    """The stored programs named ``key`` (``{"init", "chunk", "trace_names"}``), or None when
    there are none, or they were stored for other input shapes (``inputs``: `signature`) or
    cannot be read (the caller compiles and stores them again)."""
    from jax.experimental.serialize_executable import deserialize_and_load

    path = _path(key, n_runs, devices)
    if path is None or not path.is_file():
        return None
    try:
        blob = pickle.loads(path.read_bytes())
        if blob.get("inputs") != inputs:
            return None
        out = {name: deserialize_and_load(*blob[name]) for name in ("init", "chunk")}
    except Exception:  # noqa: BLE001  (a damaged or foreign file: compile instead)
        return None
    out["trace_names"] = tuple(blob["trace_names"])
    STATS["loaded"] += 1
    return out


def save(key: str, n_runs: int, devices, inputs: str, init, chunk, trace_names) -> bool:
    """Store compiled ``init`` and ``chunk`` under ``key`` (`atomic_write_bytes`); each a pair
    (compiled, what `compile_keeping` returned). Nothing is stored when either cannot be kept.
    Returns whether they were written; a program that cannot be serialized or a folder that
    cannot be written is skipped (the run goes on)."""
    from testbed.core.files import atomic_write_bytes

    path = _path(key, n_runs, devices)
    if path is None or init[1] is False or chunk[1] is False:
        return False
    try:
        blob = {"init": _serialize(*init), "chunk": _serialize(*chunk), "trace_names": list(trace_names),
                "inputs": inputs}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, pickle.dumps(blob, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:  # noqa: BLE001
        return False
    STATS["saved"] += 1
    return True
