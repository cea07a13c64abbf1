"""Tests for the probe trajectories (`testbed.analyses.probes`) on synthetic suite tables."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pytest
from figure_tables import STEPS_LIN, TASKS, grid_probes, synthetic_tables, with_gid

from testbed.analyses.probes.figures import probe_trajectory, train_intervals


def test_probe_trajectory_1d_heatmap_extent(tables):
    fig = probe_trajectory(tables, "line1d")
    meshes = with_gid(fig, "probe_heatmap")
    assert len(meshes) == 2  # one per method, rows
    # 2 heatmaps, colour bar, loss panel, final-profile panel, legend holder
    assert len(fig.axes) == 6
    g = grid_probes("line1d")
    for m in meshes:
        xy = m.get_coordinates()
        assert np.isclose(xy[..., 0].min(), STEPS_LIN.min()) and np.isclose(xy[..., 0].max(), STEPS_LIN.max())
        assert np.isclose(xy[..., 1].min(), g["x0"].min()) and np.isclose(xy[..., 1].max(), g["x0"].max())
        assert m.get_array().shape == (len(g), len(STEPS_LIN))
        ax = m.axes
        assert ax.get_xlim() == (STEPS_LIN.min(), STEPS_LIN.max())
    # the train region's edges, on each heatmap
    (lo, hi), = train_intervals(g["x0"].to_numpy(), g["split"].to_numpy())
    edges = sorted({ln.get_ydata()[0] for ln in with_gid(fig, "train_edge")})
    assert np.allclose(edges, [lo, hi])
    assert -0.6 < lo < -0.5 and 0.5 < hi < 0.6
    # the loss panel shares the step axis with the heatmaps
    loss_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "mse")
    assert loss_ax.get_xlim() == meshes[0].axes.get_xlim()


def test_probe_trajectory_one_method(tables):
    fig = probe_trajectory(tables, "line1d", "mse")
    assert len(with_gid(fig, "probe_heatmap")) == 1
    with pytest.raises(ValueError, match="no probes for method"):
        probe_trajectory(tables, "line1d", "nope")


def test_probe_trajectory_distribution(tables):
    fig = probe_trajectory(tables, "dist1d")
    meshes = with_gid(fig, "probe_heatmap")
    assert len(meshes) == 2
    assert isinstance(meshes[0].norm, mpl.colors.LogNorm)  # per-probe KL
    assert meshes[0].axes.get_xscale() == "symlog"  # log-spaced steps
    xy = meshes[0].get_coordinates()
    assert np.isclose(xy[..., 1].min(), -0.5) and np.isclose(xy[..., 1].max(), 7.5)  # integer cells
    # heatmaps, colour bar, one log-prob panel per method, loss panel, legend holder
    assert len(fig.axes) == 2 + 1 + 2 + 1 + 1


@pytest.mark.parametrize("task", ["grid2d", "cls2d"])
def test_probe_trajectory_2d_fields(tables, task):
    fig = probe_trajectory(tables, task)
    n_methods = len(TASKS[task][4])
    assert len(with_gid(fig, "probe_field")) == 4 * n_methods
    assert len(with_gid(fig, "target_field")) == 1
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("step ")]
    assert titles[:4] == ["step 0", "step 30", "step 70", "step 100"]
    if task == "cls2d":  # argmax right (1) or wrong (0) on a partly covered lattice: blank cells masked
        arr = with_gid(fig, "probe_field")[-1].get_array()
        assert set(np.unique(arr.compressed())) <= {0.0, 1.0}
        assert arr.mask.sum() == 36 - len(grid_probes("cls2d"))
        assert with_gid(fig, "ood_mark:held")  # OOD probes marked with dots


def test_probe_trajectory_without_a_picture(tables):
    t = dict(tables)
    t["probes"] = tables["probes"][tables["probes"]["kind"] == "ood"]  # no grid probes
    assert probe_trajectory(t, "line1d") is None
    # more than 2 input dims: the grid is scattered points, x0 and x1 their first coordinates
    pr = tables["probes"].copy()
    jitter = np.random.default_rng(1).uniform(-0.01, 0.01, len(pr))
    pr["x1"] = pr["x1"] + jitter
    t["probes"] = pr
    assert probe_trajectory(t, "grid2d") is None


def test_probe_target_column_variants():
    t = synthetic_tables(probe_target_kind=True)
    assert list(t["probes"].columns).count("target") == 1 and "y" in t["probes"].columns  # kind + value
    fig = probe_trajectory(t, "line1d", "mse")
    assert len(with_gid(fig, "probe_heatmap")) == 1


@pytest.mark.parametrize("task", ["line1d", "dist1d", "grid2d"])
def test_velocity_curves_under_the_loss_with_escapes(tables, task):
    from testbed.analyses.probes.figures import velocity_curves

    cells = tables["probes"][tables["probes"]["task"] == task][["cell"]].drop_duplicates()
    rows = cells.assign(run=0, seed=0, plateau=0, start=0.0, end=5.0, duration=5.0, level=1.0, drop=1.0, ended=True,
                        drop_step=7.0)
    fig = velocity_curves({**tables, "plateau_rows": rows}, task)
    lines = with_gid(fig, "velocity:all")
    assert len(lines) == len(cells)  # one run per method
    for ln in lines:
        y = ln.get_ydata()
        assert np.all(y > 0) and np.all(np.diff(y) <= 1e-12)  # the synthetic predictions settle: velocity falls
    escapes = with_gid(fig, "escape")
    assert len(escapes) == 2 * len(cells) and all(ln.get_xdata()[0] == 7.0 for ln in escapes)  # both panels
    top, bottom = [ax for ax in fig.axes if ax.get_visible()][:2]
    assert bottom.get_yscale() == "log" and top.get_xlim() == bottom.get_xlim()
