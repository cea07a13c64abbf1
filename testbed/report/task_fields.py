"""Task pictures of 2-D domains and of 1-D integer distributions (`testbed.report.taskplot`).

* 2-D box or integers: a heatmap of the target (one per output dim for vectors, the
  label for classes), piece boundaries as contours, each split outlined (train solid,
  OOD dashed). Integer grids mark OOD cells instead of outlining.
* 1-D integers with distribution targets: the rows x classes probability and logit
  matrices, with the OOD rows marked.
"""

from __future__ import annotations

import math

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from mpl_toolkits.axes_grid1 import make_axes_locatable

from testbed.core.style import (
    TRAIN_LINE,
    TRAIN_SHADE,
    WIDTH_IN,
    cell_edges,
    figure,
    halo,
    ood_color,
    run_bounds,
)
from testbed.report.task_base import (
    Evaluated,
    evaluate,
    finish_with_bottom_legend,
    line_points,
    softmax,
    task_header,
)
from testbed.tasks.task import Task

__all__ = ["plot_2d", "plot_rows_matrix"]

OOD_MARKERS = ("x", "o", "+", "s", "^", "D", "v")
HALO = halo(width=3.2)  # wider than the suite figures': these lines are drawn over busy heatmaps


# -- 1-D integer distribution: a rows x classes matrix --------------------------------

