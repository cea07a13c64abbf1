"""Tests for the plateau detector (`testbed.analyses.plateaus.detect`) and the `deep_linear` task.

Synthetic curves check that known plateaus are recovered; a two-layer linear
network checks the detector against the closed-form learning dynamics of Saxe,
McClelland and Ganguli 2014 (arXiv 1312.6120).
"""

from __future__ import annotations

import math
import os

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import testbed
import testbed.tasks.deep_linear as ll
from testbed.analyses.plateaus.detect import plateaus, read_curve
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
@pytest.mark.parametrize("spacing,n,noise,smooth", [("linear", 200, 0.0, 5), ("linear", 200, 0.05, 5),
                                                    ("linear", 200, 0.1, 5), ("log", 200, 0.0, 5),
                                                    ("log", 200, 0.1, 5), ("linear", 4000, 0.1, 5),
                                                    ("linear", 4000, 0.3, 15)])
def test_sigmoid_drops_are_recovered(spacing, n, noise, smooth):
    t = grid(spacing, n)
    # Boundaries: 3 sigmoid widths from each drop's centre (95% of the drop); tolerance:
    # 3% of the run, or 2 sample spacings where log-spaced samples are sparser.
    for seed in range(6 if noise else 1):
        found = plateaus(t, sigmoid_curve(t, noise, seed), smooth=smooth)
        ended = [p for p in found if p.ended]
        assert len(ended) == 3, (seed, found)
        for k, p in enumerate(ended):
            true_start = 0.0 if k == 0 else CENTERS[k - 1] + 3 * WIDTHS[k - 1]
            true_end = CENTERS[k] - 3 * WIDTHS[k]
            for got, want in ((p.start, true_start), (p.end, true_end)):
                tol = max((0.04 if noise > 0.2 else 0.03) * T, 2 * np.diff(t)[max(np.searchsorted(t, want) - 1, 0)])
                assert abs(got - want) <= tol, (seed, k, p, want)
            assert abs(p.drop - DROPS[k]) < 0.25, (seed, k, p)
            assert abs(p.drop_step - true_midpoint(k)) <= 0.02 * T, (seed, k, p)
            assert p.duration == pytest.approx(p.end - p.start)
        levels = [p.level for p in found]
        assert levels == sorted(levels, reverse=True)
        # The run ends flat at exp(-4) of its start, far above zero: stuck at the end.
        curve = read_curve(t, sigmoid_curve(t, noise, seed), smooth=smooth)
        assert curve.final.stuck and not curve.final.converged
        assert not found[-1].ended and found[-1].end == t[-1] and found[-1].drop == 0.0


@pytest.mark.parametrize("spacing", ["linear", "log"])
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_steady_decays_have_no_stall(spacing, noise):
    t = grid(spacing)
    for seed in range(3):
        e = np.random.default_rng(seed).normal(0.0, noise, len(t))
        # Exponential and power-law falls: no stall. (The steep decay falls 0.08 per sample
        # of the linear grid; noise above that per sample can fake a stall, so it gets half.)
        for loss in (np.exp(-t / 800.0 + e), np.exp(-t / 250.0 + e / 2), (1 + t) ** -1.5 * np.exp(e)):
            assert read_curve(t, loss).stalls == []
        # Decay to an asymptote well above zero: stuck at the end, and nothing else.
        c = read_curve(t, np.exp(-t / 500.0 + e) + 1e-1)
        assert c.stalls == [] and c.final.stuck and c.final.start > 0.3 * T
        (p,) = plateaus(t, np.exp(-t / 500.0 + e) + 1e-1)
        assert not p.ended and p.end == t[-1]
        # Decay to zero (float noise at the end): converged, no plateau at all.
        tail = np.exp(-t / 100.0 + e) + 1e-14 * np.abs(e)
        c = read_curve(t, tail)
        assert c.stalls == [] and c.final.converged and not c.final.stuck and plateaus(t, tail) == []


