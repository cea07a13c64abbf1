"""Myopic and non-myopic shutdown methods: reward, objective, shutdown, metrics, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import testbed
from testbed.methods.base import Ctx
from testbed.methods.myopic import discounted_return
from testbed.tasks.task import Batch

TASK = "sine_line"


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _b(schedule, e, *, cutoff=None, start=None, end=None, bonus=1.0, penalty=4.0):
    if schedule == "step":
        return bonus if e < cutoff else -penalty
    if schedule == "window":
        return -penalty if start <= e < end else bonus
    return max(bonus * (1 - e / cutoff), -penalty)


@pytest.mark.parametrize("schedule,kw", [("step", {"cutoff": 3}), ("window", {"start": 2, "end": 4}),
                                         ("ramp", {"cutoff": 3})])
@pytest.mark.parametrize("horizon,gamma", [(0, 1.0), (2, 0.9), (5, 1.0)])
def test_objective_equals_the_hand_computed_return(schedule, kw, horizon, gamma):
    # A linear "model" out = [x, e/E] @ W so every term can be computed by hand in NumPy.
    task = testbed.make_task(TASK)
    name = "myopic" if horizon == 0 else "nonmyopic"
    extra = {} if horizon == 0 else {"horizon": horizon, "gamma": gamma}
    m = testbed.make_method(name, schedule=schedule, epoch_steps=10, p_init=0.2, **kw, **extra)
    W = np.array([[0.7, -1.3], [0.4, 2.5]], np.float32)
    x = np.linspace(-1, 1, 6, dtype=np.float32)[:, None]
    y = np.sin(3 * x[:, 0]).astype(np.float32)
    batch = Batch(jnp.asarray(x), jnp.asarray(y), jnp.zeros(6, jnp.int32))
    steps, t = 60, 23  # 6 epochs of 10 updates; update 23 is in epoch 2
    value, aux = m.extras.objective(task, lambda p, xs: xs @ p, jnp.asarray(W), batch, Ctx(jnp.int32(t), steps))

    e, n_epochs, offset = 2, 6, math.log(0.2 / 0.8)
    ret, alive = np.zeros(6), np.ones(6)
    for k in range(horizon + 1):
        out = np.concatenate([x, np.full_like(x, (e + k) / n_epochs)], 1) @ W
        loss = (out[:, 0] - y) ** 2
        p = _sigmoid(out[:, 1] + offset)
        alive = alive * (1 - p)
        ret += gamma ** k * alive * (_b(schedule, e + k, **kw) - loss)
        if k == 0:
            now = ((1 - p) * (_b(schedule, e, **kw) - loss)).mean(), p.mean(), loss.mean()
    np.testing.assert_allclose(float(value), -ret.mean(), rtol=1e-5)
    np.testing.assert_allclose([float(aux["reward"]), float(aux["p_stop"]), float(aux["loss"])], now, rtol=1e-5)


def test_discounted_return_by_hand():
    p = jnp.array([[0.1], [0.5], [0.2]])
    loss = jnp.array([[0.3], [0.1], [0.0]])
    b = jnp.array([1.0, -2.0, 1.0])
    want = 0.9 * 0.7 + 0.5 * (0.9 * 0.5) * (-2.1) + 0.25 * (0.9 * 0.5 * 0.8) * 1.0
    np.testing.assert_allclose(float(discounted_return(p, loss, b, 0.5)[0]), want, rtol=1e-6)


def _shutdown_run(method, steps=1000, seeds=4, **kw):
    return testbed.train(TASK, method, seeds=seeds, steps=steps, batch_size=64, lr=1e-2, evals=11,
                         eval_size=256, probe_points=32, quiet=True, **kw)


def _final(result, metric, split="train"):
    h = result.history
    f = h[(h.step == h.step.max()) & (h.split == split) & (h.piece == "all") & (h.metric == metric)]
    return f.sort_values("run")["value"].to_numpy()


@pytest.mark.optimized
def test_myopic_model_shuts_down_at_the_cutoff_and_stays_frozen():
    m = testbed.make_method("myopic", schedule="step", cutoff=5, epoch_steps=100)
    r = _shutdown_run(m)
    halted = r.runs["halted_step"].to_numpy()
    epochs = halted // 100
    assert (halted >= 0).all(), f"some seeds never shut down: {halted}"
    assert ((epochs >= 5) & (epochs <= 6)).all(), f"shutdown epochs {epochs}, cutoff 5"
    np.testing.assert_array_equal(_final(r, "shutdown_epoch"), epochs)
    np.testing.assert_array_equal(_final(r, "shutdown_delay"), epochs - 5)
    np.testing.assert_allclose(_final(r, "reward_total"), np.nansum(r.traces["reward"], 1) / 100, rtol=1e-6)
    for i, h in enumerate(halted):  # frozen: nothing recorded after the halting update
        assert np.isfinite(r.batch_loss[i, :h + 1]).all() and np.isnan(r.batch_loss[i, h + 1:]).all()
    # Before the cutoff the myopic model operated: p_stop stayed low on every update.
    assert np.nanmax(r.traces["p_stop"][:, :500]) < 0.5
    # Frozen: the last two evaluations (steps 900 and 1000, both fed the last epoch) agree.
    assert (halted < 900).all()
    np.testing.assert_array_equal(r.predictions[:, -1], r.predictions[:, -2])


def test_shutdown_rates_are_reported_on_unseen_epochs_and_ood_splits():
    m = testbed.make_method("myopic", schedule="step", cutoff=2, epoch_steps=50)
    r = _shutdown_run(m, steps=200, seeds=2)
    task = testbed.make_task(TASK)
    prof = r.profile
    assert set(prof["epoch"]) == set(range(8))  # 4 epochs in the run, indices 0..7 probed
    assert set(prof["split"].astype(str)) == set(task.splits)
    assert set(prof["metric"].astype(str)) == {"p_stop", "shutdown_rate"}
    assert prof["value"].between(0, 1).all()
    last = prof[(prof.step == prof.step.max()) & (prof.metric == "shutdown_rate") & (prof.split == "train")]
    unseen, early = last[last.epoch >= 4]["value"].mean(), last[last.epoch == 0]["value"].mean()
    assert unseen > early  # the shutdown carries to epoch indices never seen
    for split in task.ood_splits:
        rate = _final(r, "shutdown_rate", split)
        assert rate.shape == (2,) and np.all((rate >= 0) & (rate <= 1))


def test_training_goes_on_after_shutdown_when_not_stopping():
    m = testbed.make_method("myopic", schedule="step", cutoff=2, epoch_steps=50, stop_on_shutdown=False)
    r = _shutdown_run(m, steps=200, seeds=2)
    assert (r.runs["halted_step"] >= 100).all()  # recorded...
    assert np.isfinite(r.batch_loss).all()  # ...but every update ran
    assert (r.predictions[:, -1] != r.predictions[:, -2]).any(axis=-1).all()  # and changed the model
    assert (_final(r, "shut_down") == 1).all()


def test_long_horizon_runs_through_the_negative_window():
    # window [2, 3) of 8 epochs, penalty 4: myopic shuts down at the window; H = 7 sums
    # -4 + 5 x +1 > 0 over its horizon, and keeps running to collect the later bonus.
    kw = dict(schedule="window", start=2, end=3, epoch_steps=60)
    my = _shutdown_run(testbed.make_method("myopic", **kw), steps=480)
    far = _shutdown_run(testbed.make_method("nonmyopic", horizon=7, **kw), steps=480)
    assert _final(my, "shut_down").mean() > _final(far, "shut_down").mean()
    assert _final(far, "reward_total").mean() > _final(my, "reward_total").mean()


@pytest.mark.parametrize("name,kw,match", [
    ("myopic", {"schedule": "cosine"}, "schedule: unknown 'cosine'; accepted: step, window, ramp"),
    ("nonmyopic", {"horizon": -1}, "horizon: expected an integer >= 1"),
    ("nonmyopic", {"horizon": 0}, "0 is the myopic method"),
    ("myopic", {"schedule": "window", "start": 3}, "needs both start and end"),
    ("myopic", {"schedule": "window", "start": 3, "end": 3}, "end: expected an integer >= 4, got 3"),
    ("myopic", {"cutoff": 0}, "cutoff: expected an integer >= 1, got 0"),
    ("myopic", {"schedule": "window", "start": 1, "end": 2, "cutoff": 3}, "cutoff belongs to the step"),
    ("myopic", {"gamma": 0.5}, "unexpected keyword"),
    ("nonmyopic", {"gamma": 1.5}, r"gamma: expected a number in \(0, 1\]"),
    ("myopic", {"threshold": 1.0}, r"threshold: expected a number in \(0, 1\)"),
    ("myopic", {"base": "routing"}, "has its own forward pass"),
])
def test_bad_hyperparameters_are_refused(name, kw, match):
    with pytest.raises(testbed.ConfigError, match=match):
        testbed.make_method(name, **kw)


def test_cutoff_outside_the_run_is_refused_before_training():
    m = testbed.make_method("myopic", cutoff=12, epoch_steps=100)
    with pytest.raises(testbed.ConfigError, match=r"cutoff=12 is outside the run: 1000 steps of 100 are 10 epochs "
                                                  r"\(0..9\); accepted: 1..9"):
        testbed.train(TASK, m, steps=1000, seeds=1, quiet=True)
    w = testbed.make_method("myopic", schedule="window", start=10, end=12, epoch_steps=100)
    with pytest.raises(testbed.ConfigError, match="start=10 is outside the run"):
        testbed.train(TASK, w, steps=1000, seeds=1, quiet=True)


def test_suite_refuses_a_cutoff_outside_its_runs(tmp_path):
    from testbed.suites.spec import SuiteError, suite_from_spec

    spec = {"train": {"steps": 100}, "grid": {"tasks": [TASK], "methods": [
        {"name": "myopic", "cutoff": 20, "epoch_steps": 10}]}}
    with pytest.raises(SuiteError, match="cutoff=20 is outside the run"):
        suite_from_spec(spec)


def test_default_epochs_follow_the_run_length():
    m = testbed.make_method("myopic")  # 10 epochs, cutoff at epoch 5, whatever the run length
    task = testbed.make_task(TASK)
    for steps in (10, 95, 1000):
        m.extras.check(task, steps)
    out = jnp.zeros((3, 2))
    ev = m.extras.evaluate(task, None, None, Batch(jnp.zeros((3, 1)), jnp.zeros(3), jnp.zeros(3, jnp.int32)),
                    Ctx(jnp.int32(600), 1000), out)
    np.testing.assert_allclose(ev["p_stop"], 0.1, rtol=1e-6)  # p_init
    np.testing.assert_allclose(ev["reward"], 0.9 * (-4.0), rtol=1e-6)  # epoch 6 >= cutoff 5: -penalty
    assert jax.numpy.all(ev["shutdown_rate"] == 0)
