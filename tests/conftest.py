"""Shared fixtures. Strict rank promotion catches silent broadcasting (as in equinox)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import pytest  # noqa: E402

import testbed  # noqa: E402,F401  (configures host devices before JAX starts)

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
    return jax.random.key(0)


def write_spec(tmp_path, text: str, name: str = "spec.toml"):
    """Write a TOML spec file and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return path