def test_a_short_plateau_is_found_however_long_the_run_goes_on():
    # Three modes; the middle plateau lasts 3% of the run; the run then trains 9x as long again.
    t = np.arange(20000.0)
    y = np.zeros_like(t)
    for c, w, d in ((300.0, 12.0, 1.5), (1000.0, 12.0, 1.0), (1600.0, 12.0, 12.0)):
        y -= d / (1.0 + np.exp(-(t - c) / w))
    loss = np.exp(y)
    found = plateaus(t, loss)
    assert len(found) == 3 and all(p.ended for p in found), found
    middle = found[1]
    assert middle.duration == pytest.approx(600, abs=150)
    assert math.exp(-1.5) * 0.9 < middle.level < math.exp(-1.5) * 1.1
    c = read_curve(t, loss)
    assert c.final.converged and not c.final.stuck  # the long tail at zero is not a plateau
    assert plateaus(t[:2000], loss[:2000]) == found  # the same without the tail


def test_bumps_are_counted_when_they_come_back():
    t = np.arange(3000.0)
    y = -t / 1000.0
    for c in (600.0, 1500.0, 2400.0):  # three rises to 2.7x the running minimum, 60 steps wide
        y += 1.0 * np.exp(-0.5 * ((t - c) / 20.0) ** 2)
    c = read_curve(t, np.exp(y))
    assert len(c.bumps) == 3
    assert all(1.0 < b.height < 2.0 for b in c.bumps)
    assert all(b.start < centre < b.end for b, centre in zip(c.bumps, (600, 1500, 2400), strict=True))
    assert read_curve(t, np.exp(-t / 1000.0)).bumps == []
    noisy = np.exp(-t / 1000.0 + np.random.default_rng(0).normal(0, 0.1, len(t)))
    assert read_curve(t, noisy).bumps == []  # batch noise is not a bump


# ------------------------------------------------------------------------------ properties
def staircase(draw_levels, widths, gaps, spacing, n):
    """A loss curve with sigmoid drops in log space, then a final fall to zero."""
    centres = np.cumsum(gaps)
    t_end = centres[-1] + 0.5 * gaps[-1]
    t = np.linspace(0.0, t_end, n) if spacing == "linear" else np.concatenate(
        [[0.0], np.geomspace(t_end / n / 4, t_end, n - 1)])
    y = np.zeros(n)
    for c, w, d in zip(centres, widths, draw_levels, strict=True):
        y -= d * 0.5 * (1.0 + np.tanh((t - c) / (2.0 * w)))  # a sigmoid that cannot overflow
    return t, np.exp(y)


curves = st.integers(1, 4).flatmap(lambda k: st.tuples(
    # Levels stay above the zero-loss floor (1e-3 of the start: 6.9 log units down); the last drop goes to zero.
    st.lists(st.floats(0.8, 1.5), min_size=k, max_size=k).map(lambda d: [*d, 30.0]),
    st.lists(st.floats(5.0, 20.0), min_size=k + 1, max_size=k + 1),
    st.lists(st.floats(300.0, 1000.0), min_size=k + 1, max_size=k + 1),
    st.sampled_from(["linear", "log"]),
    st.integers(400, 800)))


@settings(max_examples=int(os.environ.get("TESTBED_HYPOTHESIS_EXAMPLES", 40)), deadline=None)
@given(curves, st.floats(0.5, 2.0), st.floats(1e-3, 1e3), st.floats(-1e4, 1e4), st.sampled_from([0.0, 0.03]),
       st.integers(0, 2 ** 16))
def test_stalls_are_scale_free(curve, more, a, b, noise, seed):
    drops, widths, gaps, spacing, n = curve
    t, loss = staircase(drops, widths, gaps, spacing, n)
    edges = np.cumsum(gaps)
    for k in range(len(edges)):  # every plateau sampled by >= 20 points (the detector needs 5)
        lo = edges[k - 1] + 3 * widths[k - 1] if k else 0.0
        assume(np.sum((t >= lo) & (t <= edges[k] - 3 * widths[k])) >= 20)
    loss = loss * np.exp(np.random.default_rng(seed).normal(0.0, noise, n))  # measurement noise
    ref = read_curve(t, loss)
    assert len(ref.stalls) == len(drops)  # one stall before each drop, the last one (to zero) included
    assert ref.final.converged
    # Appending converged steps changes nothing.
    extra = t[-1] + np.cumsum(np.full(int(more * n), t[-1] - t[-2]))
    longer = read_curve(np.r_[t, extra], np.r_[loss, loss[-1] * np.exp(np.random.default_rng(seed + 1).normal(
        0.0, noise, len(extra)))])
    assert longer.stalls == ref.stalls and longer.final.converged
    # Rescaling and shifting the step axis rescales the stalls' times and nothing else.
    moved = read_curve(a * t + b, loss)
    assert len(moved.stalls) == len(ref.stalls)
    for p, q in zip(moved.stalls, ref.stalls, strict=True):
        np.testing.assert_allclose([p.start, p.end, p.drop_step], [a * q.start + b, a * q.end + b,
                                                                    a * q.drop_step + b], rtol=1e-9, atol=1e-6 * a)
        assert p.duration == pytest.approx(a * q.duration, rel=1e-9)
        assert (p.level, p.drop) == pytest.approx((q.level, q.drop), rel=1e-9)