def _class_ticks(ax, k: int) -> None:
    step = 1 if k <= 16 else 2 if k <= 32 else max(1, k // 12)
    ax.set_xticks(range(0, k, step))
    ax.tick_params(axis="x", labelsize=7.5)


def plot_rows_matrix(task: Task, points: int) -> Figure:
    raw, xs, _ = line_points(task, points)
    ev = evaluate(task, raw)
    logits = ev.y.astype(np.float64)
    probs = softmax(logits)
    rows, k = logits.shape
    header = task_header(task)
    fig = figure(header, float(np.clip(2.0 + rows * 0.12, 3.6, 7.0)), constrained=False)
    ax_p, ax_l = fig.subplots(1, 2)
    edges = cell_edges(xs, True)
    extent = (-0.5, k - 0.5, edges[-1], edges[0])  # row 0 at the top, as in a matrix
    im_p = ax_p.imshow(probs, aspect="auto", extent=extent, cmap="mako_r", vmin=0, interpolation="nearest")
    lim = float(np.nanmax(np.abs(logits))) or 1.0
    im_l = ax_l.imshow(logits, aspect="auto", extent=extent, cmap="vlag", vmin=-lim, vmax=lim,
                       interpolation="nearest")
    for ax, im, label, title in ((ax_p, im_p, "probability", "target probabilities (softmax of the logits)"),
                                 (ax_l, im_l, "logit", "target logits")):
        cax = make_axes_locatable(ax).append_axes("right", size="4%", pad=0.06)
        fig.colorbar(im, cax=cax, label=label)
        ax.set_title(title)
        ax.set_xlabel("class")
        ax.grid(False)
        _class_ticks(ax, k)
    # Split membership: a strip left of each matrix (it carries the row ticks) and outlines on both.
    colors = [TRAIN_SHADE] + [ood_color(i) for i in range(len(task.splits) - 1)]
    member = np.full(rows, -1)
    for i, name in enumerate(task.splits):
        member[ev.splits[name] & (member < 0)] = i
    cmap = ListedColormap(["#ffffff"] + [mpl.colors.to_hex(c) for c in colors])
    for ax, ticks in ((ax_p, True), (ax_l, False)):
        strip = make_axes_locatable(ax).append_axes("left", size="3%", pad=0.04)
        strip.imshow((member + 1)[:, None], aspect="auto", extent=(0, 1, extent[2], extent[3]), cmap=cmap,
                     vmin=-0.5, vmax=len(colors) + 0.5, interpolation="nearest")
        strip.set_xticks([])
        strip.grid(False)
        ax.tick_params(axis="y", labelleft=False, left=False)
        if not ticks:
            strip.set_yticks([])
            continue
        strip.set_ylabel("row (input integer)")
        if rows <= 40:
            strip.set_yticks(xs)
            strip.set_yticklabels([str(int(v)) for v in xs], fontsize=7)
            for lbl, m in zip(strip.get_yticklabels(), member, strict=True):
                if m > 0:
                    lbl.set_color(colors[m])
                    lbl.set_fontweight("bold")
        else:
            strip.yaxis.get_major_locator().set_params(integer=True)
    handles = [Patch(facecolor=TRAIN_SHADE, label="train rows")]
    for i, name in enumerate(task.ood_splits):
        c = ood_color(i)
        runs = run_bounds(ev.splits[name])
        if len(runs) <= 64:
            for a, b in runs:
                for ax in (ax_p, ax_l):
                    ax.add_patch(Rectangle((-0.5, edges[a]), k, edges[b + 1] - edges[a], fill=False, ec=c,
                                           lw=1.6, ls=(0, (4, 2)), zorder=5))
        handles.append(Patch(facecolor=c, edgecolor=c, label=f"{name} (OOD rows, outlined)"))
    return finish_with_bottom_legend(fig, header, handles, ncol=len(handles))



# -- 2-D views -----------------------------------------------------------------------

def _grid_2d(task: Task, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Per-axis values (a for x0, b for x1) and raw points [len(b) * len(a), 2], x0 fastest."""
    dom = task.domain
    integer = dom.kind == "integers"
    axes = []
    for lo, hi in zip(dom.low, dom.high, strict=True):
        if integer:
            v = np.arange(int(lo), int(hi))
            if len(v) > 400:
                v = v[np.linspace(0, len(v) - 1, 400).round().astype(int)]
        else:
            v = np.linspace(lo, hi, int(np.clip(points // 5, 60, 500)))
        axes.append(v.astype(np.float64))
    a, b = axes
    g0, g1 = np.meshgrid(a, b, indexing="xy")  # [len(b), len(a)]: rows are x1, columns x0
    raw = np.stack([g0.ravel(), g1.ravel()], axis=-1).astype(np.float32)
    return a, b, raw, integer


def _panels_2d(task: Task, ev: Evaluated, shape) -> list[tuple[str, np.ndarray, str]]:
    """(title, image [len(b), len(a)], kind) per panel; kind: continuous | class | prob."""
    y = ev.y
    if task.target == "scalar":
        panels = [("target", y.reshape(shape).astype(np.float64), "continuous")]
        # Candidates side by side with the target, on its colour scale (vector tasks: too many panels).
        panels += [(f"candidate: {c}", v.reshape(shape), "continuous")
                   for c, v in list(ev.candidates.items())[:2]]
        return panels
    if task.target == "class":
        return [("class label", np.where(y < 0, np.nan, y).reshape(shape).astype(np.float64), "class")]
    if task.target == "vector":
        return [(f"target[{j}]", y[:, j].reshape(shape).astype(np.float64), "continuous")
                for j in range(y.shape[1])]
    probs = softmax(y.astype(np.float64))
    if task.out_dim <= 3:
        return [(f"P(class {j})", probs[:, j].reshape(shape), "prob") for j in range(task.out_dim)]
    return [("most likely class", np.argmax(probs, -1).reshape(shape).astype(np.float64), "class")]


def _smooth(mask: np.ndarray) -> np.ndarray:
    """A binary mask blurred by about a cell, so its 0.5 contour is smooth rather than a staircase."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(mask.astype(np.float64), sigma=1.0, mode="nearest")


def _set_hatch_color(cs, color) -> None:
    if hasattr(cs, "set_hatchcolor"):
        cs.set_hatchcolor(color)
    else:  # matplotlib < 3.10: hatches take the edge colour
        cs.set_edgecolor(color)
    cs.set_linewidth(0)


def plot_2d(task: Task, points: int) -> Figure:
    a, b, raw, integer = _grid_2d(task, points)
    shape = (len(b), len(a))
    ev = evaluate(task, raw)
    panels = _panels_2d(task, ev, shape)
    header = task_header(task)
    n_cand = sum(title.startswith("candidate: ") for title, _, _ in panels)
    if n_cand:  # the target large on the left, candidates small on the right
        fig = figure(header, 5.6, constrained=False)
        gs = fig.add_gridspec(2, 2, width_ratios=(2.0, 1.0))
        axes = [fig.add_subplot(gs[:, 0])] + [fig.add_subplot(gs[r, 1]) for r in range(n_cand)]
    else:
        ncols = min(len(panels), 3)
        nrows = math.ceil(len(panels) / ncols)
        img_h = min((WIDTH_IN - 0.3) / ncols - 1.0, 5.2)
        fig = figure(header, nrows * (img_h + 0.85) + 0.1, constrained=False)
        axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for ax in axes[len(panels):]:
            ax.set_visible(False)
    ea, eb = cell_edges(a, integer), cell_edges(b, integer)
    extent = (ea[0], ea[-1], eb[0], eb[-1])
    cont = [v for _, v, kind in panels if kind == "continuous"]
    vlim = None
    if cont:  # continuous panels (vector dims, target and candidates) share one colour scale
        allv = np.concatenate([c.ravel() for c in cont])
        vlim = (float(np.nanmin(allv)), float(np.nanmax(allv)))
        if vlim[0] == vlim[1]:
            vlim = (vlim[0] - 0.5, vlim[1] + 0.5)
    piece_img = ev.piece.reshape(shape)
    g0, g1 = np.meshgrid(a, b, indexing="xy")
    mark_cells = integer and len(a) * len(b) <= 4096
    masks = {name: ev.splits[name].reshape(shape) for name in task.splits}
    for ax, (title, img, kind) in zip(axes, panels, strict=False):
        if kind == "class":
            k = task.out_dim
            pal = sns.color_palette("husl", k) if k > 10 else sns.color_palette("colorblind", k)
            im = ax.imshow(img, origin="lower", extent=extent, aspect="auto", interpolation="nearest",
                           cmap=ListedColormap([mpl.colors.to_hex(c) for c in pal]),
                           norm=BoundaryNorm(np.arange(-0.5, k + 0.5), k))
            cb_label = "class"
        elif kind == "prob":
            im = ax.imshow(img, origin="lower", extent=extent, cmap="mako_r", vmin=0, vmax=1, aspect="auto",
                           interpolation="nearest")
            cb_label = "probability"
        else:
            im = ax.imshow(img, origin="lower", extent=extent, cmap="viridis", vmin=vlim[0], vmax=vlim[1],
                           aspect="auto", interpolation="nearest")
            cb_label = "target"
        small = title.startswith("candidate: ")
        if small:  # same colour scale as the target panel: no colour bar of its own
            ax.tick_params(labelsize=7.5)
            cb = None
        else:
            cax = make_axes_locatable(ax).append_axes("right", size="4.5%", pad=0.06)
            cb = fig.colorbar(im, cax=cax, label=cb_label)
        if kind == "class":
            k = task.out_dim
            cb.set_ticks(np.arange(0, k, 1 if k <= 12 else max(2, k // 8)))
        if len(task.pieces) > 1 and not mark_cells:  # piece boundaries
            for p in range(len(task.pieces)):
                m = piece_img == p
                if 0 < m.mean() < 1:
                    ax.contour(g0, g1, _smooth(m), levels=[0.5], colors="white", linewidths=1.1, zorder=3)
        if mark_cells:
            _mark_split_cells(ax, task, masks, g0, g1, len(a))
        else:
            _outline_splits(ax, task, masks, g0, g1)
        if len(task.pieces) > 1 and not integer and kind != "class" and not small:
            _label_pieces(ax, task, piece_img, masks, g0, g1)
        ax.set_title(title, fontsize=9 if small else None)
        ax.set_xlabel("x0", fontsize=8 if small else None, labelpad=1 if small else None)
        ax.set_ylabel("x1", fontsize=8 if small else None, labelpad=1 if small else None)
        ax.grid(False)
        if not integer and _square(extent):
            ax.set_aspect("equal", adjustable="box")
    handles = []
    if len(task.pieces) > 1 and not mark_cells:
        handles.append(Line2D([], [], color="white", lw=1.1, label="piece boundary",
                              path_effects=halo("#777777", 2.8)))
    if mark_cells:
        handles.append(Patch(facecolor="none", edgecolor="#999999", label="unmarked cells: train"))
        for i, name in enumerate(task.ood_splits):
            handles.append(Line2D([], [], ls="none", marker=OOD_MARKERS[i % len(OOD_MARKERS)],
                                  color=_marker_color(i), label=f"{name} (OOD, faded and marked)"))
    else:
        handles.append(Line2D([], [], color=TRAIN_LINE, lw=1.7, label="train region", path_effects=HALO))
        for i, name in enumerate(task.ood_splits):
            handles.append(Line2D([], [], color=ood_color(i), lw=2.0, ls=(0, (4, 2)), path_effects=HALO,
                                  label=f"{name} (OOD, hatched)"))
    return finish_with_bottom_legend(fig, header, handles, ncol=min(len(handles), 4))


def _outline_splits(ax, task, masks, g0, g1) -> None:
    """Train outlined solid; each OOD split outlined dashed and lightly hatched in its colour."""
    for i, name in enumerate(task.splits):
        m = masks[name]
        if not (0 < m.mean() < 1):
            continue
        sm = _smooth(m)
        if name == "train":
            ax.contour(g0, g1, sm, levels=[0.5], colors=[TRAIN_LINE], linewidths=1.7, linestyles=["solid"],
                       zorder=5).set_path_effects(HALO)
            continue
        c = ood_color(i - 1)
        with mpl.rc_context({"hatch.linewidth": 0.6}):
            hatch = ax.contourf(g0, g1, sm, levels=[0.5, 2.0], colors="none", hatches=["\\\\\\"], zorder=4)
        _set_hatch_color(hatch, mpl.colors.to_rgba(c, 0.55))
        ax.contour(g0, g1, sm, levels=[0.5], colors=[c], linewidths=2.0, linestyles=[(0, (4, 2))],
                   zorder=6).set_path_effects(HALO)


def _square(extent) -> bool:
    """Whether a 2-D box is close enough to square to draw with equal axis scales."""
    w, h = extent[1] - extent[0], extent[3] - extent[2]
    return 0.5 <= w / h <= 2


def _marker_color(i: int) -> str:
    return "#111111" if i == 0 else ood_color(i)


def _mark_split_cells(ax, task, masks, g0, g1, ncells_x) -> None:
    """Integer grids: fade OOD cells with a white veil and mark them (one marker per split)."""
    veil = np.zeros(g0.shape + (4,))
    size = float(np.clip(900 / ncells_x, 3, 40))
    for i, name in enumerate(task.ood_splits):
        m = masks[name]
        veil[m] = (1, 1, 1, 0.5)
        ax.scatter(g0[m], g1[m], marker=OOD_MARKERS[i % len(OOD_MARKERS)], s=size, color=_marker_color(i),
                   lw=0.9, zorder=6)
    ax.imshow(veil, origin="lower", extent=ax.images[0].get_extent(), aspect="auto", interpolation="nearest",
              zorder=4)


def _label_pieces(ax, task, piece_img, masks, g0, g1) -> None:
    """Write each piece's name in the most open spot of its region (away from every drawn line)."""
    from scipy.ndimage import distance_transform_edt

    lines = np.zeros(piece_img.shape, bool)
    for img in [piece_img, *masks.values()]:
        lines[:, 1:] |= img[:, 1:] != img[:, :-1]
        lines[1:, :] |= img[1:, :] != img[:-1, :]
    away = distance_transform_edt(~lines)
    edge = distance_transform_edt(np.pad(np.ones_like(lines), 1, constant_values=False))[1:-1, 1:-1]
    ny, nx = piece_img.shape
    for p, name in enumerate(task.pieces):
        m = piece_img == p
        if not m.any():
            continue
        score = np.where(m, np.minimum(away, edge * 1.5), -1.0)
        j, i = np.unravel_index(np.argmax(score), m.shape)
        ax.text(g0[j, i], g1[j, i], name, ha="center", va="center", fontsize=8.5, color="#111111", zorder=8,
                bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="none", alpha=0.8))
