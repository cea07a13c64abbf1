"""Shared fixtures. Strict rank promotion catches silent broadcasting (as in equinox)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
# Reports draw their figures here, in the test's process: pytest-xdist already uses the cores
# (tests/figures/test_report_html.py checks drawing in several processes explicitly).
os.environ.setdefault("TESTBED_FIGURE_WORKERS", "1")
# No persistent compile cache in the tests: on clean clones, three runs of this suite lost a
# pytest-xdist worker inside JAX's cache (a segfault serializing a freshly compiled program
# in `put_executable_and_time`, twice an abort deserializing one in `get_executable_and_time`),
# with per-worker folders too. CI starts from an empty cache, so it lost nothing by it; the
# cache itself is tested in tests/test_compile_cache.py, in processes of its own.
os.environ.setdefault("TESTBED_COMPILE_CACHE", "off")
# Tests check numbers, not speed: skip LLVM's expensive optimizations, which
# cuts XLA:CPU compile time about 3x (compiles dominate this suite's time).
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()

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
