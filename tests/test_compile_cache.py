"""The persistent compilation cache: a second process loads the programs the first compiled.

Asserted on JAX's own cache-hit events, not on the setting: on some CPUs JAX silently
rejects cached CPU executables, and then the cache only costs disk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, jax
hits = []
jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
import testbed
from testbed.core.platform import configure_compile_cache
r = testbed.train("sine_line", "mse", steps=20, seeds=2, quiet=True, evals=3, eval_size=64, probe_points=16)
print(json.dumps({"hits": len(hits), "dir": str(configure_compile_cache()), "loss": float(r.batch_loss[0, -1])}))
"""


def _run(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env={**os.environ, **env},
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_hits_the_cache_and_gets_the_same_numbers(tmp_path):
    env = {"TESTBED_COMPILE_CACHE": str(tmp_path / "cache")}
    first, second = _run(env), _run(env)
    assert first["dir"] == second["dir"] == str(tmp_path / "cache")
    assert first["hits"] == 0 and second["hits"] > 0
    assert any((tmp_path / "cache").iterdir())
    assert first["loss"] == second["loss"]  # a loaded program computes the same numbers


def test_cache_off():
    off = _run({"TESTBED_COMPILE_CACHE": "off"})
    assert off["dir"] == "None" and off["hits"] == 0


def test_cache_entries_appear_whole_to_a_concurrent_reader(tmp_path):
    """JAX writes entries in place; testbed's writer renames a finished temp file into place, so
    a reader polling the entry sees nothing or all of it, never a part (a part crashed a test worker)."""
    import threading

    from jax._src import lru_cache

    from testbed.core.platform import atomic_cache_writes

    assert atomic_cache_writes()
    cache = lru_cache.LRUCache(str(tmp_path), max_size=-1)
    value = bytes(range(256)) * (200 * 2**20 // 256)  # 200 MiB: long enough to catch a write in progress
    path = tmp_path / f"k{lru_cache._CACHE_SUFFIX}"
    seen, done = set(), threading.Event()

    def poll():
        while not done.is_set():
            if path.exists():
                seen.add(len(path.read_bytes()))

    t = threading.Thread(target=poll)
    t.start()
    cache.put("k", value)
    done.set()
    t.join()
    assert cache.get("k") == value
    assert seen <= {len(value)}, f"a reader saw a partial entry: {sorted(seen)[:3]}"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left
