"""Tests for the task pictures in `testbed.report.taskplot`.

Every registered task (built-in or added later) must render, lay out without its
header, legends or axes running into each other, and save to a PNG that decodes to a
non-blank image. Kept small (a coarse `points`) so the file runs in seconds.
"""

from __future__ import annotations

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.contour import ContourSet

import testbed
from testbed.core.errors import ConfigError
from testbed.core.style import TRAIN_LINE, ood_color
from testbed.report.taskplot import plot_task, save_task_plot, split_intervals

POINTS = 300  # coarse but enough for every view; the default is 2000


_FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_figures():
    yield
    for fig in _FIGURES.values():
        plt.close(fig)
    _FIGURES.clear()


def figure_of(name: str):
    """`plot_task` of a task, drawn once per module run (rendering is the slow part)."""
    if name not in _FIGURES:
        _FIGURES[name] = plot_task(testbed.make_task(name), points=POINTS)
    return _FIGURES[name]


def _is_1d_view(task) -> bool:
    return task.dim != 2 and not (task.domain.kind == "integers" and task.dim == 1
                                  and task.target == "distribution")


def _legend_texts(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for leg in legends for t in leg.get_texts()]


def _spans(ax, split: str) -> list:
    return [p for p in ax.patches if p.get_gid() == f"split:{split}"]


@pytest.mark.parametrize("name", testbed.list_tasks())
def test_every_task_renders_lays_out_and_saves_a_png(name, tmp_path):
    task = testbed.make_task(name)
    fig = figure_of(name)

    # Header: the task name as the title, the description below it.
    texts = [t.get_text() for t in fig.texts]
    assert texts[0] == task.name
    assert texts.count(task.name) == 1  # drawn once
    assert task.description.split()[0] in " ".join(texts)
    # Every OOD split is named in a legend.
    legend = " ".join(_legend_texts(fig))
    for split in task.ood_splits:
        assert split in legend, f"{name}: split {split!r} missing from the legend"

    # Save first: the layout checks below then reuse the drawn text.
    path = tmp_path / f"{name}.png"
    FigureCanvasAgg(fig).print_png(path)

    # Layout: everything inside the figure, and the header above every axes.
    renderer = fig.canvas.get_renderer()
    fig_box = fig.bbox
    header_bottom = min(t.get_window_extent(renderer).y0 for t in fig.texts)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.get_tightbbox(renderer)
        assert box.y1 <= header_bottom + 1, f"{name}: an axes runs into the header"
        assert box.x0 >= fig_box.x0 - 1 and box.x1 <= fig_box.x1 + 1, f"{name}: an axes leaves the figure"
        assert box.y0 >= fig_box.y0 - 1, f"{name}: an axes leaves the figure"
    for leg in list(fig.legends):
        lb = leg.get_window_extent(renderer)
        assert fig_box.x0 - 1 <= lb.x0 and lb.x1 <= fig_box.x1 + 1 and lb.y0 >= fig_box.y0 - 1
        for ax in fig.axes:
            if ax.get_visible():
                assert not lb.overlaps(ax.get_window_extent(renderer)), f"{name}: the legend covers an axes"
    for ax in fig.axes:  # legends beside a 1-D plot sit outside its data area
        leg = ax.get_legend()
        if leg is not None:
            assert not leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))

    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert 900 <= w <= 1200 and 350 <= h <= 1400, f"{name}: unexpected size {w}x{h}"
    rgb = img[..., :3].reshape(-1, 3)
    assert rgb.std() > 0.05, f"{name}: the image is (nearly) a single colour"
    q = (rgb * 255).round().astype(np.uint32)
    colours = np.unique((q[:, 0] << 16) | (q[:, 1] << 8) | q[:, 2])
    assert len(colours) > 100, f"{name}: too few colours"
    # Some of it is coloured (data, shading), not only black text on white.
    saturation = rgb.max(axis=1) - rgb.min(axis=1)
    assert (saturation > 0.08).mean() > 0.02, f"{name}: almost nothing coloured"

    if _is_1d_view(task):
        _check_split_shading(task, fig.axes[0])


def _check_split_shading(task, ax) -> None:
    """A 1-D view shades one span per contiguous run of each split, and runs never overlap."""
    runs = {s: split_intervals(task, s, points=POINTS) for s in task.splits}
    for split, intervals in runs.items():
        spans = _spans(ax, split)
        assert len(spans) == len(intervals) >= 1, f"{task.name}: {split}: {len(spans)} spans, {len(intervals)} runs"
        got = sorted((p.get_x(), p.get_x() + p.get_width()) for p in spans)
        np.testing.assert_allclose(got, sorted(intervals))
    allruns = sorted(iv for ivs in runs.values() for iv in ivs)
    for (_, hi), (lo, _) in zip(allruns, allruns[1:], strict=False):
        assert lo >= hi - 1e-9


@pytest.mark.parametrize(("name", "split", "expected"), [
    ("sine_line", "extrapolate", [(-2.0, -1.0), (1.0, 2.0)]),
    ("sine_line", "train", [(-1.0, 1.0)]),
    ("step", "boundary", [(-0.1, 0.1)]),
    ("step", "extrapolate", [(-2.0, -1.0), (1.0, 2.0)]),
    ("two_slopes", "near", [(-2.0, -1.0), (1.0, 2.0)]),
    ("two_slopes", "far", [(-3.0, -2.0), (2.0, 3.0)]),
    ("residue_mod3", "held_out", [(99.5, 119.5)]),
    ("residue_mod3", "larger", [(199.5, 299.5)]),
    ("residue_mod3", "train", [(-0.5, 99.5), (119.5, 199.5)]),
    ("parity", "larger", [(255.5, 511.5)]),
])
def test_split_intervals_match_the_spec(name, split, expected):
    task = testbed.make_task(name)
    step = (task.domain.high[0] - task.domain.low[0]) / (POINTS - 1)
    got = split_intervals(task, split, points=POINTS)
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, expected, atol=step)


def test_sine_line_shows_two_extrapolation_regions_and_both_candidates():
    fig = figure_of("sine_line")
    ax = fig.axes[0]
    assert len(_spans(ax, "extrapolate")) == 2
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() not in ("-", "None")]
    assert len(dashed) == 2  # sine_everywhere and line_everywhere
    assert {"sine", "line", "sine_everywhere", "line_everywhere", "train", "extrapolate (OOD)"} <= set(
        _legend_texts(fig))


def test_two_dim_views_outline_each_split_in_its_own_colour():
    ax = figure_of("radial").axes[0]
    assert ax.images, "expected a heatmap"
    lines = [c for c in ax.collections if isinstance(c, ContourSet) and not c.filled]
    colours = {to_hex(c.get_edgecolor()[0]) for c in lines}
    # train, boundary_ring, extrapolate, and white piece boundaries
    assert {to_hex(TRAIN_LINE), to_hex(ood_color(0)), to_hex(ood_color(1)), "#ffffff"} <= colours
    hatched = [c for c in ax.collections if isinstance(c, ContourSet) and c.filled]
    assert len(hatched) == 2  # one hatch per OOD split


def test_save_task_plot_writes_png_and_svg_and_refuses_other_suffixes(tmp_path):
    task = testbed.make_task("step")
    png = save_task_plot(task, tmp_path / "a" / "b" / "step.png", points=POINTS)
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_task_plot(task, tmp_path / "step.svg", points=POINTS)
    assert b"<svg" in svg.read_bytes()[:2000]
    with pytest.raises(ConfigError, match="png or .svg"):
        save_task_plot(task, tmp_path / "step.jpg")
