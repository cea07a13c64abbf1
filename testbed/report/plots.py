"""Suite figures: pictures of a benchmark suite's result tables (docs/suite_tables.md).

Every function takes the tables dict (``testbed.suite.load_tables``) and returns a
matplotlib Figure (not registered with pyplot), drawn in the house style of
`testbed.report.taskplot` (seaborn whitegrid, a bold title and grey facts at the top
left, legends outside the data), about 1020 px wide at the PNG resolution of `save`.
Plots read tables, never runs.

* `loss_curves`: one task's primary metric over training, per method, with the train
  split and each OOD split as panels (mean over seeds, 95% CI bands).
* `ood_vs_train`: final train vs final OOD primary metric, one point per (method, seed),
  one panel per task.
* `piece_heatmap`: final primary metric per (task, split, piece) and method.
* `probe_trajectory`: what one task's models predict over training at the probe grid.
* `attribution_bars`: which candidate behaviour the final predictions on each OOD
  split are closest to.
* `save`: PNG (dpi 120) and SVG.

Labels. A curve or point is labelled by its method label; the model, optimizer and
hyperparameters (lr, weight_decay, init_scale) are appended only where they vary
within the task (so a suite with one model and optimizer shows plain method names).
Each label keeps one colour in every figure.

Averages over seeds of metrics drawn on log axes are taken in log space (geometric
means; seaborn aggregates in the axis' scale), so one bad seed cannot dominate.
Nonpositive values on log axes are lifted to the smallest positive value shown; the
``error`` metric (class tasks) is drawn on linear 0..1 axes instead.

Tables. The schema gives the probes table both the cell column ``target`` (the target
kind) and a value column ``target``; `probe_trajectory` reads the target kind from the
other tables and accepts the value column alone, both (duplicate names: the numeric one
is the value); the suite runner names the value ``y``.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import patheffects
from matplotlib.collections import LineCollection
from matplotlib.colors import BoundaryNorm, ListedColormap, LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["attribution_bars", "loss_curves", "ood_vs_train", "piece_heatmap", "probe_trajectory", "save",
           "split_order", "method_labels", "log_spaced", "task_facts", "train_intervals"]

DPI = 120
WIDTH_IN = 8.5  # ~1020 px at DPI
TRAIN_SHADE = "#9a9a9a"  # as in taskplot: the train region
TRAIN_LINE = "#1a1a1a"
OOD_COLORS = ("#e7298a", "#e6ab02", "#1b9e77", "#7570b3", "#d95f02", "#66a61e", "#a6761d")
SPLIT_DASHES = ((0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)), (0, (3, 1, 1, 1)), (0, (8, 3)))
HALO = [patheffects.withStroke(linewidth=2.6, foreground="white")]
METRIC_NAMES = {"mse": "mean squared error", "kl": "KL(target || prediction)", "error": "classification error",
                "xent": "cross-entropy", "loss": "method loss"}
CELL_COLUMNS = ("cell", "task", "method", "model", "optimizer", "target", "primary")
HP_COLUMNS = ("lr", "weight_decay", "init_scale")
CLASS_COLORS = ("#3a3a3a", "#62b58c")  # argmax wrong, right
LOG_FLOOR = 1e-12  # nonpositive values on log axes are lifted to the data's floor (>= this)


# -- style and scaffolding --------------------------------------------------------------

def _style():
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.85))
    rc.update({"axes.titlesize": 9.5, "axes.titleweight": "normal", "legend.fontsize": 8.5,
               "legend.title_fontsize": 8.5, "figure.dpi": DPI, "savefig.dpi": DPI,
               "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.labelsize": 9})
    return mpl.rc_context(rc)


class _Header:
    """A bold title and grey lines of facts at the top left (space reserved by the layout)."""

    TITLE, META = 13.0, 8.5

    def __init__(self, title: str, meta: Sequence[str] = (), width_in: float = WIDTH_IN):
        chars = max(40, int((width_in - 0.3) * 72 / (self.META * 0.52)))
        self.title = title
        self.meta = [ln for part in meta for ln in textwrap.wrap(part, chars)]

    @property
    def height_in(self) -> float:
        return (self.TITLE * 1.55 + self.META * 1.4 * len(self.meta) + 10) / 72

    def draw(self, fig: Figure) -> None:
        h = fig.get_figheight()
        y = 1 - 5 / 72 / h
        fig.text(0.012, y, self.title, fontsize=self.TITLE, fontweight="bold", va="top", ha="left")
        y -= self.TITLE * 1.55 / 72 / h
        for line in self.meta:
            fig.text(0.012, y, line, fontsize=self.META, va="top", ha="left", color="#6b6b6b")
            y -= self.META * 1.4 / 72 / h


def _figure(title: str, meta: Sequence[str], body_in: float, width_in: float = WIDTH_IN) -> Figure:
    """A white figure with a header, laid out (constrained) below it."""
    header = _Header(title, meta, width_in)
    height = body_in + header.height_in
    engine = ConstrainedLayoutEngine(rect=(0.0, 0.0, 1.0, 1.0 - header.height_in / height),
                                     h_pad=0.04, w_pad=0.04, hspace=0.03, wspace=0.03)
    fig = Figure(figsize=(width_in, height), dpi=DPI, layout=engine)
    fig.patch.set_facecolor("white")
    header.draw(fig)
    return fig


def save(fig: Figure, path_without_suffix: str | Path) -> list[Path]:
    """Write ``fig`` as PNG (dpi 120) and SVG next to each other, creating the folder; close it.

    Returns the two paths (``.png``, ``.svg``).
    """
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "svg"):
        p = base.with_name(base.name + "." + ext)
        fig.savefig(p, format=ext, dpi=DPI, facecolor="white")
        out.append(p)
    plt.close(fig)
    return out


# -- reading the tables ---------------------------------------------------------------

def _cells(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per (cell, lr, weight_decay, init_scale) with the cell columns."""
    src = tables.get("runs")
    if src is None or src.empty:
        src = tables["history"]
    cols = [c for c in (*CELL_COLUMNS, *HP_COLUMNS) if c in src.columns]
    return src[cols].drop_duplicates().reset_index(drop=True)


