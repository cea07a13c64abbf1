"""What every view of a task picture shares: the task evaluated at points, the header and
the legend scaffolding (`testbed.report.taskplot` draws the views, each in a
``testbed.core.style.figure(task_header(task), ..., constrained=False)`` laid out by
``tight_below`` or `finish_with_bottom_legend`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.core.errors import ConfigError
from testbed.core.style import Header, cell_edges, run_bounds, tight_below
from testbed.tasks.task import Task

__all__ = ["Evaluated", "evaluate", "line_points", "split_intervals", "task_header"]


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


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.nanmax(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


# -- header and legends ---------------------------------------------------------

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


def task_header(task: Task, note: str | None = None) -> Header:
    """Title (task name), wrapped description, a grey line of facts and an optional note."""
    return Header(task.name, [_meta_parts(task)], desc=task.description, note=note)


def legend_right(ax, handles: list) -> None:
    leg = ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
                    frameon=False, handlelength=2.4)
    bold_sections(leg, handles)


def bold_sections(leg, handles: list) -> None:
    for text, h in zip(leg.get_texts(), handles, strict=True):
        if getattr(h, "_section", False):
            text.set_fontweight("bold")
            text.set_color("#444444")


def section(label: str) -> Line2D:
    """An invisible legend entry used as a small heading."""
    h = Line2D([], [], color="none", label=label)
    h._section = True
    return h


def finish_with_bottom_legend(fig: Figure, header: Header, handles: list, ncol: int) -> Figure:
    """tight_layout leaving a strip at the bottom for a figure-wide legend."""
    rows = math.ceil(len(handles) / ncol)
    tight_below(fig, header, bottom_in=0.12 + 0.24 * rows)
    leg = fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=ncol, frameon=False,
                     handlelength=2.6, columnspacing=2.2)
    bold_sections(leg, handles)
    return fig
