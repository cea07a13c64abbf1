"""The 2-D layout of `probe_trajectory`: per method the predicted field over (x0, x1) at 4
steps, the target field, and the loss of the same runs below.

Probes on a full grid are drawn as cells; probes on part of an integer lattice as cells
with the missing ones blank; anything else (more than 2 input dims) is no picture
(`grid_layout` says "scatter").
"""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.analyses.figkit import legend, suite_figure
from testbed.analyses.probes.runs import (
    Cube,
    class_ticks,
    cube_values,
    draw_run_curves,
    is_integer_axis,
    split_label,
    traj_meta,
)
from testbed.core.style import HALO, TRAIN_LINE, cell_edges, split_colors

__all__ = ["grid_layout", "trajectory_2d"]


def grid_layout(c: Cube):
    """How the 2-D probes sit: ("grid", ux, uy) for a full grid, ("lattice", ux, uy) for a subset of
    an integer lattice (ux, uy: every integer in range), else ("scatter", None, None)."""
    ux, uy = np.unique(c.x0), np.unique(c.x1)
    if len(ux) * len(uy) == len(c.x0):
        return "grid", ux, uy
    if _integral(c.x0) and _integral(c.x1):
        ux = np.arange(ux.min(), ux.max() + 1)
        uy = np.arange(uy.min(), uy.max() + 1)
        if len(ux) * len(uy) <= 250_000:
            return "lattice", ux, uy
    return "scatter", None, None


def _integral(v: np.ndarray) -> bool:
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v == np.round(v)))


def _image(c: Cube, v: np.ndarray, ux, uy) -> np.ndarray:
    img = np.full((len(uy), len(ux)), np.nan)
    img[np.searchsorted(uy, c.x1), np.searchsorted(ux, c.x0)] = v
    return img


def _field(ax, c: Cube, v: np.ndarray, cmap, norm, gid: str):
    """A per-probe value over (x0, x1) on a full grid or an integer lattice (cells without a
    probe left blank, light grey)."""
    kind, ux, uy = grid_layout(c)
    xe, ye = cell_edges(ux, is_integer_axis(ux)), cell_edges(uy, is_integer_axis(uy))
    art = ax.pcolormesh(xe, ye, np.ma.masked_invalid(_image(c, v, ux, uy)), cmap=cmap, norm=norm,
                        shading="flat", rasterized=True)
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    if kind == "lattice":
        ax.set_facecolor("#f6f6f6")
    art.set_gid(gid)
    ax.grid(False)
    return art


def _cell_boundaries(m: np.ndarray, xe: np.ndarray, ye: np.ndarray) -> list:
    """Segments along the cell edges between cells in and out of a mask [len(ye)-1, len(xe)-1]
    (the exact outline of a region on the probe grid, a staircase: no smoothing, so thin or
    small regions keep their shape)."""
    segs = []
    for j, i in zip(*np.nonzero(m[:, 1:] != m[:, :-1]), strict=True):
        segs.append([(xe[i + 1], ye[j]), (xe[i + 1], ye[j + 1])])
    for j, i in zip(*np.nonzero(m[1:, :] != m[:-1, :]), strict=True):
        segs.append([(xe[i], ye[j + 1]), (xe[i + 1], ye[j + 1])])
    return segs


def _outline_splits(ax, c: Cube, splits, thin: bool = False) -> dict[str, str]:
    """Outline each split along the probe grid's cell edges: train solid black, OOD splits dashed
    in their colours; on a partly covered integer lattice OOD probes are marked with small
    dots instead. ``thin``: light lines without the white halo (the small step panels, so
    the field stays visible). Returns split -> "outline" | "dots" for what was drawn."""
    kind, ux, uy = grid_layout(c)
    ocol = split_colors(splits)
    drawn: dict[str, str] = {}
    for s in splits:
        member = c.split == s
        if not member.any():
            continue
        if kind == "grid":
            m = _image(c, member.astype(np.float64), ux, uy) > 0.5
            if m.all():
                continue
            segs = _cell_boundaries(m, cell_edges(ux, is_integer_axis(ux)), cell_edges(uy, is_integer_axis(uy)))
            lw = 0.8 if thin else 1.3
            style = (dict(colors=TRAIN_LINE, linewidths=lw) if s == "train"
                     else dict(colors=ocol[s], linewidths=lw + 0.3, linestyles=[(0, (2.5, 1.5))]))
            lc = LineCollection(segs, zorder=4, gid=f"outline:{s}", capstyle="projecting", **style)
            if not thin:
                lc.set_path_effects(HALO)
            ax.add_collection(lc)
            drawn[s] = "outline"
        elif s != "train":
            ax.scatter(c.x0[member], c.x1[member], s=3.5, color=ocol[s], lw=0, zorder=5, gid=f"ood_mark:{s}")
            drawn[s] = "dots"
    return drawn


