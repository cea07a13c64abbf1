"""The probed runs a probe figure shows: their predictions as arrays, the values and colour
scale the heatmaps draw, and their loss panel.

Shared by the 1-D (`testbed.analyses.probes.figures`) and 2-D
(`testbed.analyses.probes.fields`) layouts of `probe_trajectory`.

Tables. The schema gives the probes table both the cell column ``target`` (the target
kind) and a value column ``target``; the figures read the target kind from the other
tables and accept the value column alone, both (duplicate names: the numeric one is the
value); the suite runner names the value ``y``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize

from testbed.analyses.figkit import (
    label_order,
    log_floor,
    log_ticks,
    method_labels,
    palette,
    step_axis,
    with_labels,
)
from testbed.analyses.probes.cube import Cube, _probe_table, log_softmax
from testbed.core.style import SPLIT_DASHES, cell_edges, run_bounds

__all__ = ["Cube", "cube_values", "draw_run_curves", "probe_runs", "run_curves", "train_intervals"]

CLASS_COLORS = ("#3a3a3a", "#62b58c")  # argmax wrong, right


def probe_runs(tables, task: str, method) -> list[tuple[str, pd.DataFrame, dict]]:
    """(label, the grid probes of its first run, facts) per selected method label of the task."""
    p = _probe_table(tables)
    p = p[p["task"] == task]
    if p.empty:
        raise ValueError(f"probe_trajectory: no probes for task {task!r}")
    labels = method_labels(tables)
    p = with_labels(p, labels)
    if method is not None:
        wanted = [method] if isinstance(method, str) else list(method)
        sel = p["label"].isin(wanted) | p["method"].astype(str).isin(wanted)
        if not sel.any():
            raise ValueError(f"probe_trajectory: task {task!r} has no probes for method {method!r}; "
                             f"methods: {', '.join(sorted(p['label'].unique()))}")
        p = p[sel]
    if "kind" in p.columns:
        p = p[p["kind"].astype(str) == "grid"]
    out = []
    for lab in label_order(p["label"], palette(labels)):
        s = p[p["label"] == lab]
        run = s["run"].min()
        s = s[s["run"] == run]
        out.append((lab, s, {"cell": s["cell"].iloc[0], "run": run, "seed": s["seed"].iloc[0]}))
    return out


def is_integer_axis(v: np.ndarray) -> bool:
    """Whether sample points are consecutive integers."""
    v = np.unique(v[np.isfinite(v)])
    return len(v) > 1 and bool(np.all(v == np.round(v))) and bool(np.all(np.diff(v) == 1))


def train_intervals(x0: np.ndarray, split: np.ndarray, integer: bool | None = None) -> list[tuple[float, float]]:
    """Contiguous x0 intervals where 1-D grid probes are in ``train`` (cell edges)."""
    o = np.argsort(x0)
    xs, sp = x0[o], split[o]
    e = cell_edges(xs, is_integer_axis(xs) if integer is None else integer)
    return [(float(e[a]), float(e[b + 1])) for a, b in run_bounds(sp == "train")]


# -- what the heatmaps show -----------------------------------------------------------------

def _probe_value(cube: Cube, target: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Per (step, probe) value shown in the heatmaps, the target's value per probe (or None)
    and a name: prediction (output 0), KL(target || prediction), or whether the argmax is the
    label (class tasks: 1 or 0; the same yardstick as the ``error`` metric whatever the method's
    outputs are, where a softmax probability would not be: MSE outputs are no logits)."""
    if target == "distribution":
        lt, lp = log_softmax(cube.target), log_softmax(cube.pred)
        kl = np.sum(np.exp(lt)[None] * (lt[None] - lp), axis=-1)
        return np.maximum(kl, 0.0), None, "KL(target || prediction)"
    if target == "class":
        lab = np.nanargmax(np.nan_to_num(cube.target, nan=-1.0), axis=-1)
        correct = (np.nanargmax(np.nan_to_num(cube.pred, nan=-np.inf), axis=-1) == lab[None, :]).astype(np.float64)
        return np.where(np.isnan(cube.pred).all(-1), np.nan, correct), None, "argmax = label"
    return cube.pred[..., 0], cube.target[:, 0], "prediction" + (" (output 0)" if cube.K > 1 else "")


