"""A picture of a task: its function, pieces, splits and candidate behaviours at a glance.

`plot_task` picks a view from the task's domain and target:

* 1-D box, scalar or class targets: the function over the whole domain, each piece in
  its own colour, the train region shaded light grey, each OOD split shaded in its
  own colour, candidate functions as dashed lines. Vector targets: one line per
  output dim. Distribution targets: class probabilities (top) and logits (bottom).
* 1-D integers: target against the integer value, coloured by piece, same shading.
  Distribution targets: the rows x classes probability and logit matrices, with
  the OOD rows marked.
* 2-D box or integers: a heatmap of the target (one per output dim for vectors,
  the label for classes), piece boundaries as contours, each split outlined
  (train solid, OOD dashed). Integer grids mark OOD cells instead of outlining.
* More dims: a 1-D slice along x0 with the other coordinates at the domain centre.

`save_task_plot` writes the picture as PNG or SVG. The 1-D views are drawn here, the
2-D views and the rows x classes matrices in `testbed.report.task_fields`; the task's
evaluation, header and legend helpers are in `testbed.report.task_base`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from testbed.core.errors import ConfigError
from testbed.core.style import (
    DPI,
    TRAIN_SHADE,
    cell_edges,
    figure,
    ood_color,
    run_bounds,
    style,
    tight_below,
)
from testbed.report.task_base import (
    Evaluated,
    evaluate,
    legend_right,
    line_points,
    section,
    softmax,
    split_intervals,
    task_header,
)
from testbed.report.task_fields import plot_2d, plot_rows_matrix
from testbed.tasks.task import Task

__all__ = ["evaluate", "plot_task", "save_task_plot", "split_intervals"]

CANDIDATE_COLORS = ("#333333", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")
CANDIDATE_DASHES = ((0, (5, 2.5)), (0, (2, 2)), (0, (7, 2, 1.5, 2)), (0, (3, 1.5, 1, 1.5)))


def plot_task(task: Task, *, points: int = 2000) -> Figure:
    """Draw a task: its function, pieces, splits and candidates, titled with its name and description.

    Args:
        task: the task.
        points: resolution: samples along x for 1-D views (integer domains show every
            value up to this many); 2-D box heatmaps use ``points // 5`` cells a side
            (clipped to 60..500).

    Returns:
        A matplotlib Figure (not registered with pyplot; ``fig.savefig`` or
        `save_task_plot` to write it).
    """
    if points < 2:
        raise ConfigError(f"plot_task: points={points} must be at least 2")
    dom = task.domain
    with style(dense=False):
        if dom.dim == 2:
            return plot_2d(task, points)
        if dom.kind == "integers" and dom.dim == 1 and task.target == "distribution":
            return plot_rows_matrix(task, points)
        return _plot_1d(task, points)


def save_task_plot(task: Task, path: str | Path, *, points: int = 2000) -> Path:
    """Write `plot_task`'s picture to ``path`` (.png or .svg), creating its folder; return the path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ConfigError(f"save_task_plot: unsupported file type {path.suffix!r}; use .png or .svg")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = plot_task(task, points=points)
    fig.savefig(path, format=fmt, dpi=DPI, facecolor="white")
    return path


# -- 1-D views --------------------------------------------------------------------

def piece_colors(n: int) -> list:
    return list(sns.color_palette("deep", max(n, 1)))


def _shade_splits(ax, task: Task, ev: Evaluated, xs: np.ndarray, integer: bool) -> list:
    """Shade each split's runs along x (axvspan, gid 'split:NAME'); return legend handles."""
    edges = cell_edges(xs, integer)
    handles = []
    for i, name in enumerate(task.splits):
        train = name == "train"
        color = TRAIN_SHADE if train else ood_color(i - 1)
        alpha = 0.16 if train else 0.2
        runs = run_bounds(ev.splits[name])
        for a, b in runs:
            ax.axvspan(edges[a], edges[b + 1], facecolor=color, alpha=alpha, lw=0, zorder=0,
                       gid=f"split:{name}")
        label = name if train else f"{name} (OOD)"
        if not runs:
            label += " - not on this slice"
        handles.append(Patch(facecolor=color, alpha=min(1.0, alpha * 2.2), edgecolor="none", label=label))
    return handles


