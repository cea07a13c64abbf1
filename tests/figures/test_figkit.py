"""Tests for the figures' shared pieces: `testbed.analyses.figkit` and `testbed.core.style`."""

from __future__ import annotations

import pandas as pd
import pytest
from figure_tables import STEPS_LIN, STEPS_LOG, png_ok
from matplotlib.ticker import NullFormatter

from testbed.analyses.attribution.figures import attribution_bars
from testbed.analyses.figkit import log_spaced, method_labels
from testbed.core.style import WIDTH_IN, Header, save, wrap


def test_log_spaced():
    assert log_spaced(STEPS_LOG)
    assert not log_spaced(STEPS_LIN)
    assert not log_spaced([0, 1, 2])


def test_labels_append_what_varies_within_a_task(tables):
    labs = method_labels(tables)
    assert set(labs["label"]) == {"mse", "ce"}
    t = {k: v.copy() for k, v in tables.items()}
    for name in ("history", "runs"):  # a second model for line1d's mse cell
        df = t[name]
        extra = df[(df["task"] == "line1d") & (df["method"] == "mse")].assign(cell="f" * 16, model="lowrank_r2")
        t[name] = pd.concat([df, extra], ignore_index=True)
    labs = method_labels(t)
    assert set(labs.loc[labs["task"] == "line1d", "label"]) == {"mse / mlp", "mse / lowrank_r2", "ce / mlp"}
    assert set(labs.loc[labs["task"] == "grid2d", "label"]) == {"mse", "ce"}


def test_save_png_and_svg(tables, tmp_path):
    fig = attribution_bars(tables)
    paths = save(fig, tmp_path / "sub" / "attr", formats=("png", "svg"))
    assert [p.name for p in paths] == ["attr.png", "attr.svg"]
    img = png_ok(paths[0].read_bytes())
    assert 1000 <= img.shape[1] <= 1200
    svg = paths[1].read_text()
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")


def test_save_writes_the_png_savefig_writes(tables, tmp_path):
    """`save` draws a PNG once (savefig draws a laid-out figure twice): the same bytes as
    ``savefig(dpi=DPI, facecolor="white")``, for the first figure of every analysis that draws
    from these tables (each figure family: constrained layout, tight layout, colorbars)."""
    from testbed.analyses.base import all_analyses
    from testbed.core.style import DPI

    one = {k: v[v["task"] == "line1d"] if "task" in v.columns else v for k, v in tables.items()}  # fewer figures
    drawn = 0
    for a in all_analyses():
        figs = a.figures(one) if a.figures is not None else []
        if not figs:
            continue
        figs[0].figure.savefig(tmp_path / f"{a.name}-savefig.png", format="png", dpi=DPI, facecolor="white")
        (ours,) = save(a.figures(one)[0].figure, tmp_path / f"{a.name}-save")  # the same figure, drawn anew
        assert ours.read_bytes() == (tmp_path / f"{a.name}-savefig.png").read_bytes(), a.name
        drawn += 1
    assert drawn >= 4


def test_wrap_keeps_spacing_and_breaks_parts_only_between_parts():
    line = "facts   |   more facts"
    assert wrap(line, 8.5) == [line]
    assert wrap("one two\nthree", 10) == ["one two three"]
    parts = ["x" * 40, "y" * 40, "z" * 40]
    lines = wrap(parts, 8.5, width_in=4.0)
    assert len(lines) > 1 and "   |   ".join(lines) == "   |   ".join(parts)
    assert Header("t", [line, parts]).meta == [line, *wrap(parts, Header.META, WIDTH_IN - 0.3)]


def _drop_and_save(build, tmp_path, figsize=(5, 3)) -> tuple[int, object, bool]:
    """Draw ``build(fig)`` twice in the house style: one copy through ``savefig``, the other
    through `drop_unseen_minor_ticks` and `save`. Returns how many minor tickers were dropped,
    what ``build`` returned for the second copy, and whether the two PNGs are the same bytes."""
    from matplotlib.figure import Figure

    from testbed.core.style import DPI, drop_unseen_minor_ticks, style

    def draw():
        with style():
            fig = Figure(figsize=figsize, layout="constrained")
            return fig, build(fig)

    fig, _ = draw()
    fig.savefig(tmp_path / "savefig.png", format="png", dpi=DPI, facecolor="white")
    fig, built = draw()
    dropped = drop_unseen_minor_ticks(fig)
    (ours,) = save(fig, tmp_path / "ours")
    return dropped, built, ours.read_bytes() == (tmp_path / "savefig.png").read_bytes()


def _quiet_and_shown(fig) -> dict:
    import matplotlib as mpl
    import numpy as np
    from matplotlib.ticker import LogFormatterSciNotation

    quiet, grid, labelled = fig.subplots(1, 3)
    for ax in (quiet, grid, labelled):
        ax.semilogy([1, 2, 3], [1e-4, 1e-2, 1.0])
    quiet.yaxis.set_minor_formatter(NullFormatter())  # as `figkit.log_ticks` leaves a log axis
    grid.yaxis.set_minor_formatter(NullFormatter())
    grid.grid(True, which="minor", axis="y")
    labelled.set_ylim(0.2, 0.9)  # under a decade: the minor ticks carry the labels
    labelled.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False))
    mesh = quiet.pcolormesh(np.array([[1e-3, 1.0]]), norm=mpl.colors.LogNorm())
    bar = fig.colorbar(mesh, ax=labelled)
    return {"quiet": quiet.yaxis, "grid": grid.yaxis, "labelled": labelled.yaxis, "bar": bar.ax.yaxis}


def test_minor_ticks_that_draw_nothing_are_dropped_and_the_image_is_the_same(tmp_path):
    """`save` drops the minor ticks of an axis where they draw nothing (marks off, no minor grid,
    no labels: the figures' log axes), which the layout would still make and measure, and
    keeps those that show: a log colour bar's marks, a minor grid, minor labels."""
    from matplotlib.ticker import NullLocator

    dropped, axes, same = _drop_and_save(_quiet_and_shown, tmp_path, figsize=(6, 3))
    assert dropped == 1
    assert isinstance(axes["quiet"].get_minor_locator(), NullLocator)
    assert not any(isinstance(axes[k].get_minor_locator(), NullLocator) for k in ("grid", "labelled", "bar"))
    assert same


def _shared_grid(fig):
    ax = fig.add_subplot()
    ax.semilogx([1, 10, 1000], [1, 2, 3])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", axis="x")
    ax.twinx().plot([1, 10, 1000], [3, 2, 1])  # the twin shares the x ticker, whose minor grid shows


def _hidden_major_labels(fig):
    ax = fig.add_subplot()
    ax.semilogy([1, 2, 3], [1e-4, 1e-2, 1.0])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="y", labelleft=False)  # major labels only: the empty minor ones place the label
    ax.set_ylabel("loss")


def _farther_minor_labels(fig):
    ax = fig.add_subplot()
    ax.semilogy([1, 2, 3], [1e-4, 1e-2, 1.0])
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(which="minor", pad=25)  # empty minor labels out beyond the major ones
    ax.set_ylabel("loss")


@pytest.mark.parametrize("build", [_shared_grid, _hidden_major_labels, _farther_minor_labels],
                         ids=lambda f: f.__name__.strip("_"))
def test_minor_ticks_that_show_or_move_something_are_kept(build, tmp_path):
    """Empty minor labels still mark their place, which places the axis label when no major
    label lies farther out; shared axes share one minor ticker, kept when any of them shows it."""
    dropped, _, same = _drop_and_save(build, tmp_path)
    assert dropped == 0
    assert same
