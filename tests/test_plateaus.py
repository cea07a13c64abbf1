"""Tests for the plateau detector (`testbed.analyses.plateaus.detect`) and the `deep_linear` task.

Synthetic curves check that known plateaus are recovered; a two-layer linear
network checks the detector against the closed-form learning dynamics of Saxe,
McClelland and Ganguli 2014 (arXiv 1312.6120).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

import testbed
import testbed.tasks.deep_linear as ll
from testbed.analyses.plateaus.detect import Plateau, plateaus
from testbed.analyses.plateaus.tables import detect_on_array, plateau_summary, plateau_table
from testbed.core.errors import ConfigError

T = 4000.0
CENTERS, WIDTHS, DROPS = (800.0, 2000.0, 3000.0), (30.0, 60.0, 40.0), (1.5, 1.0, 2.0)


def sigmoid_curve(t, noise=0.0, seed=0, centers=CENTERS, widths=WIDTHS, drops=DROPS, y0=0.5):
    """Loss whose log is y0 minus sigmoid drops, plus Gaussian noise in log space."""
    y = np.full(len(t), y0)
    for c, w, d in zip(centers, widths, drops, strict=True):
        y = y - d / (1.0 + np.exp(-(t - c) / w))
    return np.exp(y + np.random.default_rng(seed).normal(0.0, noise, len(t)))


def grid(spacing: str, n: int = 200) -> np.ndarray:
    if spacing == "linear":
        return np.linspace(0.0, T, n)
    return np.concatenate([[0.0], np.geomspace(1.0, T, n - 1)])


def true_midpoint(k: int) -> float:
    """When drop k has covered half of its drop in linear loss (the detector's drop_step)."""
    lv = 0.5 - sum(DROPS[:k])
    target = math.log((math.exp(lv) + math.exp(lv - DROPS[k])) / 2.0)
    frac = (lv - target) / DROPS[k]  # sigmoid value reached
    return CENTERS[k] + WIDTHS[k] * math.log(frac / (1.0 - frac))


# ------------------------------------------------------------------------------ synthetic curves
@pytest.mark.parametrize("spacing,n,noise", [("linear", 200, 0.0), ("linear", 200, 0.05), ("linear", 200, 0.1),
                                             ("log", 200, 0.0), ("log", 200, 0.03), ("linear", 4000, 0.3)])
def test_sigmoid_drops_are_recovered(spacing, n, noise):
    t = grid(spacing, n)
    # Boundaries: 3 sigmoid widths from each drop's centre (95% of the drop); tolerance:
    # 3% of the run, or 1.5 sample spacings where log-spaced samples are sparser.
    for seed in range(4 if noise else 1):
        found = plateaus(t, sigmoid_curve(t, noise, seed))
        ended = [p for p in found if p.ended]
        assert len(ended) == 3, (seed, found)
        for k, p in enumerate(ended):
            true_start = 0.0 if k == 0 else CENTERS[k - 1] + 3 * WIDTHS[k - 1]
            true_end = CENTERS[k] - 3 * WIDTHS[k]
            for got, want in ((p.start, true_start), (p.end, true_end)):
                tol = max(0.03 * T, 1.5 * np.diff(t)[max(np.searchsorted(t, want) - 1, 0)])
                assert abs(got - want) <= tol, (seed, k, p, want)
            assert abs(p.drop - DROPS[k]) < 0.25, (seed, k, p)
            assert abs(p.drop_step - true_midpoint(k)) <= 0.02 * T, (seed, k, p)
            assert p.duration == pytest.approx(p.end - p.start)
        levels = [p.level for p in found]
        assert levels == sorted(levels, reverse=True)
        # The run ends on a final (unended) plateau after the last drop.
        assert not found[-1].ended and found[-1].end == t[-1] and found[-1].drop == 0.0


@pytest.mark.parametrize("spacing", ["linear", "log"])
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_exponential_decay_has_no_plateau(spacing, noise):
    t = grid(spacing)
    for seed in range(3):
        e = np.random.default_rng(seed).normal(0.0, noise, len(t))
        assert plateaus(t, np.exp(-t / 800.0 + e)) == []  # a steady fall: nothing at all
        assert plateaus(t, np.exp(-t / 250.0 + e)) == []
        # Decay to an asymptote: at most a final plateau, flagged as not ended.
        found = plateaus(t, np.exp(-t / 500.0 + e) + 1e-2)
        assert all(not p.ended for p in found) and len(found) <= 1
        if found:
            assert found[0].end == t[-1] and found[0].start > 0.5 * T


def test_nan_tail_and_non_finite_values_are_ignored():
    t = grid("linear")
    loss = sigmoid_curve(t, centers=(1000.0,), widths=(30.0,), drops=(1.5,))
    ref = plateaus(t[:150], loss[:150])
    diverged = loss.copy()
    diverged[150:] = np.nan
    diverged[10] = np.inf
    found = plateaus(t, diverged)
    assert [p.ended for p in found] == [True, False]
    assert found[0].end == pytest.approx(ref[0].end) and found[0].drop == pytest.approx(ref[0].drop, abs=1e-6)
    assert found[1].end == t[149]  # the last finite point
    assert plateaus(t, np.full(len(t), np.nan)) == []


def test_flat_curve_is_one_unended_plateau_and_inputs_are_checked():
    t = grid("linear")
    (p,) = plateaus(t, np.full(len(t), 0.7))
    assert isinstance(p, Plateau) and p.start == 0 and p.end == T and not p.ended and p.level == pytest.approx(0.7)
    assert plateaus(t, np.exp(-0.2 * t / T))[0].duration == T  # falls by < min_drop in the whole run
    assert plateaus([0, 1, 2], [1.0, 1.0, 1.0]) == []
    with pytest.raises(ValueError):
        plateaus(t, t[:-1])
    with pytest.raises(ValueError):
        plateaus(t[::-1], t)


def test_detect_on_array_matches_per_row():
    t = grid("linear")
    rows = np.stack([sigmoid_curve(t, 0.05, s) for s in range(3)])
    out = detect_on_array(t, rows)
    assert out == [plateaus(t, r) for r in rows]
    by_index = detect_on_array(None, rows[:1])[0]  # steps 0..n-1: the same curve, rescaled in time
    assert [p.start for p in by_index] == pytest.approx([p.start / (T / 199) for p in out[0]])


def test_summary_counts_curves_without_plateaus():
    t = grid("linear", 100)
    curves = [sigmoid_curve(t), sigmoid_curve(t, drops=(1.5, 0.0, 0.0)), np.exp(-t / 400.0)]
    history = pd.concat([pd.DataFrame({
        "task": "toy", "method": "mse", "model": "mlp", "optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0,
        "init_scale": 1.0, "run": r, "seed": r, "step": t, "split": "train", "piece": "all", "metric": "loss",
        "value": c}) for r, c in enumerate(curves)], ignore_index=True)
    table = plateau_table(history)
    assert list(table.groupby("run").size()) == [4, 2]  # 3 ended + final; 1 ended + final; none
    assert table["plateau"].tolist() == [0, 1, 2, 3, 0, 1]
    (row,) = plateau_summary(history).to_dict("records")
    assert row["curves"] == 3 and row["count_dist"] == "0:1,2:1,4:1"
    assert row["count_mean"] == pytest.approx(2.0) and row["ended_mean"] == pytest.approx(4 / 3)
    assert plateau_table(history[history["metric"] == "nothing"]).empty


# ------------------------------------------------------------------------------ deep_linear task
def test_deep_linear_task_is_whitened_with_the_chosen_spectrum():
    task = testbed.make_task("deep_linear", dim_in=6, dim_out=4, singular_values=(3.0, 1.5), seed=2)
    assert task.target == "vector" and task.out_dim == 4 and task.splits == ("train", "extrapolate")
    b = task.sample(jax.random.key(0), 20000, "train")
    x, y = np.asarray(b.x, np.float64), np.asarray(b.y, np.float64)
    assert np.abs(x).max() <= math.sqrt(3) + 1e-6
    assert np.abs(x.T @ x / len(x) - np.eye(6)).max() < 0.05  # E[x x^T] = I
    u, s, v = ll.deep_linear_target(6, 4, (3.0, 1.5), 2)
    a = (u * s) @ v.T
    np.testing.assert_allclose(y, x @ a.T, atol=1e-4)
    np.testing.assert_allclose(np.linalg.svd(a, compute_uv=False)[:2], [3.0, 1.5], atol=1e-9)
    xo = np.asarray(task.sample(jax.random.key(1), 2000, "extrapolate").x)
    assert (np.abs(xo).max(axis=1) > math.sqrt(3)).all() and np.abs(xo).max() <= 2 * math.sqrt(3) + 1e-6
    with pytest.raises(ConfigError):
        ll.deep_linear(dim_in=2, dim_out=2, singular_values=(3.0, 2.0, 1.0))
    with pytest.raises(ConfigError):
        ll.deep_linear(singular_values=(1.0, -1.0))


# ------------------------------------------------------------------------------ Saxe et al. 2014
# Two-layer linear network, plain SGD near full batch, small init. Conventions (see
# testbed.tasks.deep_linear): mse on a vector target is the mean over dim_out, so the time
# constant in steps is tau = dim_out / (2 lr); a mode of strength s grows from u0 as
# u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0).
S = (4.0, 2.0, 1.0)
DIM, WIDTH, LR, INIT, STEPS = 8, 16, 0.04, 1e-3, 1000
TAU = ll.saxe_tau(LR, DIM)  # 100 steps
MID = 1.0 - 1.0 / math.sqrt(2.0)  # u/s at the detector's drop_step (loss halfway down the drop)


@pytest.fixture(scope="module")
def saxe():
    task = testbed.make_task("deep_linear", dim_in=DIM, dim_out=DIM, singular_values=S)
    return testbed.train(task, method="mse", model=testbed.DeepLinear(width=WIDTH, depth=2),
                         optimizer=testbed.Optimizer(name="sgd", lr=LR, momentum=0.0), init_scale=INIT,
                         batch_size=128, steps=STEPS, evals=200, eval_size=256, probe_points=32, seeds=2,
                         quiet=True)


def mode_strengths(result, run: int) -> np.ndarray:
    """u_a(t) = v_a^T M(t) u_a at every evaluation, [E, k], with M(t) the network's linear map
    recovered exactly from its probe predictions (the model is linear)."""
    u, _, v = ll.deep_linear_target(DIM, DIM, S, 0)
    x = np.asarray(result.probe[0], np.float64)
    maps = [np.linalg.lstsq(x, p, rcond=None)[0] for p in result.predictions[run].astype(np.float64)]
    return np.einsum("ik,eij,jk->ek", v, np.stack(maps), u)


def initial_u0(result, run: int) -> np.ndarray:
    """Effective initial strengths |a0 + b0|^2 / 4 per mode, from the run's initial weights
    (rebuilt as the engine draws them; checked against the step-0 predictions)."""
    k_init, _ = jax.random.split(jax.random.key(run))
    w0, w1 = (np.asarray(w[...], np.float64) * INIT for w in
              testbed.DeepLinear(width=WIDTH, depth=2).build(DIM, DIM, rngs=nnx.Rngs(k_init)).weights)
    x = np.asarray(result.probe[0], np.float64)
    np.testing.assert_allclose(x @ w0 @ w1, result.predictions[run, 0], atol=1e-3 * INIT ** 2,
                               err_msg="the engine's initialization changed; update initial_u0")
    u, _, v = ll.deep_linear_target(DIM, DIM, S, 0)
    return np.sum((w0.T @ v + w1 @ u) ** 2, axis=0) / 4.0


def test_saxe_one_plateau_per_mode_at_the_predicted_times(saxe):
    h = saxe.history
    u0 = ll.saxe_u0(INIT, WIDTH, DIM)  # from the init scale alone
    predicted = [ll.saxe_time(s, u0, TAU, MID) for s in S]
    for run in range(2):
        c = h[(h.run == run) & (h.metric == "loss") & (h.split == "train") & (h.piece == "all")].sort_values("step")
        found = [p for p in plateaus(c.step.to_numpy(), c.value.to_numpy()) if p.ended]
        assert len(found) == len(S), found  # the initial plateau is the first mode's
        # Loss levels on the plateaus: (1/dim) sum of the unlearned s^2.
        for k, p in enumerate(found):
            assert p.level == pytest.approx(sum(s * s for s in S[k:]) / DIM, rel=0.2)
        drops = np.array([p.drop_step for p in found])
        assert np.all(np.diff(drops) > 0)  # strongest mode first
        np.testing.assert_allclose(drops, predicted, rtol=0.25)
        for p, s in zip(found, S, strict=True):  # the plateau ends shortly before the drop
            assert 0 < p.drop_step - p.end < 4 * TAU / (2 * s)
        # t_a s_a = (tau/2)(ln(s_a/u0 - 1) + logit(MID)): drop times scale as 1/s up to the log.
        scaled, want = drops * np.array(S), np.array(predicted) * np.array(S)
        np.testing.assert_allclose(scaled / scaled[-1], want / want[-1], rtol=0.1)
    # The same on the per-update (noisy) batch losses.
    for found in detect_on_array(None, saxe.batch_loss):
        ended = [p for p in found if p.ended]
        assert len(ended) == len(S)
        np.testing.assert_allclose([p.drop_step for p in ended], predicted, rtol=0.25)


def test_saxe_mode_strengths_follow_the_sigmoid(saxe):
    steps = saxe.eval_steps.astype(np.float64)
    for run in range(2):
        u, u0 = mode_strengths(saxe, run), initial_u0(saxe, run)
        for a, s in enumerate(S):
            frac = u[:, a] / s
            assert frac[-1] == pytest.approx(1.0, abs=0.02)
            half = steps[np.argmax(frac >= 0.5)]
            assert half == pytest.approx(ll.saxe_time(s, u0[a], TAU), rel=0.1)
            # Growth rate of logit(u/s) is 2s/tau: checks tau = dim_out / (2 lr).
            m = (frac > 0.05) & (frac < 0.9)
            slope = np.polyfit(steps[m], np.log(frac[m] / (1.0 - frac[m])), 1)[0]
            assert slope == pytest.approx(2.0 * s / TAU, rel=0.1)
            assert np.abs(frac - ll.saxe_strength(steps, s, u0[a], TAU) / s).max() < 0.2


def test_plateau_table_and_summary_on_a_history(saxe):
    table = plateau_table(saxe.history)
    assert list(table.columns[:7]) == ["task", "method", "model", "optimizer", "lr", "weight_decay", "init_scale"]
    assert {"run", "seed", "piece", "plateau", "start", "end", "drop", "ended", "drop_step"} <= set(table.columns)
    assert set(table["piece"]) == {"all", "linear"}  # piece "all" and each piece
    per_curve = table[table["ended"]].groupby(["run", "piece"], observed=True).size()
    assert (per_curve == len(S)).all() and len(per_curve) == 4
    summary = plateau_summary(saxe.history)
    assert len(summary) == 2 and (summary["count_dist"] == "3:2").all() and (summary["curves"] == 2).all()
    assert (summary["ended_mean"] == 3.0).all()


def test_run_plateaus_counts_per_run_including_runs_without_plateaus():
    from testbed.analyses.plateaus.tables import run_plateaus, with_final_loss

    steps = np.arange(1, 2001)
    # run 0: two drops (sigmoids in log space) -> plateaus; run 1: a plain exponential decay -> none
    logl = -1.5 / (1 + np.exp(-(steps - 600) / 20)) - 1.5 / (1 + np.exp(-(steps - 1400) / 20))
    curves = {0: np.exp(logl), 1: np.exp(-steps / 300.0)}
    bl = pd.concat([pd.DataFrame({"cell": "c", "run": r, "seed": r, "step": steps, "value": v})
                    for r, v in curves.items()], ignore_index=True)
    rows, per_run = run_plateaus(bl, by=["cell"])
    per_run = per_run.set_index("run")
    assert per_run.loc[0, "plateaus"] >= 2 and per_run.loc[0, "ended"] >= 2
    assert per_run.loc[1, "ended"] == 0
    assert set(rows["run"]) <= {0, 1} and (rows["run"] == 0).sum() == per_run.loc[0, "plateaus"]
    assert 0 < per_run.loc[0, "plateau_frac"] <= 1
    hist = pd.DataFrame({"cell": "c", "run": [0, 1, 0, 1], "step": [0, 0, 2000, 2000], "split": "train",
                         "piece": "all", "metric": "loss", "value": [1.0, 1.0, 0.05, 1e-4]})
    z = with_final_loss(per_run.reset_index(), hist).set_index("run")
    assert z.loc[0, "reached_zero"] == 0.0 and z.loc[1, "reached_zero"] == 1.0