# ------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("modes", [2, 3, 4, 5])
@pytest.mark.parametrize("curve", ["full batch", "per update", "log-spaced, 5% noise"])
def test_two_layer_linear_stalls_follow_saxe(modes, curve):
    """Saxe, McClelland & Ganguli 2014 from a small *random* initialization (numpy reference,
    `two_layer_descent`): one stall per singular mode, strongest first, each ending at the
    closed-form time ``tau/(2s) ln(s/u0 - 1)`` (shifted to where the loss is half-way down)."""
    values = tuple(2.0 ** np.arange(modes)[::-1])  # 2^(k-1), ..., 2, 1
    for seed in range(4):
        loss, predicted = ll.two_layer_descent(values, steps=3000, batch=128 if curve == "per update" else 0,
                                               seed=seed)
        t = np.arange(len(loss), dtype=np.float64)
        if curve.startswith("log"):
            idx = np.unique(np.geomspace(1, len(loss), 400).astype(int) - 1)
            noise = 1.0 + 0.05 * np.random.default_rng(seed).normal(size=len(idx))
            t, loss = t[idx], loss[idx] * noise
        c = read_curve(t, loss)
        assert len(c.stalls) == modes, (seed, c.stalls)
        assert c.final.converged and not c.final.stuck
        drops = np.array([p.drop_step for p in c.stalls])
        assert np.all(np.diff(drops) > 0)  # learning order follows the singular values
        np.testing.assert_allclose(drops, predicted, rtol=0.15)
        # Levels: the loss of the modes not yet learned, (1/dim) sum s^2.
        for k, p in enumerate(c.stalls):
            assert p.level == pytest.approx(sum(x * x for x in values[k:]) / 8, rel=0.25)


def rank_one_fit(alignment: float, s: float = 4.0, n: int = 16, eps: float = 1e-2, lr: float = 0.01,
                 steps: int = 4000, seed: int = 0) -> np.ndarray:
    """Loss ``||u v^T - s a b^T||^2`` of a rank-1 factorization from ``u, v = eps (alignment a +
    sqrt(1 - alignment^2) a_perp)`` (Jermyn & Shlegeris): full-batch gradient descent."""
    rng = np.random.default_rng(seed)
    a, b = (x / np.linalg.norm(x) for x in rng.normal(size=(2, n)))
    def init(d):
        perp = rng.normal(size=n)
        perp -= (perp @ d) * d
        return eps * (alignment * d + math.sqrt(1 - alignment ** 2) * perp / np.linalg.norm(perp))
    u, v, target = init(a), init(b), s * np.outer(a, b)
    out = np.empty(steps)
    for k in range(steps):
        e = np.outer(u, v) - target
        out[k] = float((e * e).sum())
        u, v = u - lr * 2 * e @ v, v - lr * 2 * e.T @ u
    return out