def method_labels(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The label of every (cell, lr, weight_decay, init_scale): the method label, with model,
    optimizer and hyperparameters appended where they vary within the task.

    Columns: cell, lr, weight_decay, init_scale (those present), task, label.
    """
    c = _cells(tables)
    keys = [k for k in ("cell", *HP_COLUMNS) if k in c.columns]
    labels = []
    for _, g in c.groupby("task", sort=False, observed=True):
        parts = [g["method"].astype(str)]
        for col, fmt in (("model", "{}"), ("optimizer", "{}"), ("lr", "lr={:g}"),
                         ("weight_decay", "wd={:g}"), ("init_scale", "init={:g}")):
            if col in g.columns and g[col].nunique() > 1:
                parts.append(g[col].map(fmt.format))
        lab = parts[0]
        for p in parts[1:]:
            lab = lab + " / " + p
        labels.append(pd.DataFrame({**{k: g[k] for k in keys}, "task": g["task"].astype(str), "label": lab}))
    return pd.concat(labels, ignore_index=True)


def _with_labels(df: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in ("cell", *HP_COLUMNS) if k in df.columns and k in labels.columns]
    return df.merge(labels[[*keys, "label"]], on=keys, how="left")


def _palette(labels: pd.DataFrame) -> dict[str, tuple]:
    """A colour per label, the same in every figure: plain method names first, sorted."""
    uniq = sorted(labels["label"].unique(), key=lambda s: (" / " in s, s))
    cols = sns.color_palette("colorblind", 10) if len(uniq) <= 10 else sns.color_palette("husl", len(uniq))
    return {lab: cols[i % len(cols)] for i, lab in enumerate(uniq)}


def _label_order(labels: Sequence[str], palette: dict) -> list[str]:
    order = list(palette)
    return sorted(set(labels), key=lambda s: order.index(s) if s in order else len(order))


def split_order(tables: dict[str, pd.DataFrame], task: str) -> list[str]:
    """A task's splits: train first, then the OOD splits in the order the history lists them."""
    h = tables["history"]
    seen = list(dict.fromkeys(h.loc[h["task"] == task, "split"].astype(str)))
    return (["train"] if "train" in seen else []) + [s for s in seen if s != "train"]


def _ood_colors(splits: Sequence[str]) -> dict[str, str]:
    ood = [s for s in splits if s != "train"]
    return {"train": TRAIN_SHADE, **{s: OOD_COLORS[i % len(OOD_COLORS)] for i, s in enumerate(ood)}}


def _split_dashes(splits: Sequence[str]) -> dict[str, object]:
    ood = [s for s in splits if s != "train"]
    return {"train": "solid", **{s: SPLIT_DASHES[i % len(SPLIT_DASHES)] for i, s in enumerate(ood)}}


def task_facts(tables: dict[str, pd.DataFrame], task: str) -> dict:
    """A task's target kind, primary metric, models and optimizers (from its cells)."""
    c = _cells(tables)
    c = c[c["task"] == task]
    if c.empty:
        raise ValueError(f"no cells for task {task!r}; tasks: {', '.join(map(str, _tasks(tables)))}")
    row = c.iloc[0]
    return {"target": str(row.get("target", "scalar")), "primary": str(row.get("primary", "mse")),
            "models": sorted(c["model"].astype(str).unique()) if "model" in c else [],
            "optimizers": sorted(c["optimizer"].astype(str).unique()) if "optimizer" in c else []}


def _tasks(tables: dict[str, pd.DataFrame]) -> list[str]:
    return list(dict.fromkeys(_cells(tables)["task"].astype(str)))


def _final_rows(h: pd.DataFrame) -> pd.DataFrame:
    """Rows at the last evaluation step of each (cell, run)."""
    last = h.groupby(["cell", "run"], observed=True)["step"].transform("max")
    return h[h["step"] == last]


def log_spaced(steps) -> bool:
    """Whether evaluation steps look log-spaced (gaps growing: the largest gap is more than 4x
    the median gap)."""
    s = np.unique(np.asarray(steps, np.float64))
    s = s[s > 0]
    if len(s) < 5:
        return False
    d = np.diff(s)
    return bool(d.max() > 4 * np.median(d))


def _step_axis(ax, logx: bool, max_step: float | None = None) -> None:
    """Symlog step axis (0, then decades) for log-spaced evaluations; linear otherwise."""
    if not logx:
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    top = int(np.floor(np.log10(max_step))) if max_step and max_step >= 10 else 3
    ax.xaxis.set_major_locator(mpl.ticker.FixedLocator([0.0] + [10.0 ** k for k in range(1, top + 1)]))
    ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(
        lambda v, _: "0" if v == 0 else f"$10^{{{int(round(np.log10(v)))}}}$"))
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())


def _log_floor(values: pd.Series) -> float:
    v = values.to_numpy(np.float64)
    pos = v[np.isfinite(v) & (v > 0)]
    return max(float(pos.min()) if pos.size else 1.0, LOG_FLOOR)


def _seeds_note(tables: dict[str, pd.DataFrame], task: str | None = None) -> list[str]:
    runs = tables.get("runs")
    if runs is None or runs.empty:
        return []
    r = runs if task is None else runs[runs["task"] == task]
    out = []
    n_seeds = r.groupby("cell", observed=True)["seed"].nunique()
    if len(n_seeds):
        lo, hi = int(n_seeds.min()), int(n_seeds.max())
        out.append(f"seeds per cell: {lo}" if lo == hi else f"seeds per cell: {lo}-{hi}")
    if "diverged_step" in r.columns:
        div = int((r["diverged_step"] >= 0).sum())
        if div:
            out.append(f"{div} of {len(r)} runs diverged (their curves end where they diverged)")
    return out


# -- 1. loss curves ----------------------------------------------------------------------

