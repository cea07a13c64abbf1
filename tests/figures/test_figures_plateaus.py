"""Tests for the loss curves (`testbed.analyses.plateaus.figures`) on synthetic suite tables."""

from __future__ import annotations

import pytest
from figure_tables import TASKS, visible_axes, with_gid

from testbed.analyses.plateaus.figures import loss_curves


@pytest.mark.parametrize("task", list(TASKS))
def test_loss_curves_panels(tables, task):
    fig = loss_curves(tables, task)
    splits = TASKS[task][1]
    axes = visible_axes(fig)
    assert len(axes) == len(splits)
    assert [ax.get_title().split(" (")[0] for ax in axes] == splits
    target = TASKS[task][0]
    assert all(ax.get_yscale() == ("linear" if target == "class" else "log") for ax in axes)
    assert all(ax.get_xscale() == ("symlog" if task == "dist1d" else "linear") for ax in axes)
    n_methods = len(TASKS[task][4])
    assert all(len(ax.get_lines()) == n_methods for ax in axes)  # one mean line per method
    assert all(len(ax.collections) == n_methods for ax in axes)  # one CI band per method


def test_loss_curves_marks_plateaus(tables):
    cells = tables["runs"].query("task == 'line1d'")[["cell", "run", "seed"]]
    pl = cells.assign(piece="all", start=10.0, end=40.0)
    fig = loss_curves(tables, "line1d", plateaus=pl)
    assert len(with_gid(fig, "plateau")) == len(pl) * len(TASKS["line1d"][1])
