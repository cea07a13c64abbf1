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

`save_task_plot` writes the picture as PNG or SVG.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib import patheffects
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.textpath import text_to_path
from mpl_toolkits.axes_grid1 import make_axes_locatable

from testbed.errors import ConfigError
from testbed.task import Task

__all__ = ["plot_task", "save_task_plot", "split_intervals"]

DPI = 120
WIDTH_IN = 8.5  # ~1020 px at DPI
TRAIN_SHADE = "#9a9a9a"  # train region fill (1-D), drawn with a low alpha
TRAIN_LINE = "#1a1a1a"  # train outline (2-D)
OOD_COLORS = ("#e7298a", "#e6ab02", "#1b9e77", "#7570b3", "#d95f02", "#66a61e", "#a6761d")
CANDIDATE_COLORS = ("#333333", "#8c564b", "#17becf", "#bcbd22", "#7f7f7f")
CANDIDATE_DASHES = ((0, (5, 2.5)), (0, (2, 2)), (0, (7, 2, 1.5, 2)), (0, (3, 1.5, 1, 1.5)))
OOD_MARKERS = ("x", "o", "+", "s", "^", "D", "v")
HALO = [patheffects.withStroke(linewidth=3.2, foreground="white")]


def piece_colors(n: int) -> list:
    return list(sns.color_palette("deep", max(n, 1)))


def ood_color(i: int) -> str:
    return OOD_COLORS[i % len(OOD_COLORS)]


# -- evaluation -----------------------------------------------------------------

@dataclass
class Evaluated:
    """Ground truth at a set of raw points."""

    raw: np.ndarray  # [n, dim]
    y: np.ndarray  # [n] or [n, k] (class: int labels, -1 where no piece)
    piece: np.ndarray  # [n] int
    splits: dict[str, np.ndarray]  # split name -> bool [n]
    candidates: dict[str, np.ndarray]  # candidate name -> [n] or [n, k]


@functools.lru_cache(maxsize=64)
def _evaluator(task: Task):
    """One compiled program computing everything a picture needs (eager JAX compiles op by op)."""

    def run(raw):
        x = task.domain.encode(raw)
        splits = tuple(task.split(s).where(raw) for s in task.splits)
        cands = tuple(task.candidate(c, x) for c in task.candidates)
        return task(x), task.piece_of(x), splits, cands  # tuples: dicts would come back key-sorted

    # A picture needs no fast code: skip most of the backend's optimisation, which is
    # most of the compile time.
    return jax.jit(run, compiler_options={"xla_backend_optimization_level": 0})


def evaluate(task: Task, raw: np.ndarray) -> Evaluated:
    """Targets, pieces, split masks and candidates at raw points [n, dim]."""
    raw = np.asarray(raw, np.float32)
    n = raw.shape[0]
    y, piece, splits, cands = jax.device_get(_evaluator(task)(jnp.asarray(raw)))
    y = np.asarray(y)
    shape = (n,) if y.ndim == 1 else (n, y.shape[1])
    return Evaluated(
        raw=raw, y=y, piece=np.asarray(piece).reshape(n),
        splits={s: np.broadcast_to(np.asarray(m, bool), (n,)) for s, m in zip(task.splits, splits, strict=True)},
        candidates={c: np.broadcast_to(np.asarray(v, np.float64), shape)
                    for c, v in zip(task.candidates, cands, strict=True)})


