"""Devices and provenance: one CPU device per core however JAX is first imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _devices(code: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["TESTBED_HOST_DEVICES"] = "3"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


@pytest.mark.parametrize("code,want", [
    ("import testbed, jax; print(len(jax.devices()))", "3"),  # testbed first: the flag, JAX not imported
    ("import jax, testbed; testbed.make_task('step'); print(len(jax.devices()))", "3"),  # imported, not started
    ("import sys, testbed; print('jax' in sys.modules)", "False"),  # `import testbed` does not import JAX
])
def test_host_devices_are_set_before_jax_starts(code, want):
    assert _devices(code) == want


def test_provenance_records_versions_platform_and_devices():
    import jax

    from testbed.core.platform import provenance, versions

    p = provenance()
    assert {"python", "jax", "flax", "optax", "numpy", "pandas"} <= set(p["versions"])
    assert p["versions"] == versions() and p["versions"]["jax"] == jax.__version__
    assert p["devices"] == [f"{d.platform}:{d.id}" for d in jax.devices()] and p["platform"]


def test_threefry_is_unrolled_on_cpu_and_gives_jax_own_bits():
    """The CPU lowering of the random-bit hash is straight-line code (no while loop: it
    compiles several times faster), and its bits are those of JAX's own rolled-loop lowering."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax._src.random import threefry2x32 as tf

    import testbed.tasks  # noqa: F401  (configures JAX)
    from testbed.core.platform import unrolled_threefry

    assert unrolled_threefry()
    hlo = jax.jit(lambda k: jax.random.bits(k, (8, 5))).lower(jax.random.key(3)).compile().as_text()
    assert " while(" not in hlo
    rng = np.random.default_rng(0)
    k1, k2, x1, x2 = (jnp.asarray(rng.integers(0, 2**32, size=(7, 33), dtype=np.uint32)) for _ in range(4))
    ours = jax.jit(lambda *a: tf.threefry2x32_p.bind(*a))(k1, k2, x1, x2)
    jaxs = jax.jit(lambda *a: tf._threefry2x32_lowering(*a, use_rolled_loops=True))(k1, k2, x1, x2)
    assert all(np.array_equal(a, b) for a, b in zip(ours, jaxs, strict=True))
    keys = jnp.stack([jax.random.key(s) for s in range(4)])
    draws = jax.jit(jax.vmap(lambda k: jax.random.normal(k, (16, 3))))(keys)
    assert np.isfinite(np.asarray(draws)).all() and np.unique(np.asarray(draws)).size == draws.size


@pytest.mark.optimized
def test_a_test_marked_optimized_compiles_with_xla_s_optimizations():
    """(tests/conftest.py: the other tests compile without them, unless the environment says otherwise)"""
    import jax

    assert jax.config.values["jax_disable_most_optimizations"] is False