def _square(c: Cube) -> bool:
    w = np.nanmax(c.x0) - np.nanmin(c.x0)
    h = np.nanmax(c.x1) - np.nanmin(c.x1)
    return h > 0 and 0.5 <= w / h <= 2


def _target_field(ax, c0: Cube, target: str, cmap, norm) -> None:
    """The target over (x0, x1): the value (output 0), or the top class / label."""
    if target in ("scalar", "vector"):
        _field(ax, c0, c0.target[:, 0], cmap, norm, gid="target_field")
        ax.set_title("target" + (" (output 0)" if c0.K > 1 else ""), fontsize=8.5, pad=2)
        return
    lab_field = np.nanargmax(np.nan_to_num(c0.target, nan=-np.inf), axis=-1).astype(np.float64)
    k = c0.K
    pal_k = sns.color_palette("husl", k) if k > 10 else sns.color_palette("colorblind", k)
    _field(ax, c0, lab_field, ListedColormap([mpl.colors.to_hex(x) for x in pal_k]),
           BoundaryNorm(np.arange(-0.5, k + 0.5), k), gid="target_field")
    ax.set_title("target: top class" if target == "distribution" else "target: label", fontsize=8.5, pad=2)


def trajectory_2d(task, info, cubes, curves, splits, pal, logx) -> Figure:
    """The 2-D `probe_trajectory` figure (drawn inside the house `style`)."""
    target = info["target"]
    M = len(cubes)
    vals, tvals, name, (cmap, norm, extend) = cube_values(cubes, target)
    what = {"distribution": "per-probe KL at 4 steps", "class": "argmax right or wrong at 4 steps"}.get(
        target, "predicted field at 4 steps")
    row_h = 1.62
    fig = suite_figure(f"{task}: {what}", traj_meta(info, cubes, what), row_h * M + 2.0)
    gs = fig.add_gridspec(M + 1, 6, width_ratios=(1, 1, 1, 1, 0.07, 1.08), height_ratios=[row_h] * M + [1.75])
    first = None
    marks: list[float] = []
    art = None
    for i, (lab, c, _facts) in enumerate(cubes):
        idx = np.unique(np.round(np.linspace(0, len(c.steps) - 1, 4)).astype(int))
        if i == 0:
            marks = [float(c.steps[j]) for j in idx]
        for col, e in enumerate(idx):
            ax = fig.add_subplot(gs[i, col], sharex=first, sharey=first)
            first = first or ax
            art = _field(ax, c, vals[i][e], cmap, norm, gid="probe_field")
            _outline_splits(ax, c, splits, thin=True)
            ax.set_title(f"step {int(c.steps[e])}", fontsize=8.5, pad=2)
            ax.tick_params(labelsize=7, pad=1)
            if col == 0:
                ax.set_ylabel(f"{lab}\nx1", color=pal[lab], fontweight="bold", fontsize=8.5)
            else:
                ax.tick_params(labelleft=False)
            if i < M - 1:
                ax.tick_params(labelbottom=False)
            else:
                ax.set_xlabel("x0", fontsize=8, labelpad=1)
            if _square(c):
                ax.set_aspect("equal", adjustable="box")
    cax = fig.add_subplot(gs[:M, 4])
    cb = fig.colorbar(art, cax=cax, extend=extend)
    cb.set_label(name, fontsize=8)
    class_ticks(cb, target)
    c0 = cubes[0][1]
    tax = fig.add_subplot(gs[0, 5], sharex=first, sharey=first)
    _target_field(tax, c0, target, cmap, norm)
    drawn = _outline_splits(tax, c0, splits)
    tax.tick_params(labelsize=7, pad=1, labelleft=False)
    if _square(c0):
        tax.set_aspect("equal", adjustable="box")
    lax = fig.add_subplot(gs[M, :4])
    dash = draw_run_curves(lax, curves, splits, pal, info["primary"], logx, marks=marks)
    lax.set_title(f"{info['primary']} of the runs shown; dotted: the steps above", loc="left", fontsize=8.5)
    ocol = split_colors(splits)
    handles: list = [Line2D([], [], color=pal[lab], lw=2) for lab, _, _ in cubes]
    labels = [lab for lab, _, _ in cubes]
    for s in splits:
        if s == "train":
            region = Line2D([], [], color=TRAIN_LINE, lw=1.2)
        elif drawn.get(s) == "dots":
            region = Line2D([], [], color=ocol[s], ls="none", marker="o", ms=3)
        else:
            region = Line2D([], [], color=ocol[s], lw=1.5, ls=(0, (3, 1.5)))
        handles.append((region, Line2D([], [], color="#444444", ls=dash[s], lw=1.5)))
        labels.append(split_label(s) + ("" if s == "train" or s in drawn else ": no grid probes"))
    hax = fig.add_subplot(gs[M, 4:] if M == 1 else gs[1:, 5])
    hax.axis("off")
    legend(hax, handles, labels, title="method; split: outline or dots, loss line")
    return fig
