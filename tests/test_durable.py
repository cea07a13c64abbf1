"""Values a task's programs compute (evaluation sets, the CE target range, attribution's
candidates) kept on disk under the task's durable name: read back bitwise, without running
their programs; a name that changes with the task's spec and overrides; none for a task
built by hand; a damaged file computed again."""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
import pytest
from test_registry import RAMP  # noqa: E402  (the tests folder is on the path under pytest)

import testbed
from testbed.analyses.attribution import measure
from testbed.core import durable
from testbed.methods import ce
from testbed.tasks.registry import durable_name, make_task, task_values
from testbed.training import engine

pytestmark = pytest.mark.skipif(durable.values_folder() is None, reason="the compile cache is off")


@pytest.fixture
def values(tmp_path, monkeypatch):
    """An empty values folder, and the in-process caches forgotten (as in a new process)."""
    monkeypatch.setattr(durable, "values_folder", lambda: tmp_path / "values")
    for cached in (engine._eval_sets, ce.target_range, measure._kept_candidates):
        cached.cache_clear()
    yield tmp_path / "values"
    for cached in (engine._eval_sets, ce.target_range, measure._kept_candidates):
        cached.cache_clear()


def _everything(task: testbed.Task) -> dict[str, np.ndarray]:
    data, split = engine._eval_sets(task, 64, 16)
    out = {f"eval{i}": np.asarray(a) for i, a in enumerate(engine.jax.tree.leaves(data))}
    out["split"] = split
    out["range"] = np.asarray(ce.target_range(task))
    out.update({f"cand:{k}": v for k, v in measure.candidate_values(task, data.probe.x, 256).items()})
    return out


@pytest.mark.parametrize("name", ["two_slopes", "parity", "vector_rotate_reflect"])
def test_a_task_s_values_are_read_back_bitwise_without_running_their_programs(name, values, monkeypatch):
    task = make_task(name)
    saved = durable.STATS["saved"]
    first = _everything(task)
    assert durable.STATS["saved"] - saved == 3 and len(list(values.glob("*.npz"))) == 3
    for cached in (engine._eval_sets, ce.target_range, measure._kept_candidates):
        cached.cache_clear()

    def must_not_run(*_a, **_k):
        raise AssertionError("computed again instead of read")

    monkeypatch.setattr(engine, "_sample_eval", must_not_run)
    monkeypatch.setattr(measure, "_candidate_values", must_not_run)
    monkeypatch.setattr(testbed.Task, "sample", must_not_run)  # the target range's draw
    loaded = durable.STATS["loaded"]
    second = _everything(task)
    assert durable.STATS["loaded"] - loaded == 3
    assert list(first) == list(second)  # the candidates in the same order (the target first)
    for k in first:
        assert first[k].dtype == second[k].dtype and first[k].tobytes() == second[k].tobytes(), k
        assert k == "range" or not second[k].flags.writeable, k  # shared: read-only


def test_the_name_follows_the_task_its_overrides_and_its_spec_file(tmp_path, monkeypatch):
    spec = tmp_path / "specs"
    spec.mkdir()
    text = RAMP.format(name="kept_ramp", slope=2.0)
    (spec / "kept_ramp.toml").write_text(text)
    monkeypatch.setenv("TESTBED_TASKS", str(spec))
    a = durable_name(make_task("kept_ramp"))
    assert a is not None and a == durable_name(make_task("kept_ramp"))
    assert durable_name(make_task("kept_ramp", slope=3.0)) not in (None, a)  # other overrides
    assert durable_name(make_task("two_slopes")) not in (None, a)
    old = make_task("kept_ramp")
    (spec / "kept_ramp.toml").write_text(text + "\n# an edit\n")  # the spec changed: another name
    assert durable_name(make_task("kept_ramp")) not in (None, a)
    assert durable_name(old) is None  # the task built from the spec as it was: its file changed since


def test_other_arguments_are_other_values(values):
    task = make_task("two_slopes")
    engine._eval_sets(task, 32, 8)
    engine._eval_sets(task, 64, 8)
    engine._eval_sets(task, 32, 16)
    x = np.asarray(engine._eval_sets(task, 32, 8)[0].probe.x)
    a, b = measure.candidate_values(task, x, 128), measure.candidate_values(task, x, 256)
    assert len(list(values.glob("*.npz"))) == 5
    assert not np.array_equal(a["linear_fit"], b["linear_fit"])  # fitted to another sample