def _value_norm(vals: list[np.ndarray], targets: list[np.ndarray | None], target: str):
    """Colour map and norm for the heatmaps, shared by all methods."""
    if target == "distribution":
        v = np.concatenate([x.ravel() for x in vals])
        v = v[np.isfinite(v) & (v > 0)]
        hi = float(np.percentile(v, 99.5)) if v.size else 1.0
        lo = max(float(np.percentile(v, 1)) if v.size else 1e-4, hi * 1e-5)
        return sns.color_palette("rocket_r", as_cmap=True), LogNorm(lo, max(hi, lo * 10)), "neither"
    if target == "class":
        return ListedColormap(CLASS_COLORS), BoundaryNorm([-0.5, 0.5, 1.5], 2), "neither"
    t = np.concatenate([x.ravel() for x in targets if x is not None])
    t = t[np.isfinite(t)]
    lo, hi = (float(t.min()), float(t.max())) if t.size else (0.0, 1.0)
    pad = 0.1 * (hi - lo) if hi > lo else 0.5
    return sns.color_palette("viridis", as_cmap=True), Normalize(lo - pad, hi + pad), "both"


def cube_values(cubes, target: str):
    """Each method's plotted values and targets, the value's name, and a shared colour scale
    (cmap, norm, colour bar extension)."""
    vals, tvals, name = [], [], ""
    for _, c, _ in cubes:
        v, tv, name = _probe_value(c, target)
        vals.append(v)
        tvals.append(tv)
    return vals, tvals, name, _value_norm(vals, tvals, target)


def class_ticks(cb, target: str) -> None:
    """Name the two colours of a class task's colour bar."""
    if target == "class":
        cb.set_ticks([0, 1])
        cb.set_ticklabels(["wrong", "right"])


# -- the loss panel ---------------------------------------------------------------------------

def run_curves(tables, task: str, picks, primary: str) -> pd.DataFrame:
    """The primary metric's history rows of the picked runs, labelled."""
    h = tables["history"]
    h = h[(h["task"] == task) & (h["metric"].astype(str) == primary) & (h["piece"] == "all")]
    parts = []
    for lab, _, facts in picks:
        s = h[(h["cell"] == facts["cell"]) & (h["run"] == facts["run"])]
        parts.append(s.assign(label=lab, split=s["split"].astype(str)))
    return pd.concat(parts, ignore_index=True) if parts else h.iloc[:0]


def split_dashes(splits: Sequence[str]) -> dict[str, object]:
    ood = [s for s in splits if s != "train"]
    return {"train": "solid", **{s: SPLIT_DASHES[i % len(SPLIT_DASHES)] for i, s in enumerate(ood)}}


def split_label(s: str) -> str:
    return s if s == "train" else f"{s} (OOD)"


def draw_run_curves(ax, curves, splits, pal, primary, logx, marks=()) -> dict:
    """The primary metric of the probed runs (colour: method, style: split); returns the styles."""
    dash = split_dashes(splits)
    logy = primary != "error"
    for (lab, split), s in curves.groupby(["label", "split"], sort=False):
        s = s.sort_values("step")
        v = s["value"].to_numpy(np.float64)
        if logy:
            v = np.clip(v, log_floor(curves["value"]), None)
        ax.plot(s["step"], v, color=pal[lab], ls=dash.get(split, "solid"), lw=1.5)
    if logy:
        ax.set_yscale("log")
        if len(curves):
            log_ticks(ax.yaxis, ax.get_ylim())
    else:
        ax.set_ylim(-0.02, 1.02)
    step_axis(ax, logx, curves["step"].max() if len(curves) else None)
    for st in marks:
        ax.axvline(st, color="#444444", lw=0.8, ls=":", zorder=0)
    ax.set_xlabel("training step")
    ax.set_ylabel(primary)
    return dash


def traj_meta(info, cubes, what: str) -> list[str]:
    """The header's lines of facts."""
    runs = ", ".join(f"{lab}: seed {f['seed']}" for lab, _, f in cubes)
    return [f"{what}   |   target: {info['target']}   |   model: {', '.join(info['models'])}",
            f"one run per method ({runs}); loss panel: the primary metric ({info['primary']}) of those runs"]