def loss_curves(tables: dict[str, pd.DataFrame], task: str, plateaus: pd.DataFrame | None = None) -> Figure:
    """A task's primary metric over training: one panel per split (train, then each OOD split),
    one line per method label: the mean over seeds (geometric on the log axis) with a 95%
    bootstrap CI band (seaborn, ``seed=0``). Log y (linear 0..1 for ``error``); log x
    (symlog, so step 0 shows) when the evaluation steps are log-spaced. Panels share axes.

    Args:
        tables: suite tables.
        task: task name.
        plateaus: optional detected plateaus with columns ``cell, run, seed, piece, start,
            end`` (steps); rows of ``piece == "all"`` (all rows when there are none) are
            drawn as a rug of thin bars at the bottom of every panel, one row per run, in
            the run's method colour.
    """
    info = task_facts(tables, task)
    primary = info["primary"]
    h = tables["history"]
    d = h[(h["task"] == task) & (h["metric"] == primary) & (h["piece"] == "all")].copy()
    labels = method_labels(tables)
    pal = _palette(labels)
    d = _with_labels(d, labels)
    d["split"] = d["split"].astype(str)
    logy = primary != "error"
    if logy:
        d["value"] = d["value"].clip(lower=_log_floor(d["value"]))
    splits = split_order(tables, task)
    logx = log_spaced(d["step"])
    n = len(splits)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    meta = [f"{primary} ({METRIC_NAMES.get(primary, primary)}) on each split over training   |   "
            f"target: {info['target']}   |   model: {', '.join(info['models'])}   |   "
            f"optimizer: {', '.join(info['optimizers'])}",
            "   |   ".join(["lines: mean over seeds" + (" (geometric, log axis)" if logy else "")
                            + ", bands: 95% bootstrap CI", *_seeds_note(tables, task)]
                           + (["steps log-spaced (symlog x axis)"] if logx else []))]
    with _style():
        fig = _figure(f"{task}: {primary} over training", meta, 2.55 * nrows + 0.3)
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        order = _label_order(d["label"].dropna(), pal)
        for i, split in enumerate(splits):
            ax = axes.flat[i]
            if logy:
                ax.set_yscale("log")  # before plotting: seaborn then aggregates in log space
            _step_axis(ax, logx, d["step"].max())
            sub = d[d["split"] == split]
            if not sub.empty:
                sns.lineplot(data=sub, x="step", y="value", hue="label", hue_order=order, palette=pal,
                             errorbar=("ci", 95), seed=0, n_boot=500, ax=ax, legend=False, lw=1.6,
                             err_kws={"alpha": 0.18, "lw": 0})
            title = f"{split} (in-distribution)" if split == "train" else f"{split} (OOD)"
            ax.set_title(title, color="#222222" if split == "train" else _ood_colors(splits)[split],
                         fontweight="bold")
            ax.set_xlabel("training step" if i // ncols == nrows - 1 or i + ncols >= n else "")
            ax.set_ylabel(primary if i % ncols == 0 else "")
            if plateaus is not None and not plateaus.empty:
                _draw_plateau_rug(ax, plateaus, tables, task, labels, pal, order)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        if not logy:
            axes.flat[0].set_ylim(-0.02, 1.02)
        elif len(d):
            _log_ticks(axes.flat[0].yaxis, axes.flat[0].get_ylim())  # shared: all panels
        handles = [Line2D([], [], color=pal[lab], lw=2, label=lab) for lab in order]
        handles.append(Patch(facecolor="#888888", alpha=0.3, label="95% CI over seeds"))
        if plateaus is not None and not plateaus.empty:
            handles.append(Line2D([], [], color="#555555", lw=2.2, solid_capstyle="butt",
                                  label="plateau (rug: a row per run)"))
        axes.flat[min(ncols, n) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                                            borderaxespad=0.0, frameon=False, title="method")
    return fig


def _draw_plateau_rug(ax, plateaus, tables, task, labels, pal, order) -> None:
    cells = labels.loc[labels["task"] == task, "cell"].unique()
    p = plateaus[plateaus["cell"].isin(cells)]
    if "piece" in p.columns and (p["piece"] == "all").any():
        p = p[p["piece"] == "all"]
    if p.empty:
        return
    runs = tables.get("runs")
    if runs is not None and all(c in runs.columns for c in HP_COLUMNS):
        p = p.merge(runs[["cell", "run", *HP_COLUMNS]].drop_duplicates(), on=["cell", "run"], how="left")
    p = _with_labels(p, labels)
    rows = p[["label", "cell", "run"]].drop_duplicates()
    rows["o"] = rows["label"].map(lambda s: order.index(s) if s in order else len(order))
    rows = rows.sort_values(["o", "cell", "run"]).reset_index(drop=True)
    pos = {(r.cell, r.run): i for i, r in enumerate(rows.itertuples())}
    step = min(0.014, 0.22 / max(len(rows), 1))
    tr = ax.get_xaxis_transform()
    for r in p.itertuples():
        y = 0.012 + step * pos[(r.cell, r.run)]
        ax.plot([r.start, r.end], [y, y], transform=tr, color=pal.get(r.label, "#555555"), lw=1.8,
                solid_capstyle="butt", alpha=0.85, zorder=5, gid="plateau")


# -- 2. OOD vs train ------------------------------------------------------------------------

def _final_split_values(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per (task, cell, run, label, seed): final primary on train and mean over OOD splits."""
    h = tables["history"]
    h = h[(h["piece"] == "all") & (h["metric"].astype(str) == h["primary"].astype(str))]
    f = _final_rows(h)
    f = _with_labels(f, method_labels(tables))
    f = f.assign(ood=f["split"].astype(str) != "train")
    keys = ["task", "cell", "run", "seed", "label", "primary"]
    g = f.groupby([*keys, "ood"], observed=True)["value"].mean().unstack("ood")
    g = g.rename(columns={False: "train", True: "ood"}).reset_index()
    for c in ("train", "ood"):
        if c not in g.columns:
            g[c] = np.nan
    g["task"] = g["task"].astype(str)
    return g


def ood_vs_train(tables: dict[str, pd.DataFrame]) -> Figure:
    """Final train vs final OOD primary metric (the mean over a task's OOD splits), one small
    log-log panel per task with OOD splits, one point per (method label, seed), hue method;
    a large outlined marker per method at the mean (geometric) and the y = x line (on it: no
    generalization gap). ``error`` tasks use linear 0..1 axes. Non-finite values (diverged
    runs) are left out and counted in the panel title.
    """
    g = _final_split_values(tables)
    labels = method_labels(tables)
    pal = _palette(labels)
    tasks = [t for t in _tasks(tables) if g.loc[g["task"] == t, "ood"].notna().any()]
    if not tasks:
        raise ValueError("ood_vs_train: no task has an OOD split in the history")
    n = len(tasks)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    panel = min(2.05, (WIDTH_IN - 1.6) / ncols)
    with _style():
        fig = _figure("Final OOD vs train error", [
            "each small point: one run (method, seed) at its last step; x: train primary metric, y: mean of "
            "the primary metric over the task's OOD splits; large outlined marker: mean over seeds (geometric "
            "on log axes); dashed: y = x (no generalization gap)"], panel * nrows + 0.35)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        used: list[str] = []
        for ax, task in zip(axes.flat, tasks, strict=False):
            t = g[g["task"] == task]
            primary = str(t["primary"].iloc[0])
            ok = np.isfinite(t["train"]) & np.isfinite(t["ood"])
            bad = int((~ok).sum())
            t = t[ok]
            logs = primary != "error"
            order = _label_order(t["label"], pal)
            used += [lab for lab in order if lab not in used]
            if logs and not t.empty:
                floor = max(min(t["train"][t["train"] > 0].min(), t["ood"][t["ood"] > 0].min()), LOG_FLOOR) \
                    if ((t["train"] > 0).any() and (t["ood"] > 0).any()) else 1.0
                t = t.assign(train=t["train"].clip(lower=floor), ood=t["ood"].clip(lower=floor))
            for lab in order:
                s = t[t["label"] == lab]
                ax.scatter(s["train"], s["ood"], s=14, color=pal[lab], alpha=0.85, lw=0.3, edgecolor="white",
                           zorder=4, gid=f"seed:{lab}")
                if len(s):
                    mx = np.exp(np.log(s["train"]).mean()) if logs else s["train"].mean()
                    my = np.exp(np.log(s["ood"]).mean()) if logs else s["ood"].mean()
                    ax.scatter([mx], [my], s=42, color=pal[lab], edgecolor="#111111", lw=0.9, zorder=3,
                               marker="D", alpha=0.75, gid=f"mean:{lab}")
            if logs:
                ax.set_xscale("log")
                ax.set_yscale("log")
                vals = np.concatenate([t["train"].to_numpy(), t["ood"].to_numpy()]) if len(t) else np.array([1.0])
                lo, hi = np.log10(vals.min()), np.log10(vals.max())
                pad = max(0.15 * (hi - lo), 0.25)
                lim = (10 ** (lo - pad), 10 ** (hi + pad))
            else:
                lim = (-0.03, 1.03)
            ax.plot(lim, lim, color="#777777", ls=(0, (4, 3)), lw=1.0, zorder=1)
            ax.set_xlim(lim)
            ax.set_ylim(lim)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(task + (f"  ({bad} non-finite)" if bad else ""), fontsize=9, pad=3)
            ax.set_xlabel(f"train {primary}", fontsize=8, labelpad=1)
            ax.set_ylabel(f"OOD {primary}", fontsize=8, labelpad=1)
            ax.tick_params(labelsize=7, pad=1)
            if logs:
                _log_ticks(ax.xaxis, lim)
                _log_ticks(ax.yaxis, lim)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        handles = [Line2D([], [], ls="none", marker="o", color=pal[lab], label=lab) for lab in used]
        handles += [Line2D([], [], ls="none", marker="D", color="#bbbbbb", markeredgecolor="#111111",
                           label="mean over seeds"),
                    Line2D([], [], color="#777777", ls=(0, (4, 3)), label="y = x")]
        axes.flat[min(ncols, n) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.06, 1.0),
                                            borderaxespad=0.0, frameon=False, title="method")
    return fig


def _log_ticks(axis, lim) -> None:
    """Decade ticks, thinned to at most 4; 1-2-5 ticks when the range spans under 1.5 decades."""
    lo, hi = np.log10(lim[0]), np.log10(lim[1])
    if hi - lo < 1.5:
        axis.set_major_locator(mpl.ticker.LogLocator(subs=(1.0, 2.0, 5.0), numticks=8))
        axis.set_major_formatter(mpl.ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
    else:
        step = int(np.ceil((hi - lo) / 4))
        decades = [10.0 ** k for k in range(int(np.ceil(lo)), int(np.floor(hi)) + 1) if k % step == 0]
        axis.set_major_locator(mpl.ticker.FixedLocator(decades))
        axis.set_major_formatter(mpl.ticker.LogFormatterSciNotation())
    axis.set_minor_formatter(mpl.ticker.NullFormatter())


# -- 3. piece heatmap -----------------------------------------------------------------------

def _short(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-2 <= a < 100:
        return f"{v:.2g}" if a < 1 else f"{v:.3g}"
    m, e = f"{v:.1e}".split("e")
    return f"{m}e{int(e)}"


def piece_heatmap(tables: dict[str, pd.DataFrame]) -> Figure:
    """Final primary metric per piece: rows ``task: piece`` (train panel, top) and
    ``task: split: piece`` (OOD panel, below), columns method labels; colour log10 of the
    mean over seeds (shared scale, one colour bar), the value written in each cell. Rows
    of different tasks can hold different metrics (named in the row label). Whole-split
    ("all") rows are left out.
    """
    h = tables["history"]
    h = h[(h["piece"] != "all") & (h["metric"].astype(str) == h["primary"].astype(str))]
    f = _final_rows(h)
    labels = method_labels(tables)
    pal = _palette(labels)
    f = _with_labels(f, labels)
    f = f.assign(task=f["task"].astype(str), split=f["split"].astype(str), piece=f["piece"].astype(str))
    m = f.groupby(["task", "split", "piece", "primary", "label"], observed=True, sort=False)["value"].mean()
    m = m.reset_index()
    if m.empty:
        raise ValueError("piece_heatmap: no per-piece rows in the history")
    cols = _label_order(m["label"], pal)
    task_rank = {t: i for i, t in enumerate(_tasks(tables))}
    split_rank = {t: {s: i for i, s in enumerate(split_order(tables, t))} for t in task_rank}
    piece_rank = {t: {p: i for i, p in enumerate(dict.fromkeys(f.loc[f["task"] == t, "piece"]))} for t in task_rank}
    m["o"] = [(task_rank.get(t, 99), split_rank.get(t, {}).get(s, 99), piece_rank.get(t, {}).get(p, 99))
              for t, s, p in zip(m["task"], m["split"], m["piece"], strict=True)]
    panels = []
    for ood in (False, True):
        sub = m[(m["split"] != "train") == ood]
        if sub.empty:
            continue
        sub = sub.sort_values("o")
        sub = sub.assign(row=[f"{t}: {p} ({pr})" if not ood else f"{t}: {s}: {p} ({pr})"
                              for t, s, p, pr in zip(sub["task"], sub["split"], sub["piece"], sub["primary"],
                                                     strict=True)])
        mat = sub.pivot_table(index="row", columns="label", values="value", sort=False, dropna=False)
        mat = mat.reindex(columns=cols)
        rows_task = sub.drop_duplicates("row").set_index("row")["task"].reindex(mat.index)
        panels.append(("OOD splits" if ood else "train (in-distribution)", mat, rows_task.to_numpy()))
    allv = np.concatenate([p[1].to_numpy().ravel() for p in panels])
    pos = allv[np.isfinite(allv) & (allv > 0)]
    floor = max(float(pos.min()) if pos.size else 1e-6, LOG_FLOOR)
    lv = np.log10(np.clip(allv[np.isfinite(allv)], floor, None))
    vmin, vmax = (float(np.percentile(lv, 1)), float(np.percentile(lv, 99))) if lv.size else (-3.0, 0.0)
    if vmax - vmin < 0.5:
        vmin, vmax = vmin - 0.25, vmax + 0.25
    norm = Normalize(vmin, vmax)
    cmap = sns.color_palette("rocket_r", as_cmap=True)
    n_rows = [len(p[1]) for p in panels]
    row_h = 0.2
    with _style():
        fig = _figure("Final error per piece", [
            "colour: log10 of the final primary metric (mean over seeds) on each piece of each split; the value "
            "is written in the cell; darker is worse. Metrics differ across tasks (named in each row)."],
            row_h * sum(n_rows) + 0.75 * len(panels) + 0.2)
        gs = fig.add_gridspec(len(panels), 2, height_ratios=[max(r, 1) + 2.5 for r in n_rows],
                              width_ratios=(1.0, 0.03))
        for i, (title, mat, rows_task) in enumerate(panels):
            ax = fig.add_subplot(gs[i, 0])
            vals = mat.to_numpy(np.float64)
            img = np.log10(np.clip(vals, floor, None))
            im = ax.imshow(np.ma.masked_invalid(img), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
            for (r, c), v in np.ndenumerate(vals):
                if not np.isfinite(v):
                    ax.text(c, r, "n/a", ha="center", va="center", fontsize=7, color="#9a9a9a")
                    continue
                dark = norm(np.log10(max(v, floor))) > 0.55
                ax.text(c, r, _short(v), ha="center", va="center", fontsize=7.2,
                        color="white" if dark else "#111111")
            ax.set_xticks(range(len(cols)))
            ax.set_xticklabels(cols, fontsize=8.5)
            ax.xaxis.tick_top()
            ax.set_yticks(range(len(mat)))
            ax.set_yticklabels(mat.index, fontsize=7.5)
            ax.grid(False)
            ax.set_title(title, fontweight="bold", loc="left", fontsize=9.5)
            for r in range(1, len(rows_task)):  # a line between tasks
                if rows_task[r] != rows_task[r - 1]:
                    ax.axhline(r - 0.5, color="white", lw=2.2)
            for c in range(1, len(cols)):
                ax.axvline(c - 0.5, color="white", lw=1.0)
            ax.tick_params(length=0)
            for s in ax.spines.values():
                s.set_visible(False)
        cax = fig.add_subplot(gs[:, 1])
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("log10 final metric (mean over seeds)")
    return fig


# -- 5. attribution bars -----------------------------------------------------------------------

def _candidate_colors(names_by_task: dict[str, list[str]]) -> dict[tuple[str, str], tuple]:
    """(task, candidate) -> colour, by kind: target green, pieces blues, named candidates
    oranges then purples, linear_fit grey."""
    out = {}
    for task, names in names_by_task.items():
        pieces = [n for n in names if n.startswith("piece:")]
        named = [n for n in names if n not in pieces and n not in ("target", "linear_fit")]
        blues = sns.color_palette("Blues_r", max(len(pieces), 1) + 2)
        warm = [*sns.color_palette("Oranges_r", 4)[:3], *sns.color_palette("Purples_r", 4)[:3]]
        for n in names:
            if n == "target":
                out[task, n] = sns.color_palette("colorblind")[2]
            elif n == "linear_fit":
                out[task, n] = (0.62, 0.62, 0.62)
            elif n in pieces:
                out[task, n] = blues[pieces.index(n) + 1]
            else:
                out[task, n] = warm[named.index(n) % len(warm)]
    return out


def attribution_bars(tables: dict[str, pd.DataFrame]) -> Figure:
    """Which behaviour the final predictions on each OOD split follow: per (task: split, method)
    a stacked horizontal bar of the fractions of the split's probe points whose final
    prediction is closest to each candidate (mean over seeds). Colour by kind of candidate
    (target green; ``piece:<name>``, a piece's function continued, blues; named task
    candidates oranges/purples; ``linear_fit`` grey), each segment named where it fits.
    """
    a = tables["attribution"]
    if a.empty:
        raise ValueError("attribution_bars: the attribution table is empty")
    labels = method_labels(tables)
    pal = _palette(labels)
    a = _with_labels(a, labels)
    a = a.assign(task=a["task"].astype(str), split=a["split"].astype(str), candidate=a["candidate"].astype(str))
    m = a.groupby(["task", "split", "label", "candidate"], observed=True, sort=False)["fraction"].mean()
    m = m.reset_index()
    task_rank = {t: i for i, t in enumerate(_tasks(tables))}
    names_by_task = {t: list(dict.fromkeys(a.loc[a["task"] == t, "candidate"])) for t in m["task"].unique()}
    colors = _candidate_colors(names_by_task)
    groups = sorted(m[["task", "split"]].drop_duplicates().itertuples(index=False),
                    key=lambda ts: (task_rank.get(ts[0], 99), split_order(tables, ts[0]).index(ts[1])
                                    if ts[1] in split_order(tables, ts[0]) else 99))
    bars = []  # (y, task, split, label)
    y = 0.0
    ticks, group_y = [], []
    for task, split in groups:
        labs = _label_order(m.loc[(m["task"] == task) & (m["split"] == split), "label"], pal)
        group_y.append((y, task, split))
        y += 1.0
        for lab in labs:
            bars.append((y, task, split, lab))
            ticks.append((y, lab))
            y += 1.0
        y += 0.35
    bar_h = 0.8
    per_unit = 0.2
    width_in = WIDTH_IN - 2.6  # the bars' width in inches, roughly (method names left, a short note right)
    with _style():
        fig = _figure("OOD attribution: which behaviour the final predictions follow", [
            "per OOD split and method: fraction of the split's probe points whose final prediction is closest to "
            "each candidate (mean over seeds); green: the true target; blues: a piece's function continued "
            "(piece:<name>); oranges/purples: the task's named candidates; grey: the least-squares affine fit "
            "of the training data; right of a bar: the largest segment too narrow to name (+ how many more)"],
            per_unit * y + 0.6)
        ax = fig.add_subplot(1, 1, 1)
        for yb, task, split, lab in bars:
            s = m[(m["task"] == task) & (m["split"] == split) & (m["label"] == lab)]
            left = 0.0
            unnamed = []
            for cand in names_by_task[task]:
                fr = float(s.loc[s["candidate"] == cand, "fraction"].sum())
                if fr <= 0:
                    continue
                col = colors[task, cand]
                ax.barh(yb, fr, left=left, height=bar_h, color=col, edgecolor="white", lw=0.6,
                        gid=f"attr:{task}:{split}:{lab}:{cand}")
                text = cand.removeprefix("piece:") + (" (piece)" if cand.startswith("piece:") else "")
                if fr * width_in > len(text) * 7.2 * 0.56 / 72 + 0.08:
                    dark = sum(col[:3]) / 3 < 0.55
                    ax.text(left + fr / 2, yb, text, ha="center", va="center", fontsize=7.2,
                            color="white" if dark else "#111111", clip_on=True)
                elif fr >= 0.005:
                    unnamed.append((fr, cand))
                left += fr
            if unnamed:  # segments too narrow to name: the largest named right of the bar
                unnamed.sort(reverse=True)
                f0, c0 = unnamed[0]
                c0 = c0 if len(c0) <= 22 else c0[:21] + "…"
                more = "" if len(unnamed) == 1 else f" +{len(unnamed) - 1}"
                ax.text(1.01, yb, f"{c0} {f0:.0%}{more}", transform=ax.get_yaxis_transform(), ha="left",
                        va="center", fontsize=7, color="#555555")
        for yg, task, split in group_y:
            ax.text(0.0, yg + 0.1, f"{task}: {split}", ha="left", va="center", fontsize=8.5,
                    fontweight="bold", transform=ax.get_yaxis_transform(), color="#222222")
        ax.set_yticks([t for t, _ in ticks])
        ax.set_yticklabels([lab for _, lab in ticks], fontsize=8)
        for tl, (_, lab) in zip(ax.get_yticklabels(), ticks, strict=True):
            tl.set_color(pal.get(lab, "#333333"))
        ax.set_ylim(y - 0.2, -0.3)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of the OOD split's probe points closest to the candidate")
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
        kinds = [("target", sns.color_palette("colorblind")[2]), ("piece continued (piece:<name>)",
                                                                  sns.color_palette("Blues_r", 4)[1]),
                 ("named task candidate", sns.color_palette("Oranges_r", 4)[0]),
                 ("linear_fit", (0.62, 0.62, 0.62))]
        present = {c for n in names_by_task.values() for c in n}
        keep = [k for k in kinds if (k[0] == "target" and "target" in present)
                or (k[0].startswith("piece") and any(c.startswith("piece:") for c in present))
                or (k[0] == "linear_fit" and "linear_fit" in present)
                or (k[0].startswith("named") and any(not c.startswith("piece:") and c not in ("target", "linear_fit")
                                                     for c in present))]
        ax.legend(handles=[Patch(facecolor=c, label=k) for k, c in keep], loc="lower left",
                  bbox_to_anchor=(0.0, 1.0), ncol=len(keep), frameon=False, borderaxespad=0.3,
                  handlelength=1.6, columnspacing=1.4)
    return fig


# -- 4. probe trajectories -----------------------------------------------------------------------

def _probe_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The probes table with the true target value renamed ``target`` for the plotting code.

    docs/suite_tables.md names the value ``y`` (``target`` is the cell's target kind).
    """
    p = tables["probes"]
    if "y" in p.columns:
        p = p.drop(columns=[c for c in p.columns if c == "target"]).rename(columns={"y": "target"})
    return p


class _Cube:
    """One run's probe predictions as arrays: steps [E], x0/x1/split [P], pred [E, P, K], target [P, K]."""

    def __init__(self, df: pd.DataFrame):
        self.steps = np.sort(df["step"].unique()).astype(np.float64)
        probes = np.sort(df["probe"].unique())
        outputs = np.sort(df["output"].unique())
        e = np.searchsorted(self.steps, df["step"].to_numpy(np.float64))
        p = np.searchsorted(probes, df["probe"].to_numpy())
        k = np.searchsorted(outputs, df["output"].to_numpy())
        self.pred = np.full((len(self.steps), len(probes), len(outputs)), np.nan)
        self.pred[e, p, k] = df["pred"].to_numpy(np.float64)
        self.target = np.full((len(probes), len(outputs)), np.nan)
        self.target[p, k] = df["target"].to_numpy(np.float64)
        first = df.drop_duplicates("probe").set_index("probe").reindex(probes)
        self.x0 = first["x0"].to_numpy(np.float64)
        self.x1 = first["x1"].to_numpy(np.float64) if "x1" in first else np.full(len(probes), np.nan)
        self.split = first["split"].astype(str).to_numpy()
        self.K = len(outputs)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.nanmax(z, axis=-1, keepdims=True)
    return z - np.log(np.nansum(np.exp(z), axis=-1, keepdims=True))


def _probe_value(cube: _Cube, target: str) -> tuple[np.ndarray, np.ndarray | None, str]:
    """Per (step, probe) value shown in the heatmaps, the target's value per probe (or None)
    and a name: prediction (output 0), KL(target || prediction), or whether the argmax is the
    label (class tasks: 1 or 0; the same yardstick as the ``error`` metric whatever the method's
    outputs are, where a softmax probability would not be: MSE outputs are no logits)."""
    if target == "distribution":
        lt, lp = _log_softmax(cube.target), _log_softmax(cube.pred)
        kl = np.sum(np.exp(lt)[None] * (lt[None] - lp), axis=-1)
        return np.maximum(kl, 0.0), None, "KL(target || prediction)"
    if target == "class":
        lab = np.nanargmax(np.nan_to_num(cube.target, nan=-1.0), axis=-1)
        correct = (np.nanargmax(np.nan_to_num(cube.pred, nan=-np.inf), axis=-1) == lab[None, :]).astype(np.float64)
        return np.where(np.isnan(cube.pred).all(-1), np.nan, correct), None, "argmax = label"
    return cube.pred[..., 0], cube.target[:, 0], "prediction" + (" (output 0)" if cube.K > 1 else "")


def _edges(v: np.ndarray, integer: bool) -> np.ndarray:
    """Cell edges around sorted sample points: midpoints inside; +-0.5 (integers) or the end points."""
    if len(v) == 1:
        return np.array([v[0] - 0.5, v[0] + 0.5])
    mids = (v[1:] + v[:-1]) / 2
    if integer:
        return np.concatenate([[v[0] - 0.5], mids, [v[-1] + 0.5]])
    return np.concatenate([[v[0]], mids, [v[-1]]])


def _is_integer_axis(v: np.ndarray) -> bool:
    v = np.unique(v[np.isfinite(v)])
    return len(v) > 1 and bool(np.all(v == np.round(v))) and bool(np.all(np.diff(v) == 1))


def _run_bounds(mask: np.ndarray) -> list[tuple[int, int]]:
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist(), strict=True))


def train_intervals(x0: np.ndarray, split: np.ndarray, integer: bool | None = None) -> list[tuple[float, float]]:
    """Contiguous x0 intervals where 1-D grid probes are in ``train`` (cell edges)."""
    o = np.argsort(x0)
    xs, sp = x0[o], split[o]
    e = _edges(xs, _is_integer_axis(xs) if integer is None else integer)
    return [(float(e[a]), float(e[b + 1])) for a, b in _run_bounds(sp == "train")]


def _probe_runs(tables, task: str, method) -> list[tuple[str, pd.DataFrame, dict]]:
    """(label, the probes of its first run, facts) per selected method label of the task."""
    p = _probe_table(tables)
    p = p[p["task"] == task]
    if p.empty:
        raise ValueError(f"probe_trajectory: no probes for task {task!r}")
    labels = method_labels(tables)
    p = _with_labels(p, labels)
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
    order = _label_order(p["label"], _palette(labels))
    for lab in order:
        s = p[p["label"] == lab]
        run = s["run"].min()
        s = s[s["run"] == run]
        out.append((lab, s, {"cell": s["cell"].iloc[0], "run": run, "seed": s["seed"].iloc[0]}))
    return out


def _run_curves(tables, task: str, picks, primary: str) -> pd.DataFrame:
    h = tables["history"]
    h = h[(h["task"] == task) & (h["metric"].astype(str) == primary) & (h["piece"] == "all")]
    parts = []
    for lab, _, facts in picks:
        s = h[(h["cell"] == facts["cell"]) & (h["run"] == facts["run"])]
        parts.append(s.assign(label=lab, split=s["split"].astype(str)))
    return pd.concat(parts, ignore_index=True) if parts else h.iloc[:0]


def _draw_run_curves(ax, curves, splits, pal, primary, logx, marks=()) -> dict:
    """The primary metric of the probed runs (colour: method, style: split); returns the styles."""
    dash = _split_dashes(splits)
    logy = primary != "error"
    for (lab, split), s in curves.groupby(["label", "split"], sort=False):
        s = s.sort_values("step")
        v = s["value"].to_numpy(np.float64)
        if logy:
            v = np.clip(v, _log_floor(curves["value"]), None)
        ax.plot(s["step"], v, color=pal[lab], ls=dash.get(split, "solid"), lw=1.5)
    if logy:
        ax.set_yscale("log")
        if len(curves):
            _log_ticks(ax.yaxis, ax.get_ylim())
    else:
        ax.set_ylim(-0.02, 1.02)
    _step_axis(ax, logx, curves["step"].max() if len(curves) else None)
    for st in marks:
        ax.axvline(st, color="#444444", lw=0.8, ls=":", zorder=0)
    ax.set_xlabel("training step")
    ax.set_ylabel(primary)
    return dash


def _split_label(s: str) -> str:
    return s if s == "train" else f"{s} (OOD)"


def _legend(ax, handles: list, labels: list[str], title: str | None = None, **kw):
    """A legend that accepts tuples of handles (drawn side by side, e.g. region + line style)."""
    opts = dict(loc="center left", frameon=False, fontsize=7.8, borderaxespad=0.0, handlelength=2.6,
                title=title, title_fontsize=7.8, alignment="left")
    opts.update(kw)
    return ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0.4)}, **opts)