def test_a_plugin_edited_after_it_was_read_or_a_factory_in_no_file_names_nothing(tmp_path, monkeypatch):
    from testbed.tasks.registry import _FACTORIES

    assert durable_name(make_task("sine_line")) is not None
    plug = tmp_path / "edited_plugin.py"
    plug.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import edited_plugin  # noqa: F401  (loaded: its file is part of every name now)

        assert durable_name(make_task("sine_line")) is not None
        plug.write_text("X = 2\n")  # edited, not reloaded: the code in memory is not the file's
        os.utime(plug, ns=(plug.stat().st_atime_ns, plug.stat().st_mtime_ns + 10**9))
        assert durable_name(make_task("sine_line")) is None
    finally:
        sys.modules.pop("edited_plugin", None)  # unloaded for good: the other tests' names are not affected
    assert durable_name(make_task("sine_line")) is not None
    monkeypatch.setitem(_FACTORIES, "kept_sourceless", print)  # a factory no file holds (as in a notebook)
    assert durable_name(make_task("sine_line")) is None


def test_any_names_round_trip_and_failures_only_cost_a_computation(tmp_path, monkeypatch):
    arrays = {"file": np.arange(3), "names": np.ones((2, 2), np.float32), "a0": np.array(["x", "yz"]),
              "piece:left": np.array(1.5)}
    monkeypatch.setattr(durable, "values_folder", lambda: tmp_path / "values")
    durable.kept("some name", lambda: arrays)
    again = durable.kept("some name", lambda: pytest.fail("computed again"))
    assert list(again) == list(arrays)
    for k, v in arrays.items():
        assert again[k].dtype == v.dtype and np.array_equal(again[k], v)
    calls = []
    out = durable.kept("some name", lambda: calls.append(1) or arrays, valid=lambda got: False)
    assert calls == [1] and np.array_equal(out["file"], arrays["file"])  # not valid: computed again
    (tmp_path / "blocked").write_text("a file, not a folder")
    monkeypatch.setattr(durable, "values_folder", lambda: tmp_path / "blocked" / "values")
    saved = durable.STATS["saved"]
    out = durable.kept("other name", lambda: arrays)  # cannot be written: still returned
    assert durable.STATS["saved"] == saved and np.array_equal(out["a0"], arrays["a0"])


def test_a_hand_built_task_gets_no_name_and_its_values_are_computed_every_time(values):
    by_hand = dataclasses.replace(make_task("two_slopes"), name="by_hand")  # not made by make_task
    assert durable_name(by_hand) is None
    calls = []
    for _ in range(2):
        out = task_values(by_hand, "what", lambda: calls.append(1) or {"a": np.arange(3)})
        np.testing.assert_array_equal(out["a"], np.arange(3))
    assert len(calls) == 2 and not values.exists()


def test_a_damaged_file_is_computed_again_and_replaced(values):
    task = make_task("step")
    first = dict(engine._eval_sets(task, 32, 8)[0].batch._asdict())
    (path,) = values.glob("*.npz")
    path.write_bytes(b"not an npz")
    engine._eval_sets.cache_clear()
    again = dict(engine._eval_sets(task, 32, 8)[0].batch._asdict())
    assert path.read_bytes()[:2] == b"PK"  # written again (a zip)
    for k in first:
        np.testing.assert_array_equal(first[k], again[k])


@pytest.mark.parametrize("name,value", [("jax_disable_most_optimizations", "flip"), ("jax_enable_x64", "flip"),
                                        ("jax_default_prng_impl", "rbg")])
def test_what_changes_a_compiled_program_changes_the_environment(name, value):
    """Programs and values kept under one setting are not read under another (the tests compile
    without optimizations, their `optimized` ones with; a user may set either)."""
    import jax

    before = jax.config.values[name]
    first = durable.environment()
    jax.config.update(name, (not before) if value == "flip" else value)
    try:
        assert durable.environment() != first
    finally:
        jax.config.update(name, before)
    assert durable.environment() == first