def _piece_labels_above(ax, task: Task, ev: Evaluated, xs: np.ndarray, integer: bool, colors) -> None:
    """Piece boundaries as dotted verticals and piece names above the axes (views not coloured by piece)."""
    if len(task.pieces) < 2:
        return
    edges = cell_edges(xs, integer)
    span = edges[-1] - edges[0]
    for k, name in enumerate(task.pieces):
        for a, b in run_bounds(ev.piece == k):
            lo, hi = edges[a], edges[b + 1]
            if a > 0:
                ax.axvline(lo, color="#555555", lw=0.9, ls=":", zorder=1)
            if (hi - lo) / span > 0.06:
                ax.text((lo + hi) / 2, 1.01, name, transform=ax.get_xaxis_transform(), ha="center",
                        va="bottom", fontsize=8.5, color=colors[k], fontweight="bold", clip_on=False)


def _candidate_style(j: int) -> dict:
    return dict(color=CANDIDATE_COLORS[j % len(CANDIDATE_COLORS)], ls=CANDIDATE_DASHES[j % len(CANDIDATE_DASHES)],
                lw=1.4, zorder=4, alpha=0.95)


def _broken(xs: np.ndarray, y: np.ndarray, piece: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A line's points with a gap wherever the piece changes (no vertical connector at a jump)."""
    cut = np.flatnonzero(piece[1:] != piece[:-1]) + 1
    return np.insert(xs, cut, np.nan), np.insert(np.asarray(y, np.float64), cut, np.nan)


def _ylim(ax, *arrays) -> None:
    vals = np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return
    lo, hi = vals.min(), vals.max()
    pad = 0.06 * (hi - lo) if hi > lo else 0.5
    ax.set_ylim(lo - pad, hi + pad)


def _plot_1d(task: Task, points: int) -> Figure:
    integer = task.domain.kind == "integers"
    raw, xs, note = line_points(task, points)
    ev = evaluate(task, raw)
    header = task_header(task, note)
    xlabel = "x0" if task.dim > 1 else "x"
    if integer:
        xlabel += " (integer value)"
    if task.target == "distribution":
        return _plot_1d_distribution(task, ev, xs, integer, header, xlabel)

    fig = figure(header, 4.4, constrained=False)
    ax = fig.add_subplot(1, 1, 1)
    split_handles = _shade_splits(ax, task, ev, xs, integer)
    pcolors = piece_colors(len(task.pieces))
    handles: list = []
    y = ev.y.astype(np.float64)
    if task.target == "class":
        y = np.where(ev.y < 0, np.nan, y)
    dense = len(xs) > 120
    if y.ndim == 1:  # scalar or class: colour by piece
        handles.append(section("pieces"))
        for k, name in enumerate(task.pieces):
            m = ev.piece == k
            if integer:
                ms = 9 if dense else 22
                ax.scatter(xs[m], y[m], s=ms, color=pcolors[k], zorder=3, lw=0, label=name)
                if not dense:
                    ax.vlines(xs[m], 0, y[m], color=pcolors[k], lw=0.8, alpha=0.6, zorder=2)
                handles.append(Line2D([], [], marker="o", ls="none", color=pcolors[k], label=name))
            else:
                ax.plot(xs, np.where(m, y, np.nan), color=pcolors[k], lw=3.2, zorder=3, solid_capstyle="butt")
                handles.append(Line2D([], [], color=pcolors[k], lw=3.2, label=name))
    else:  # vector: one line per output dim, pieces marked above
        dcolors = list(sns.color_palette("dark", y.shape[1]))
        _piece_labels_above(ax, task, ev, xs, integer, pcolors)
        handles.append(section("output dims"))
        for j in range(y.shape[1]):
            if integer:
                ax.scatter(xs, y[:, j], s=9 if dense else 20, color=dcolors[j], zorder=3, lw=0)
                handles.append(Line2D([], [], marker="o", ls="none", color=dcolors[j], label=f"target[{j}]"))
            else:
                ax.plot(*_broken(xs, y[:, j], ev.piece), color=dcolors[j], lw=2.2, zorder=3)
                handles.append(Line2D([], [], color=dcolors[j], lw=2.2, label=f"target[{j}]"))
    if ev.candidates:
        handles.append(section("candidates"))
    for j, (name, v) in enumerate(ev.candidates.items()):
        st = _candidate_style(j)
        if integer:  # thin, on top of the points: visible even where it agrees with a piece
            st["lw"] = 1.2
        if v.ndim == 1:
            ax.plot(xs, v, **st)
        else:
            for d in range(v.shape[1]):
                ax.plot(xs, v[:, d], **{**st, "color": list(sns.color_palette("dark", v.shape[1]))[d]})
            st = {**st, "color": "#444444"}
        handles.append(Line2D([], [], label=name, **{k: st[k] for k in ("color", "ls", "lw")}))
    handles.append(section("splits"))
    handles.extend(split_handles)
    _ylim(ax, y, *ev.candidates.values())
    ax.set_xlim(cell_edges(xs, integer)[0], cell_edges(xs, integer)[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("class" if task.target == "class" else "target")
    if task.target == "class":
        ax.yaxis.get_major_locator().set_params(integer=True)
    legend_right(ax, handles)
    return tight_below(fig, header)


def _plot_1d_distribution(task, ev, xs, integer, header, xlabel) -> Figure:
    logits = ev.y.astype(np.float64)
    probs = softmax(logits)
    k = logits.shape[1]
    ccolors = list(sns.color_palette("colorblind", k)) if k <= 10 else list(sns.color_palette("husl", k))
    pcolors = piece_colors(len(task.pieces))
    fig = figure(header, 6.2, constrained=False)
    ax_p, ax_l = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=(3, 2)))
    split_handles = _shade_splits(ax_p, task, ev, xs, integer)
    _shade_splits(ax_l, task, ev, xs, integer)
    _piece_labels_above(ax_p, task, ev, xs, integer, pcolors)
    _piece_labels_above_lines_only(ax_l, task, ev, xs, integer)
    handles: list = [section("classes")]
    for j in range(k):
        kw = dict(color=ccolors[j], lw=2.2, zorder=3)
        if integer:
            ax_p.scatter(xs, probs[:, j], s=10, color=ccolors[j], zorder=3, lw=0)
            ax_l.scatter(xs, logits[:, j], s=10, color=ccolors[j], zorder=3, lw=0)
        else:
            ax_p.plot(*_broken(xs, probs[:, j], ev.piece), **kw)
            ax_l.plot(*_broken(xs, logits[:, j], ev.piece), **kw)
        if j < 12:
            handles.append(Line2D([], [], label=f"class {j}", **kw))
    if k > 12:
        handles.append(section(f"... {k} classes in all"))
    if ev.candidates:
        handles.append(section("candidates (probabilities)"))
    for j, (name, v) in enumerate(ev.candidates.items()):
        st = _candidate_style(j)
        cp = softmax(np.asarray(v, np.float64).reshape(len(xs), -1))
        for c in range(cp.shape[1]):
            ax_p.plot(xs, cp[:, c], **{**st, "color": ccolors[c % len(ccolors)], "lw": 1.2})
        handles.append(Line2D([], [], label=name, color="#444444", ls=st["ls"], lw=1.2))
    handles.append(section("splits"))
    handles.extend(split_handles)
    ax_p.set_ylim(-0.03, 1.03)
    ax_p.set_ylabel("probability (softmax)")
    ax_l.set_ylabel("logit")
    _ylim(ax_l, logits)
    ax_l.set_xlabel(xlabel)
    edges = cell_edges(xs, integer)
    ax_l.set_xlim(edges[0], edges[-1])
    legend_right(ax_p, handles)
    return tight_below(fig, header)


def _piece_labels_above_lines_only(ax, task, ev, xs, integer) -> None:
    edges = cell_edges(xs, integer)
    for k in range(len(task.pieces)):
        for a, _ in run_bounds(ev.piece == k):
            if a > 0:
                ax.axvline(edges[a], color="#555555", lw=0.9, ls=":", zorder=1)