def probe_trajectory(tables: dict[str, pd.DataFrame], task: str, method: str | Sequence[str] | None = None
                     ) -> Figure | None:
    """What the model predicts at the probe grid over training, for one task.

    ``method``: a method label (or method name), a list of them, or None for all of the
    task's methods; each gets a row, from the first run of its cell that has probes (the
    first seed). The loss panel shows the primary metric of those same runs (colour:
    method; line style: split).

    * 1-D inputs (grid probes with ``x1`` NaN), scalar or vector targets: per method a
      heatmap of the prediction (output 0) over (training step, x0), on a colour scale
      set by the target's range (shared by all methods; beyond it saturates); the train
      region's edges as black-and-white dashed lines and a split strip at the left edge; the loss panel
      below on the same step axis; on the right the final prediction of every method
      against the target over x0, splits shaded.
    * 1-D distribution targets: the heatmap shows the per-probe KL(target || prediction)
      (log colour); on the right, per method, the log-probability of each of 3 probe
      points' most likely target class over training (solid) against its target value
      (dashed), the probes marked on the heatmap's right edge.
    * 1-D class targets: the heatmap shows whether the argmax is the label (right/wrong);
      the right panel its final value.
    * 2-D inputs: per method a row of fields over (x0, x1) at 4 steps (first, two middle
      by evaluation index, last) of the same value (prediction, KL or argmax right) and the
      target field (scalar, vector output 0; the most likely class for distributions; the
      label for classes), train region outlined, OOD splits dashed; the loss panel below
      marks the 4 steps. On an integer lattice only partly covered by probes, cells
      without a probe are left blank (light grey) and OOD probes marked with dots.

    Returns None when there is nothing to draw this way: no grid probes, or grid probes
    that are neither a full 2-D grid nor on an integer lattice (tasks of more than 2
    input dims, whose grid is scattered points). Class tasks are drawn (argmax right or
    wrong, the per-probe form of the ``error`` metric), not skipped.
    """
    picks = _probe_runs(tables, task, method)
    picks = [pk for pk in picks if not pk[1].empty]
    if not picks:
        return None
    info = task_facts(tables, task)
    labels = method_labels(tables)
    pal = _palette(labels)
    splits = split_order(tables, task)
    cubes = [(lab, _Cube(df), facts) for lab, df, facts in picks]
    two_d = np.isfinite(cubes[0][1].x1).any()
    if two_d and _grid_layout(cubes[0][1])[0] == "scatter":
        return None  # more than 2 input dims: x0, x1 of scattered points are no picture of the function
    curves = _run_curves(tables, task, picks, info["primary"])
    logx = log_spaced(cubes[0][1].steps)
    with _style():
        if two_d:
            return _trajectory_2d(task, info, cubes, curves, splits, pal, logx)
        return _trajectory_1d(task, info, cubes, curves, splits, pal, logx)


