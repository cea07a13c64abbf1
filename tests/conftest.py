"""Shared fixtures. Strict rank promotion catches silent broadcasting (as in equinox)."""

import os
import tempfile

os.environ.setdefault("MPLBACKEND", "Agg")
# Reports draw their figures here, in the test's process: pytest-xdist already uses the cores
# (tests/figures/test_report_html.py checks drawing in several processes explicitly).
os.environ.setdefault("TESTBED_FIGURE_WORKERS", "1")
# Figures are drawn, not copied from an earlier run's (tests/figures/test_figure_cache.py
# turns the figure cache on where it tests it).
os.environ["TESTBED_FIGURE_CACHE"] = "off"
# Compiled programs of the tests go to a folder of their own (not the user's cache), one per
# xdist worker (the controller imports this file first and its environment reaches the
# workers, so a worker replaces the controller's default), kept between runs on this machine;
# JAX's cache key holds the XLA flags below. Programs released to spare memory maps (see
# `_release_compiled_programs`) load from it again instead of compiling.
_SHARED = os.path.join(tempfile.gettempdir(), "testbed-tests-jax-cache")
if os.environ.get("TESTBED_COMPILE_CACHE", _SHARED) == _SHARED:
    _worker = os.environ.get("PYTEST_XDIST_WORKER")
    os.environ["TESTBED_COMPILE_CACHE"] = f"{_SHARED}-{_worker}" if _worker else _SHARED
# Tests check numbers, not speed: most of them compile programs that run for milliseconds, so
# XLA compiles without its optimizations (JAX's `jax_disable_most_optimizations`: backend level 0,
# no expensive LLVM passes; the environment variable reaches the CLI tests' processes too) and
# with XLA:CPU's older fusion emitters, which compile ~25% faster (a cold `pytest -n 2`: 6 min 1 s
# against 7 min 17 s and 7 min 43 s, CPU 664 s against 802 s and 850 s, 2026-12-02). The numbers
# move in their last bits, so only tests do this, never the product (jax is pinned below 0.11,
# where XLA knows the flag). A test whose programs run long (thousands of steps) is marked
# `optimized`: its programs compile with XLA's optimizations (see `_optimized_when_marked`).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false").strip()

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


@pytest.fixture(autouse=True)
def _optimized_when_marked(request):
    """A test marked ``optimized`` compiles with XLA's optimizations: its programs run long
    enough that the faster code pays for the slower compile (the reduced reproductions, the
    in-context learners trained for thousands of steps: 2-4x faster run, measured 2026-12-07).
    Stored programs and kept values follow the setting (`testbed.core.durable.environment`);
    a program this process compiled already, either way, is reused as it is (JAX's in-memory
    caches do not key on it), so a test compares numbers only within its own setting."""
    if request.node.get_closest_marker("optimized") is None:
        yield
        return
    before = jax.config.values["jax_disable_most_optimizations"]
    jax.config.update("jax_disable_most_optimizations", False)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Free every compiled program after each test module. XLA:CPU maps memory for each
    executable; a worker that kept all of this suite's programs reached the kernel's limit on
    memory maps (vm.max_map_count, 65,530) and crashed inside a compile."""
    yield
    from testbed.training.engine import release_programs

    release_programs()


@pytest.fixture(autouse=True)
def _release_when_crowded():
    """Within a module too, once a third of the memory maps are taken (test_engine alone took 46,000)."""
    yield
    from testbed.training.engine import release_if_crowded

    release_if_crowded(1 / 3)
