"""Tests for the OOD figures (`testbed.analyses.ood.figures`) on synthetic suite tables."""

from __future__ import annotations

import numpy as np
from figure_tables import SEEDS, TASKS, visible_axes

from testbed.analyses.ood.figures import ood_vs_train, piece_heatmap


def test_ood_vs_train(tables):
    fig = ood_vs_train(tables)
    axes = visible_axes(fig)
    assert [ax.get_title() for ax in axes] == list(TASKS)
    for ax, (task, (target, *_rest)) in zip(axes, TASKS.items(), strict=True):
        assert ax.get_xscale() == ax.get_yscale() == ("linear" if target == "class" else "log")
        seeds = [c for c in ax.collections if str(c.get_gid()).startswith("seed:")]
        assert sum(len(c.get_offsets()) for c in seeds) == SEEDS * len(TASKS[task][4])
        (diag,) = ax.get_lines()
        x, y = diag.get_data()
        assert np.allclose(x, y)


def test_piece_heatmap(tables):
    fig = piece_heatmap(tables)
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2 and len(fig.axes) == 3  # train, OOD, colour bar
    n_train = sum(len(v[2]) for v in TASKS.values())
    n_ood = sum(len(v[2]) * (len(v[1]) - 1) for v in TASKS.values())
    assert [len(ax.get_yticklabels()) for ax in heat] == [n_train, n_ood]
    assert [t.get_text() for t in heat[0].get_xticklabels()] == ["ce", "mse"]
    img = heat[0].images[0].get_array()
    assert img.shape == (n_train, 2)
    assert img.mask[-1, 1]  # cls2d has no mse cell: blank
