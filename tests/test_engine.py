"""The engine: determinism, seed-vmapping equivalence, compile reuse, divergence, learning."""

import logging

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import testbed
from testbed.training import engine

TINY = dict(model=testbed.MLP(width=16, depth=1), steps=40, batch_size=32, evals=3, eval_size=64,
            probe_points=16, quiet=True)


def final_train_loss(result):
    f = result.final()
    return f[(f.split == "train") & (f.piece == "all") & (f.metric == "loss")].set_index("run")["value"]


def test_history_schema_and_runs_table():
    r = testbed.train("step", "mse", seeds=2, lr=[1e-3, 1e-2], **TINY)
    h = r.history
    for col in ["seed", "step", "split", "piece", "metric", "value", "task", "method", "model", "optimizer",
                "lr", "weight_decay", "init_scale"]:
        assert col in h.columns
    assert set(h["split"]) == {"train", "boundary", "extrapolate"}
    assert set(h["piece"]) == {"low", "high", "all"}
    assert set(h["metric"]) == {"loss", "mse"}
    assert sorted(h["step"].unique()) == [0, 20, 40]
    assert len(r.runs) == 4 and sorted(r.runs["lr"].unique()) == [1e-3, 1e-2]
    # one row per (run, step, split, piece, metric)
    assert not h.duplicated(["run", "step", "split", "piece", "metric"]).any()
    assert r.predictions.shape[:2] == (4, 3)
    assert r.batch_loss.shape == (4, 40)
    assert r.probe_split.shape == (r.probe.x.shape[0],)
    s = r.summary()
    assert {"mean", "ci_low", "ci_high"} <= set(s.columns) and (s["ci_low"] <= s["ci_high"]).all()


def test_same_seed_same_numbers():
    a = testbed.train("sine_line", "mse", seeds=2, **TINY)
    b = testbed.train("sine_line", "mse", seeds=2, **TINY)
    pd.testing.assert_frame_equal(a.history, b.history)
    np.testing.assert_array_equal(a.batch_loss, b.batch_loss)