def test_rank_one_s_curves_stall_for_the_log_of_the_initial_alignment():
    """Jermyn & Shlegeris' S-curves: the overlap with the target grows as ``e^{2 lr s t}``, so
    the stall ends at ``t = ln(1/alignment) / (2 lr s) + const``: a slope of 1/(2 lr s) in
    the log of the initial alignment."""
    s, lr = 4.0, 0.01
    logs, ends = [], []
    for alignment in (3e-1, 1e-1, 3e-2, 1e-2, 3e-3, 1e-3):
        loss = rank_one_fit(alignment, s=s, lr=lr)
        c = read_curve(np.arange(len(loss)), loss)
        assert len(c.stalls) == 1 and c.final.converged, (alignment, c)
        (p,) = c.stalls
        assert p.level == pytest.approx(s * s, rel=0.05)  # nothing learned on the stall
        logs.append(math.log(1 / alignment))
        ends.append(p.drop_step)
    slope, _ = np.polyfit(logs, ends, 1)
    assert slope == pytest.approx(1 / (2 * lr * s), rel=0.1)
    assert np.all(np.diff(ends) > 0)


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
    # run 0: two drops (sigmoids in log space) -> stalls; run 1: an exponential decay to zero -> none
    logl = -1.5 / (1 + np.exp(-(steps - 600) / 20)) - 1.5 / (1 + np.exp(-(steps - 1400) / 20))
    curves = {0: np.exp(logl), 1: np.exp(-steps / 200.0)}
    bl = pd.concat([pd.DataFrame({"cell": "c", "run": r, "seed": r, "step": steps, "value": v})
                    for r, v in curves.items()], ignore_index=True)
    rows, per_run = run_plateaus(bl, by=["cell"])
    per_run = per_run.set_index("run")
    # run 0: a stall before each drop, and it ends flat at e^-3 of its start: stuck.
    assert per_run.loc[0, "stalls"] == 2 and per_run.loc[0, "stuck"] == 1 and per_run.loc[0, "converged"] == 0
    assert per_run.loc[1, "stalls"] == 0 and per_run.loc[1, "stuck"] == 0 and per_run.loc[1, "converged"] == 1
    assert set(rows["run"]) == {0} and len(rows) == 3 and rows["ended"].tolist() == [True, True, False]
    assert 0 < per_run.loc[0, "stall_frac"] <= 1 and per_run.loc[1, "stall_frac"] == 0
    assert np.isnan(per_run.loc[1, "median_duration"])
    # The zero-loss level is the method's: with zero = e^-3, run 0 has converged.
    _, shifted = run_plateaus(bl.assign(method="m"), by=["cell"], zero={"m": float(np.exp(-3.0)) * 0.999})
    assert shifted.set_index("run").loc[0, "converged"] == 1
    hist = pd.DataFrame({"cell": "c", "run": [0, 1, 0, 1], "step": [0, 0, 2000, 2000], "split": "train",
                         "piece": "all", "metric": "loss", "value": [1.0, 1.0, 0.05, 1e-4]})
    z = with_final_loss(per_run.reset_index(), hist).set_index("run")
    assert z.loc[0, "reached_zero"] == 0.0 and z.loc[1, "reached_zero"] == 1.0
    z = with_final_loss(per_run.reset_index(), hist, zero=0.0499).set_index("run")  # zero-loss level 0.0499
    assert z.loc[0, "reached_zero"] == 1.0


def test_a_suite_reads_each_method_s_zero_loss_from_its_cells_not_from_the_registry():
    from testbed.analyses.base import make_analysis
    from testbed.core.columns import ZERO_LOSS

    steps = np.arange(1, 2001)
    logl = -1.5 / (1 + np.exp(-(steps - 600) / 20)) - 1.5 / (1 + np.exp(-(steps - 1400) / 20))
    cell = {"cell": "c", "task": "t", "method": "ce_smooth", "model": "mlp", "optimizer": "adam", "lr": 1e-3,
            "weight_decay": 0.0, "init_scale": 1.0}  # a label no registered method has
    bl = pd.DataFrame({**cell, "run": 0, "seed": 0, "step": steps, "value": np.exp(logl)})
    hist = pd.DataFrame({**cell, "run": 0, "step": [0, 2000], "split": "train", "piece": "all", "metric": "loss",
                         "value": [1.0, float(np.exp(-3.0))]})
    derive = make_analysis("plateaus").derive
    plain = derive({"batch_loss": bl, "history": hist})["plateaus"]
    assert plain.loc[0, "stuck"] == 1 and plain.loc[0, "reached_zero"] == 0  # zero loss 0: it ends far above
    bl.attrs[ZERO_LOSS] = {"c": float(np.exp(-3.0)) * 0.999}  # the cell recorded its method's zero loss
    recorded = derive({"batch_loss": bl, "history": hist})["plateaus"]
    assert recorded.loc[0, "converged"] == 1 and recorded.loc[0, "reached_zero"] == 1
    # a second cell with the same label (another task's options) keeps its own zero loss
    bl2 = pd.concat([bl, bl.assign(cell="d", task="u")], ignore_index=True)
    bl2.attrs[ZERO_LOSS] = {"c": float(np.exp(-3.0)) * 0.999, "d": 0.0}
    both = derive({"batch_loss": bl2, "history": pd.concat([hist, hist.assign(cell="d", task="u")])})["plateaus"]
    assert both.set_index("cell")["reached_zero"].to_dict() == {"c": 1.0, "d": 0.0}