def _traj_meta(info, cubes, what: str) -> list[str]:
    runs = ", ".join(f"{lab}: seed {f['seed']}" for lab, _, f in cubes)
    return [f"{what}   |   target: {info['target']}   |   model: {', '.join(info['models'])}",
            f"one run per method ({runs}); loss panel: the primary metric ({info['primary']}) of those runs"]


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


def _class_ticks(cb, target: str) -> None:
    if target == "class":
        cb.set_ticks([0, 1])
        cb.set_ticklabels(["wrong", "right"])


def _pick_probes(xs: np.ndarray, sp: np.ndarray, n: int = 3) -> list[int]:
    """Indices (into x-sorted probes) of a few probes to follow: a quarter and three quarters into
    the largest train run, and the middle of the largest run of each OOD split; at most ``n``."""
    train, ood = [], []
    runs = _run_bounds(sp == "train")
    if runs:
        a, b = max(runs, key=lambda r: r[1] - r[0])
        train = list(dict.fromkeys([a + (b - a) // 4, a + 3 * (b - a) // 4]))
    for s in dict.fromkeys(sp):
        if s != "train" and (runs := _run_bounds(sp == s)):
            a, b = max(runs, key=lambda r: r[1] - r[0])
            ood.append((a + b) // 2)
    picks = train[:1] + ood[:max(n - 2, 1)] + train[1:]
    return list(dict.fromkeys(picks))[:n]


def _cube_values(cubes, target: str):
    """Each method's plotted values and targets, the value's name, and a shared colour scale."""
    vals, tvals, name = [], [], ""
    for _, c, _ in cubes:
        v, tv, name = _probe_value(c, target)
        vals.append(v)
        tvals.append(tv)
    return vals, tvals, name, _value_norm(vals, tvals, target)


def _trajectory_1d(task, info, cubes, curves, splits, pal, logx) -> Figure:
    target = info["target"]
    M = len(cubes)
    ocol = _ood_colors(splits)
    vals, tvals, name, (cmap, norm, extend) = _cube_values(cubes, target)
    what = {"distribution": "per-probe KL over training", "class": "argmax right or wrong over training"}.get(
        target, "prediction over training")
    heat_h = 2.0 if M <= 2 else 1.55
    fig = _figure(f"{task}: {what}", _traj_meta(info, cubes, what), heat_h * M + 2.1)
    gs = fig.add_gridspec(M + 1, 3, width_ratios=(5.0, 0.12, 2.9), height_ratios=[heat_h] * M + [1.9])
    heat_axes: list = []
    mesh = None
    integer = _is_integer_axis(cubes[0][1].x0)
    max_step = max(float(c.steps.max()) for _, c, _ in cubes)
    pcols = sns.color_palette("dark", 8)
    for i, (lab, c, facts) in enumerate(cubes):
        ax = fig.add_subplot(gs[i, 0], sharex=heat_axes[0] if heat_axes else None)
        o = np.argsort(c.x0)
        xs, sp = c.x0[o], c.split[o]
        xe, se = _edges(xs, integer), _edges(c.steps, False)
        mesh = ax.pcolormesh(se, xe, vals[i][:, o].T, cmap=cmap, norm=norm, shading="flat", rasterized=True)
        mesh.set_gid("probe_heatmap")
        _step_axis(ax, logx, max_step)
        ax.set_xlim(se[0], se[-1])
        ax.set_ylim(xe[0], xe[-1])
        runs = _run_bounds(sp == "train")
        edges = sorted({e for a, b in runs for e in ((xe[a],) if a > 0 else ()) + ((xe[b + 1],) if b + 1 < len(xs)
                                                                                  else ())})
        if len(edges) <= 4:  # train region edges (inside the domain); many edges would hide the picture
            for edge in edges:
                ax.axhline(edge, color="#111111", gapcolor="white", lw=1.1, ls=(0, (3, 3)), gid="train_edge")
        for s in splits:  # split membership: a strip at the left edge
            for a, b in _run_bounds(sp == s):
                ax.axhspan(xe[a], xe[b + 1], xmin=0, xmax=0.018, color=ocol[s], lw=0, zorder=3, gid=f"strip:{s}")
        ax.set_ylabel("x" + (" (integer)" if integer else ""))
        ax.set_title(f"{lab} (seed {facts['seed']}): {name}", loc="left", color=pal[lab], fontweight="bold")
        ax.grid(False)
        ax.tick_params(labelbottom=False)
        heat_axes.append(ax)
        if target == "distribution":
            picks = _pick_probes(xs, sp)
            for j, pi in enumerate(picks):
                ax.plot([1.0], [xs[pi]], marker="<", ms=7, color=pcols[j], transform=ax.get_yaxis_transform(),
                        clip_on=False, zorder=6, markeredgecolor="white", mew=0.6)
            rax = fig.add_subplot(gs[i, 2], sharex=heat_axes[0])
            _draw_probe_logits(rax, c, o, picks, pcols, legend=i == 0)
            _step_axis(rax, logx, max_step)
            rax.tick_params(labelbottom=i == M - 1)
            if i == 0:
                rax.set_title("marked probes: log p(top target class)", fontsize=8.5)
    cax = fig.add_subplot(gs[:M, 1])
    cb = fig.colorbar(mesh, cax=cax, extend=extend)
    cb.set_label(name, fontsize=8)
    _class_ticks(cb, target)
    lax = fig.add_subplot(gs[M, 0], sharex=heat_axes[0])
    dash = _draw_run_curves(lax, curves, splits, pal, info["primary"], logx)
    lax.set_title(f"{info['primary']} of the runs shown", loc="left", fontsize=8.5)
    handles: list = [Line2D([], [], color=pal[lab], lw=2) for lab, _, _ in cubes]
    labels = [lab for lab, _, _ in cubes]
    on_grid = set(cubes[0][1].split)
    for s in splits:
        handles.append((Patch(facecolor=ocol[s], alpha=0.5 if s == "train" else 0.9),
                        Line2D([], [], color="#444444", ls=dash[s], lw=1.5)))
        labels.append(_split_label(s) + ("" if s in on_grid else ": no grid probes"))
    if target != "distribution":
        rax = fig.add_subplot(gs[:M, 2])
        _draw_final_profile(rax, cubes, vals, tvals, splits, pal, integer, target, norm)
        if tvals[0] is not None:
            handles.append(Line2D([], [], color="#111111", ls=(0, (3, 1.5)), lw=1.4))
            labels.append("target")
    else:
        handles += [Line2D([], [], color="#444444", lw=1.5), Line2D([], [], color="#444444", lw=1.2, ls=(0, (3, 1.5)))]
        labels += ["probe: predicted log p", "probe: target log p"]
    hax = fig.add_subplot(gs[M, 2])
    hax.axis("off")
    _legend(hax, handles, labels, title="method; split: region strip, loss line")
    return fig


def _draw_probe_logits(ax, c: _Cube, o, picks, pcols, legend: bool) -> None:
    lt, lp = _log_softmax(c.target), _log_softmax(c.pred)
    for j, pi in enumerate(picks):
        p = o[pi]
        k = int(np.nanargmax(c.target[p]))
        ax.plot(c.steps, lp[:, p, k], color=pcols[j], lw=1.5, label=f"x={c.x0[p]:.3g} ({c.split[p]})")
        ax.axhline(lt[p, k], color=pcols[j], lw=1.1, ls=(0, (3, 1.5)))
    ax.set_ylabel("log p(class)", fontsize=8)
    if legend:
        ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.85, handlelength=1.5, borderpad=0.3)


def _draw_final_profile(ax, cubes, vals, tvals, splits, pal, integer, target, norm) -> None:
    c0 = cubes[0][1]
    o = np.argsort(c0.x0)
    xs, sp = c0.x0[o], c0.split[o]
    xe = _edges(xs, integer)
    ocol = _ood_colors(splits)
    for s in splits:
        for a, b in _run_bounds(sp == s):
            ax.axvspan(xe[a], xe[b + 1], color=ocol[s], alpha=0.16 if s == "train" else 0.2, lw=0, zorder=0)
    for (lab, c, _), v in zip(cubes, vals, strict=True):
        oo = np.argsort(c.x0)
        ax.plot(c.x0[oo], v[-1][oo], color=pal[lab], lw=1.8, zorder=3, marker="o" if integer else None, ms=3)
    if tvals[0] is not None:
        ax.plot(xs, tvals[0][o], color="#111111", lw=1.4, ls=(0, (3, 1.5)), zorder=4)
    ax.set_xlim(xe[0], xe[-1])
    if target == "class":
        ax.set_ylim(-0.03, 1.03)
    else:
        lo, hi = norm.vmin, norm.vmax
        fin = np.concatenate([v[-1].ravel() for v in vals])
        fin = fin[np.isfinite(fin)]
        if fin.size:  # show the final predictions, within reason
            span = hi - lo
            lo, hi = max(min(lo, fin.min()), lo - span), min(max(hi, fin.max()), hi + span)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("x" + (" (integer)" if integer else ""))
    ax.set_title("final prediction (solid) vs target (dashed)" if target != "class"
                 else "final: argmax = label (1) or not (0)", fontsize=8.5)


def _grid_layout(c: _Cube):
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


def _image(c: _Cube, v: np.ndarray, ux, uy) -> np.ndarray:
    img = np.full((len(uy), len(ux)), np.nan)
    img[np.searchsorted(uy, c.x1), np.searchsorted(ux, c.x0)] = v
    return img


def _field(ax, c: _Cube, v: np.ndarray, cmap, norm, gid: str):
    """A per-probe value over (x0, x1) on a full grid or an integer lattice (cells without a
    probe left blank, light grey)."""
    kind, ux, uy = _grid_layout(c)
    xe, ye = _edges(ux, _is_integer_axis(ux)), _edges(uy, _is_integer_axis(uy))
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


def _outline_splits_2d(ax, c: _Cube, splits, thin: bool = False) -> dict[str, str]:
    """Outline each split along the probe grid's cell edges: train solid black, OOD splits dashed
    in their colours; on a partly covered integer lattice OOD probes are marked with small
    dots instead. ``thin``: light lines without the white halo (the small step panels, so
    the field stays visible). Returns split -> "outline" | "dots" for what was drawn."""
    kind, ux, uy = _grid_layout(c)
    ocol = _ood_colors(splits)
    drawn: dict[str, str] = {}
    for s in splits:
        member = c.split == s
        if not member.any():
            continue
        if kind == "grid":
            m = _image(c, member.astype(np.float64), ux, uy) > 0.5
            if m.all():
                continue
            segs = _cell_boundaries(m, _edges(ux, _is_integer_axis(ux)), _edges(uy, _is_integer_axis(uy)))
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


def _trajectory_2d(task, info, cubes, curves, splits, pal, logx) -> Figure:
    target = info["target"]
    M = len(cubes)
    vals, tvals, name, (cmap, norm, extend) = _cube_values(cubes, target)
    what = {"distribution": "per-probe KL at 4 steps", "class": "argmax right or wrong at 4 steps"}.get(
        target, "predicted field at 4 steps")
    row_h = 1.62
    fig = _figure(f"{task}: {what}", _traj_meta(info, cubes, what), row_h * M + 2.0)
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
            _outline_splits_2d(ax, c, splits, thin=True)
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
    _class_ticks(cb, target)
    c0 = cubes[0][1]
    tax = fig.add_subplot(gs[0, 5], sharex=first, sharey=first)
    if target in ("scalar", "vector"):
        _field(tax, c0, c0.target[:, 0], cmap, norm, gid="target_field")
        tax.set_title("target" + (" (output 0)" if c0.K > 1 else ""), fontsize=8.5, pad=2)
    else:
        lab_field = np.nanargmax(np.nan_to_num(c0.target, nan=-np.inf), axis=-1).astype(np.float64)
        k = c0.K
        pal_k = sns.color_palette("husl", k) if k > 10 else sns.color_palette("colorblind", k)
        _field(tax, c0, lab_field, ListedColormap([mpl.colors.to_hex(x) for x in pal_k]),
               BoundaryNorm(np.arange(-0.5, k + 0.5), k), gid="target_field")
        tax.set_title("target: top class" if target == "distribution" else "target: label", fontsize=8.5, pad=2)
    drawn = _outline_splits_2d(tax, c0, splits)
    tax.tick_params(labelsize=7, pad=1, labelleft=False)
    if _square(c0):
        tax.set_aspect("equal", adjustable="box")
    lax = fig.add_subplot(gs[M, :4])
    dash = _draw_run_curves(lax, curves, splits, pal, info["primary"], logx, marks=marks)
    lax.set_title(f"{info['primary']} of the runs shown; dotted: the steps above", loc="left", fontsize=8.5)
    ocol = _ood_colors(splits)
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
        labels.append(_split_label(s) + ("" if s == "train" or s in drawn else ": no grid probes"))
    hax = fig.add_subplot(gs[M, 4:] if M == 1 else gs[1:, 5])
    hax.axis("off")
    _legend(hax, handles, labels, title="method; split: outline or dots, loss line")
    return fig


def _square(c: _Cube) -> bool:
    w = np.nanmax(c.x0) - np.nanmin(c.x0)
    h = np.nanmax(c.x1) - np.nanmin(c.x1)
    return h > 0 and 0.5 <= w / h <= 2
