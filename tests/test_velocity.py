"""Tests for probe velocity (`testbed.analyses.probes.velocity`): how fast the predictions at the
probe inputs move, checked by hand on a made-up table and against the plateaus of a two-layer
linear network (the predictions jump when the loss drops)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import testbed
from testbed.analyses.plateaus.detect import read_curve
from testbed.analyses.probes.velocity import probe_velocity
from testbed.training.tables import probe_table


def table(pred: np.ndarray, steps, split=("train", "far"), piece=("a", "b")) -> pd.DataFrame:
    """A probes table of one run: pred [E, P, K] at the given steps."""
    e, p, k = pred.shape
    ei, pi, ki = (a.ravel() for a in np.meshgrid(range(e), range(p), range(k), indexing="ij"))
    return pd.DataFrame({"run": 0, "seed": 0, "step": np.asarray(steps)[ei], "probe": pi, "output": ki,
                         "split": np.asarray(split)[pi], "piece": np.asarray(piece)[pi], "x0": pi.astype(float),
                         "y": 0.0, "pred": pred[ei, pi, ki]})


def test_velocity_is_the_rms_change_per_step_per_group():
    steps = np.array([0.0, 10.0, 30.0])
    pred = np.zeros((3, 2, 1))
    pred[1, 0, 0], pred[2, 0, 0] = 1.0, 3.0  # probe 0 moves 1 in 10 steps, then 2 in 20 steps
    pred[2, 1, 0] = 4.0  # probe 1 moves only in the second interval: 4 in 20 steps
    v = probe_velocity(table(pred, steps)).set_index(["split", "piece", "step"])["velocity"]
    assert v[("train", "all", 10.0)] == pytest.approx(0.1) and v[("train", "all", 30.0)] == pytest.approx(0.1)
    assert v[("far", "all", 10.0)] == 0.0 and v[("far", "all", 30.0)] == pytest.approx(0.2)
    assert v[("all", "a", 30.0)] == pytest.approx(0.1) and v[("all", "b", 30.0)] == pytest.approx(0.2)
    assert v[("all", "all", 30.0)] == pytest.approx(np.sqrt((0.1 ** 2 + 0.2 ** 2) / 2))
    with pytest.raises(ValueError, match="lacks columns"):
        probe_velocity(table(pred, steps).drop(columns="pred"))


def test_distribution_velocity_ignores_the_shift_a_softmax_ignores():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 2, 4))
    pred = np.concatenate([base, base + 5.0, base + np.array([0.0, 0.0, 0.0, 1.0])])  # shift, then a real change
    v = probe_velocity(table(pred, [0, 1, 2]), target="distribution")
    allv = v[(v.split == "all") & (v.piece == "all")].set_index("step")["velocity"]
    assert allv[1] == pytest.approx(0.0, abs=1e-12) and allv[2] > 0.1
    assert probe_velocity(table(pred, [0, 1, 2]))["velocity"].max() > 4  # raw logits: the shift moves


def test_predictions_jump_when_the_loss_drops():
    """Saxe et al.: a two-layer linear net learns one mode per drop; between drops its
    function barely moves. The velocity near each stall's escape is many times its level
    on the stall."""
    task = testbed.make_task("deep_linear", dim_in=8, dim_out=8, singular_values=(4.0, 2.0, 1.0))
    r = testbed.train(task, method="mse", model=testbed.DeepLinear(width=16, depth=2),
                      optimizer=testbed.Optimizer(name="sgd", lr=0.04, momentum=0.0), init_scale=1e-3,
                      batch_size=128, steps=1000, evals=200, eval_size=256, probe_points=32, seeds=1, quiet=True)
    v = probe_velocity(probe_table(task, r), target=task.target)
    v = v[(v.split == "all") & (v.piece == "all")]
    h = r.history
    c = h[(h.metric == "loss") & (h.split == "train") & (h.piece == "all")].sort_values("step")
    stalls = read_curve(c.step.to_numpy(), c.value.to_numpy()).stalls
    assert len(stalls) == 3
    for p in stalls:
        late = v[(v.step >= p.start + 0.5 * p.duration) & (v.step <= p.end)]["velocity"].median()
        near = v[(v.step >= p.end) & (v.step <= p.drop_step + 50)]["velocity"].max()
        assert near > 2.5 * late, (p, near, late)
