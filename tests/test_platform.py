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