def test_vmapped_seeds_equal_single_seed_runs():
    many = testbed.train("sine_line", "mse", seeds=[0, 1, 2], **TINY)
    one = testbed.train("sine_line", "mse", seeds=[2], **TINY)
    np.testing.assert_allclose(many.batch_loss[2], one.batch_loss[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(many.predictions[2], one.predictions[0], rtol=1e-4, atol=1e-6)


def test_numbers_do_not_depend_on_chunking(monkeypatch):
    a = testbed.train("two_slopes", "mse", seeds=2, **TINY)
    monkeypatch.setattr(engine, "MAX_CHUNKS", 3)
    b = testbed.train("two_slopes", "mse", seeds=2, **TINY)
    np.testing.assert_allclose(a.batch_loss, b.batch_loss, rtol=1e-6)
    np.testing.assert_allclose(a.history["value"], b.history["value"], rtol=1e-5, equal_nan=True)


class CompileCounter(logging.Handler):
    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        if "Compiling" in record.getMessage() and "train" not in record.getMessage():
            self.count += 1


def test_no_recompilation_for_new_seeds_or_hyperparameter_values():
    import jax

    first = testbed.train("proxy_correlated", "mse", seeds=[0, 1], lr=[1e-3], **TINY)
    before = engine.COMPILES["count"]
    handler = CompileCounter()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            again = testbed.train("proxy_correlated", "mse", seeds=[5, 6], lr=[3e-2], init_scale=[0.5], **TINY)
    finally:
        logger.removeHandler(handler)
    assert engine.COMPILES["count"] == before
    assert handler.count == 0, "the second call compiled something"
    assert not again.timing["compiled"] and 0 < again.timing["run_s"] <= again.timing["wall_s"]
    assert first.timing["run_s"] < first.timing["wall_s"]  # its own compile is not training time


def test_configurations_with_the_same_model_share_their_init_program():
    """The init program draws only parameters, optimizer state and data keys: another task of
    the same input and output widths (its own evaluation sets, pieces and metrics) compiles a
    chunk program but no init program, and starts from the same parameters."""
    import jax

    own = dict(TINY, evals=4, probe_points=13)  # settings no other test uses: its programs are new here
    testbed.train("sine_line", "mse", seeds=[0, 1], **own)
    inits = len(engine._INITS)
    b = testbed.train("two_slopes", "mse", seeds=[0, 1], **own)
    assert len(engine._INITS) == inits and b.timing["compiled"]
    c = testbed.train("sine_line", "mse", seeds=[0, 1], **{**own, "model": testbed.MLP(width=7, depth=1)})
    assert len(engine._INITS) == inits + 1 and c.timing["compiled"]
    start = dict(own, steps=1, evals=2)
    for x, y in zip(jax.tree.leaves(testbed.train("sine_line", "mse", seeds=[0, 1], lr=[0.0], **start).params),
                    jax.tree.leaves(testbed.train("two_slopes", "mse", seeds=[0, 1], lr=[0.0], **start).params),
                    strict=True):
        np.testing.assert_array_equal(x, y)


def test_divergence_of_one_run_leaves_the_others_intact():
    opt = testbed.Optimizer(name="sgd", momentum=0.0)
    both = testbed.train("two_slopes", "mse", optimizer=opt, seeds=2, lr=[1e-2, 1e5], **TINY)
    good = testbed.train("two_slopes", "mse", optimizer=opt, seeds=2, lr=[1e-2], **TINY)
    runs = both.runs
    assert (runs.loc[runs.lr == 1e5, "diverged_step"] >= 0).all()
    assert (runs.loc[runs.lr == 1e-2, "diverged_step"] == -1).all()
    np.testing.assert_allclose(both.batch_loss[:2], good.batch_loss, rtol=1e-5)
    final = final_train_loss(both)
    assert np.isfinite(final.loc[[0, 1]]).all() and np.isnan(final.loc[[2, 3]]).all()


@pytest.mark.parametrize("method", testbed.list_methods())
@pytest.mark.parametrize("task", testbed.list_tasks())
def test_every_method_lowers_the_loss_on_every_task(task, method):
    r = testbed.train(task, method, seeds=1, lr=[1e-2], **{**TINY, "steps": 60})
    h = r.history
    tr = h[(h.split == "train") & (h.piece == "all") & (h.metric == "loss")].sort_values("step")["value"].to_numpy()
    assert np.isfinite(tr).all()
    assert tr[-1] < tr[0], f"{task}/{method}: loss went {tr[0]:.4g} -> {tr[-1]:.4g}"


@pytest.mark.parametrize("task", testbed.list_tasks())
def test_probe_splits_are_the_split_tests_at_the_probes(task):
    """The probes' splits, computed in the evaluation sets' program, are each split's test
    applied op by op to the probes drawn (the first split holding a probe, -1 for none)."""
    t = testbed.make_task(task)
    data, split = engine._eval_sets(t, 64, 64)
    raw = t.domain.decode(jnp.asarray(np.asarray(data.probe.x)))
    masks = np.stack([np.asarray(s.where(raw)) for s in t.split_specs])
    np.testing.assert_array_equal(split, np.where(masks.any(0), masks.argmax(0), -1))
    assert (split[-engine.OOD_PROBES * len(t.ood_splits):] > 0).all()  # the OOD probes lie in OOD splits


def test_bad_arguments_are_clear_errors():
    with pytest.raises(testbed.ConfigError, match="--steps: expected an integer >= 1"):
        testbed.train("step", steps=0)
    with pytest.raises(testbed.ConfigError, match="--lr: expected non-negative numbers"):
        testbed.train("step", lr=[-1.0])
    with pytest.raises(testbed.UnknownNameError, match="unknown task 'nope'"):
        testbed.train("nope")
    with pytest.raises(testbed.UnknownNameError, match="unknown model 'cnn'"):
        testbed.make_model("cnn")
    with pytest.raises(testbed.ConfigError, match="model.width"):
        testbed.MLP(width=0)


def test_warm_start_continues_from_given_parameters():
    first = testbed.train("two_slopes", "mse", seeds=2, **TINY)
    again = testbed.train("two_slopes", "mse", seeds=2, init_params=first.params, **TINY)
    h1, h2 = first.history, again.history
    end = h1[(h1.step == 40) & (h1.metric == "loss")].set_index(["run", "split", "piece"])["value"]
    start = h2[(h2.step == 0) & (h2.metric == "loss")].set_index(["run", "split", "piece"])["value"]
    np.testing.assert_allclose(start.sort_index(), end.sort_index(), rtol=1e-5)
    assert final_train_loss(again).mean() < final_train_loss(first).mean()
    with pytest.raises(testbed.ConfigError, match="init_params: expected arrays with a leading axis of 3"):
        testbed.train("two_slopes", "mse", seeds=3, init_params=first.params, **TINY)


def test_snapshots_keep_the_parameters_at_every_evaluation_and_change_nothing_else():
    import jax

    kw = dict(steps=40, seeds=2, evals=3, quiet=True, eval_size=32, probe_points=8)
    model = testbed.make_model("mlp", width=8, depth=1)
    plain = testbed.train("sine_line", "mse", model, **kw)
    snap = testbed.train("sine_line", "mse", model, snapshots=True, **kw)
    assert plain.snapshots is None
    np.testing.assert_array_equal(plain.history["value"].to_numpy(), snap.history["value"].to_numpy())
    np.testing.assert_array_equal(plain.batch_loss, snap.batch_loss)
    for s, p in zip(jax.tree.leaves(snap.snapshots), jax.tree.leaves(snap.params), strict=True):
        assert s.shape == (2, len(snap.eval_steps), *p.shape[1:])
        np.testing.assert_array_equal(s[:, -1], p)  # the last evaluation is after the last update
    first = testbed.train("sine_line", "mse", model, **{**kw, "steps": 20, "evals": 2})
    mid = [s[:, 1] for s in jax.tree.leaves(snap.snapshots)]  # evaluations at 0, 20, 40
    for a, b in zip(mid, jax.tree.leaves(first.params), strict=True):
        np.testing.assert_array_equal(a, b)  # the parameters after 20 updates, as a 20-step run ends


def test_released_programs_free_their_memory_maps_and_compile_again():
    maps = engine.memory_maps()
    if maps is None:
        pytest.skip("no /proc here")
    model = testbed.make_model("mlp", width=8, depth=1)
    kw = dict(steps=5, seeds=1, evals=2, quiet=True, eval_size=16, probe_points=8)
    first = testbed.train("sine_line", "mse", model, **kw)
    assert engine._PROGRAMS
    engine.release_programs()
    assert not engine._PROGRAMS
    again = testbed.train("sine_line", "mse", model, **kw)
    assert again.timing["compiled"]  # compiled afresh, the same numbers
    np.testing.assert_array_equal(first.history["value"].to_numpy(), again.history["value"].to_numpy())
    assert engine.release_if_crowded(fraction=1.0) is False  # far below the limit: kept


def test_a_call_with_fewer_runs_than_devices_uses_one_device_per_run():
    """No device trains a padding copy of a run (and one run's program is not partitioned)."""
    import jax

    one = testbed.train("two_slopes", "mse", seeds=1, **TINY)
    assert one.timing["devices"] == 1 and one.batch_loss.shape[0] == 1
    two = testbed.train("two_slopes", "mse", seeds=2, **TINY)
    assert two.timing["devices"] == min(2, jax.device_count()) and two.batch_loss.shape[0] == 2