def line_points(task: Task, points: int) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Raw points along x0 for a 1-D view: (raw [n, dim], x0 values [n], slice note or None)."""
    dom = task.domain
    lo, hi = np.asarray(dom.low, np.float64), np.asarray(dom.high, np.float64)
    if dom.kind == "integers":
        xs = np.arange(int(lo[0]), int(hi[0]))
        if len(xs) > points:
            xs = xs[np.linspace(0, len(xs) - 1, points).round().astype(int)]
        centre = np.floor((lo + hi - 1) / 2)
    else:
        xs = np.linspace(lo[0], hi[0], max(points, 2))
        centre = (lo + hi) / 2
    raw = np.tile(centre, (len(xs), 1))
    raw[:, 0] = xs
    note = None
    if dom.dim > 1:
        fixed = ", ".join(f"x{i}={_fmt(c)}" for i, c in enumerate(centre) if i > 0)
        note = f"1-D slice along x0 ({dom.dim}-D domain), other coords at the domain centre: {fixed}"
    return raw.astype(np.float32), xs.astype(np.float64), note


def run_bounds(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True in a bool vector, as inclusive index pairs."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    starts, ends = np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def cell_edges(xs: np.ndarray, integer: bool) -> np.ndarray:
    """Edges [n+1] of the cells around sample points: midpoints inside, the domain ends outside."""
    mids = (xs[1:] + xs[:-1]) / 2
    if integer:
        return np.concatenate([[xs[0] - 0.5], mids, [xs[-1] + 0.5]])
    return np.concatenate([[xs[0]], mids, [xs[-1]]])


def split_intervals(task: Task, split: str, points: int = 2000) -> list[tuple[float, float]]:
    """The contiguous intervals of a split along x0 (the shaded spans of a 1-D view).

    For tasks of more than one dim this is along the slice `plot_task` shows.
    """
    if split not in task.splits:
        raise ConfigError(f"task {task.name!r} has no split {split!r}; splits: {', '.join(task.splits)}")
    raw, xs, _ = line_points(task, points)
    mask = evaluate(task, raw).splits[split]
    edges = cell_edges(xs, task.domain.kind == "integers")
    return [(float(edges[a]), float(edges[b + 1])) for a, b in run_bounds(mask)]


# -- figure scaffolding -----------------------------------------------------------

def _fmt(v: float) -> str:
    return f"{v:g}"


def _domain_text(task: Task) -> str:
    d = task.domain
    span = " x ".join(f"[{_fmt(lo)}, {_fmt(h)}]" for lo, h in zip(d.low, d.high, strict=True))
    if d.kind == "integers":
        span = " x ".join(f"{{{int(lo)}..{int(h) - 1}}}" for lo, h in zip(d.low, d.high, strict=True))
        return f"integers {span} ({d.encoding} encoding)"
    return f"box {span}"


def _meta_parts(task: Task) -> list[str]:
    target = task.target if task.target == "scalar" else f"{task.target} ({task.out_dim})"
    parts = [_domain_text(task), f"target: {target}", f"pieces: {', '.join(task.pieces)}",
             f"splits: {', '.join(task.splits)}"]
    if task.candidates:
        parts.append(f"candidates: {', '.join(task.candidates)}")
    return parts


def _wrap(text: str | list[str], fontsize: float, width_in: float = WIDTH_IN - 0.3, sep: str = " ") -> list[str]:
    """Greedy wrap of words (or of the given parts, joined by ``sep``) to a width in inches,
    measuring the text with the default font."""
    def width(s: str) -> float:
        return sum(_char_width(c, fontsize) for c in s)

    lines: list[str] = []
    for word in (text.split() if isinstance(text, str) else text):
        if lines and width(lines[-1] + sep + word) <= width_in:
            lines[-1] += sep + word
        else:
            lines.append(word)
    return lines or [""]


@functools.lru_cache(maxsize=4096)
def _char_width(c: str, fontsize: float) -> float:
    """Advance width of one character in inches, in the default font (kerning ignored)."""
    prop = FontProperties(size=fontsize)
    return text_to_path.get_text_width_height_descent(c, prop, ismath=False)[0] / 72


class Header:
    """Title (task name), wrapped description and a grey line of facts, top left."""

    TITLE, DESC, META = 14.0, 10.0, 8.5

    def __init__(self, task: Task, note: str | None = None):
        self.title = task.name
        self.desc = _wrap(task.description, self.DESC)
        self.meta = _wrap(_meta_parts(task), self.META, sep="   |   ")
        self.note = _wrap(note, self.META) if note else []

    @property
    def height_in(self) -> float:
        pt = self.TITLE * 1.5 + self.DESC * 1.35 * len(self.desc) + self.META * 1.35 * (
            len(self.meta) + len(self.note)) + 14
        return pt / 72

    def draw(self, fig: Figure) -> None:
        h = fig.get_figheight()
        y = 1 - 6 / 72 / h
        x = 0.012
        fig.text(x, y, self.title, fontsize=self.TITLE, fontweight="bold", va="top", ha="left")
        y -= self.TITLE * 1.5 / 72 / h
        for line in self.desc:
            fig.text(x, y, line, fontsize=self.DESC, va="top", ha="left", color="#222222")
            y -= self.DESC * 1.35 / 72 / h
        for line in self.meta:
            fig.text(x, y, line, fontsize=self.META, va="top", ha="left", color="#6b6b6b")
            y -= self.META * 1.35 / 72 / h
        for line in self.note:
            fig.text(x, y, line, fontsize=self.META, va="top", ha="left", color="#9c4a00",
                     style="italic")
            y -= self.META * 1.35 / 72 / h


def _new_figure(header: Header, body_in: float) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, body_in + header.height_in), dpi=DPI)
    fig.patch.set_facecolor("white")
    return fig


def _finish(fig: Figure, header: Header) -> Figure:
    top = 1 - header.height_in / fig.get_figheight()
    fig.tight_layout(rect=(0.0, 0.0, 1.0, top), pad=0.6)
    header.draw(fig)
    return fig


def _style():
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.85))
    rc.update({"axes.titlesize": 10, "axes.titleweight": "normal", "legend.fontsize": 8.5,
               "legend.title_fontsize": 8.5, "figure.dpi": DPI, "savefig.dpi": DPI})
    return mpl.rc_context(rc)


# -- 1-D views --------------------------------------------------------------------

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


def _legend_right(ax, handles: list) -> None:
    leg = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                    frameon=False, handlelength=2.4)
    _bold_sections(leg, handles)


def _bold_sections(leg, handles: list) -> None:
    for text, h in zip(leg.get_texts(), handles, strict=True):
        if getattr(h, "_section", False):
            text.set_fontweight("bold")
            text.set_color("#444444")


def _section(label: str) -> Line2D:
    """An invisible legend entry used as a small heading."""
    h = Line2D([], [], color="none", label=label)
    h._section = True
    return h


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
    header = Header(task, note)
    xlabel = "x0" if task.dim > 1 else "x"
    if integer:
        xlabel += " (integer value)"
    if task.target == "distribution":
        return _plot_1d_distribution(task, ev, xs, integer, header, xlabel)

    fig = _new_figure(header, 4.4)
    ax = fig.add_subplot(1, 1, 1)
    split_handles = _shade_splits(ax, task, ev, xs, integer)
    pcolors = piece_colors(len(task.pieces))
    handles: list = []
    y = ev.y.astype(np.float64)
    if task.target == "class":
        y = np.where(ev.y < 0, np.nan, y)
    dense = len(xs) > 120
    if y.ndim == 1:  # scalar or class: colour by piece
        handles.append(_section("pieces"))
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
        handles.append(_section("output dims"))
        for j in range(y.shape[1]):
            if integer:
                ax.scatter(xs, y[:, j], s=9 if dense else 20, color=dcolors[j], zorder=3, lw=0)
                handles.append(Line2D([], [], marker="o", ls="none", color=dcolors[j], label=f"target[{j}]"))
            else:
                ax.plot(*_broken(xs, y[:, j], ev.piece), color=dcolors[j], lw=2.2, zorder=3)
                handles.append(Line2D([], [], color=dcolors[j], lw=2.2, label=f"target[{j}]"))
    if ev.candidates:
        handles.append(_section("candidates"))
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
    handles.append(_section("splits"))
    handles.extend(split_handles)
    _ylim(ax, y, *ev.candidates.values())
    ax.set_xlim(cell_edges(xs, integer)[0], cell_edges(xs, integer)[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("class" if task.target == "class" else "target")
    if task.target == "class":
        ax.yaxis.get_major_locator().set_params(integer=True)
    _legend_right(ax, handles)
    return _finish(fig, header)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.nanmax(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _plot_1d_distribution(task, ev, xs, integer, header, xlabel) -> Figure:
    logits = ev.y.astype(np.float64)
    probs = _softmax(logits)
    k = logits.shape[1]
    ccolors = list(sns.color_palette("colorblind", k)) if k <= 10 else list(sns.color_palette("husl", k))
    pcolors = piece_colors(len(task.pieces))
    fig = _new_figure(header, 6.2)
    ax_p, ax_l = fig.subplots(2, 1, sharex=True, gridspec_kw=dict(height_ratios=(3, 2)))
    split_handles = _shade_splits(ax_p, task, ev, xs, integer)
    _shade_splits(ax_l, task, ev, xs, integer)
    _piece_labels_above(ax_p, task, ev, xs, integer, pcolors)
    _piece_labels_above_lines_only(ax_l, task, ev, xs, integer)
    handles: list = [_section("classes")]
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
        handles.append(_section(f"... {k} classes in all"))
    if ev.candidates:
        handles.append(_section("candidates (probabilities)"))
    for j, (name, v) in enumerate(ev.candidates.items()):
        st = _candidate_style(j)
        cp = _softmax(np.asarray(v, np.float64).reshape(len(xs), -1))
        for c in range(cp.shape[1]):
            ax_p.plot(xs, cp[:, c], **{**st, "color": ccolors[c % len(ccolors)], "lw": 1.2})
        handles.append(Line2D([], [], label=name, color="#444444", ls=st["ls"], lw=1.2))
    handles.append(_section("splits"))
    handles.extend(split_handles)
    ax_p.set_ylim(-0.03, 1.03)
    ax_p.set_ylabel("probability (softmax)")
    ax_l.set_ylabel("logit")
    _ylim(ax_l, logits)
    ax_l.set_xlabel(xlabel)
    edges = cell_edges(xs, integer)
    ax_l.set_xlim(edges[0], edges[-1])
    _legend_right(ax_p, handles)
    return _finish(fig, header)


def _piece_labels_above_lines_only(ax, task, ev, xs, integer) -> None:
    edges = cell_edges(xs, integer)
    for k in range(len(task.pieces)):
        for a, _ in run_bounds(ev.piece == k):
            if a > 0:
                ax.axvline(edges[a], color="#555555", lw=0.9, ls=":", zorder=1)


# -- 1-D integer distribution: a rows x classes matrix --------------------------------

def _finish_with_bottom_legend(fig: Figure, header: Header, handles: list, ncol: int) -> Figure:
    """tight_layout leaving a strip at the bottom for a figure-wide legend."""
    rows = math.ceil(len(handles) / ncol)
    bottom = (0.12 + 0.24 * rows) / fig.get_figheight()
    top = 1 - header.height_in / fig.get_figheight()
    fig.tight_layout(rect=(0.0, bottom, 1.0, top), pad=0.6)
    leg = fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False,
                     handlelength=2.6, columnspacing=2.2)
    _bold_sections(leg, handles)
    header.draw(fig)
    return fig


def _class_ticks(ax, k: int) -> None:
    step = 1 if k <= 16 else 2 if k <= 32 else max(1, k // 12)
    ax.set_xticks(range(0, k, step))
    ax.tick_params(axis="x", labelsize=7.5)


def _plot_rows_matrix(task: Task, points: int) -> Figure:
    raw, xs, _ = line_points(task, points)
    ev = evaluate(task, raw)
    logits = ev.y.astype(np.float64)
    probs = _softmax(logits)
    rows, k = logits.shape
    header = Header(task)
    fig = _new_figure(header, float(np.clip(2.0 + rows * 0.12, 3.6, 7.0)))
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
    return _finish_with_bottom_legend(fig, header, handles, ncol=len(handles))


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
    probs = _softmax(y.astype(np.float64))
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


def _plot_2d(task: Task, points: int) -> Figure:
    a, b, raw, integer = _grid_2d(task, points)
    shape = (len(b), len(a))
    ev = evaluate(task, raw)
    panels = _panels_2d(task, ev, shape)
    header = Header(task)
    n_cand = sum(title.startswith("candidate: ") for title, _, _ in panels)
    if n_cand:  # the target large on the left, candidates small on the right
        fig = _new_figure(header, 5.6)
        gs = fig.add_gridspec(2, 2, width_ratios=(2.0, 1.0))
        axes = [fig.add_subplot(gs[:, 0])] + [fig.add_subplot(gs[r, 1]) for r in range(n_cand)]
    else:
        ncols = min(len(panels), 3)
        nrows = math.ceil(len(panels) / ncols)
        img_h = min((WIDTH_IN - 0.3) / ncols - 1.0, 5.2)
        fig = _new_figure(header, nrows * (img_h + 0.85) + 0.1)
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
                              path_effects=[patheffects.withStroke(linewidth=2.8, foreground="#777777")]))
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
    return _finish_with_bottom_legend(fig, header, handles, ncol=min(len(handles), 4))


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


# -- entry points -------------------------------------------------------------------

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
    with _style():
        if dom.dim == 2:
            return _plot_2d(task, points)
        if dom.kind == "integers" and dom.dim == 1 and task.target == "distribution":
            return _plot_rows_matrix(task, points)
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
