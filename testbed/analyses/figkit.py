"""What the figures of a suite's result tables share: labels, colours, splits and axes.

The figures (``testbed.analyses.<analysis>.figures``) take the tables dict
(``testbed.suites.tables.load_tables``, docs/suite_tables.md) and return a matplotlib
Figure (not registered with pyplot) in the house style of `testbed.core.style`. They
read tables, never runs; nothing here imports JAX.

Labels. A curve or point is labelled by its method label; the model, optimizer and
hyperparameters (lr, weight_decay, init_scale) are appended only where they vary
within the task (so a suite with one model and optimizer shows plain method names).
Each label keeps one colour in every figure (`palette`).

Log axes. Averages over seeds of metrics drawn on log axes are taken in log space
(geometric means; seaborn aggregates in the axis' scale), so one bad seed cannot
dominate. Nonpositive values on log axes are lifted to the smallest positive value
shown (`log_floor`); the ``error`` metric (class tasks) is drawn on linear 0..1 axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib as mpl
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerTuple

from testbed.core.columns import CELL, SWEPT
from testbed.core.style import LOG_FLOOR, WIDTH_IN, Header, figure

__all__ = ["CELL_COLUMNS", "HP_COLUMNS", "METRIC_NAMES", "final_rows", "legend", "log_floor", "log_spaced",
           "mark_stages", "natural_key", "panel_grid", "stage_starts",
           "log_ticks", "label_order", "method_labels", "palette", "seeds_note", "split_order", "step_axis",
           "suite_figure", "task_facts", "tasks", "with_labels"]

METRIC_NAMES = {"mse": "mean squared error", "kl": "KL(target || prediction)", "error": "classification error",
                "xent": "cross-entropy", "loss": "method loss"}
CELL_COLUMNS = (*CELL, "target", "primary")
HP_COLUMNS = SWEPT
TITLE_SIZE = 13.0  # suite figures' titles (a task picture's are larger)


def suite_figure(title: str, meta: Sequence[str | Sequence[str]], body_in: float,
                 width_in: float = WIDTH_IN) -> Figure:
    """A white figure with a header (title, lines of facts), laid out (constrained) below it."""
    return figure(Header(title, meta, width_in=width_in, title_size=TITLE_SIZE), body_in)


# -- labels, colours, splits ------------------------------------------------------------

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
                parts.append(g[col].map(fmt.format).astype(str))  # categorical columns map to categoricals
        lab = parts[0]
        for p in parts[1:]:
            lab = lab + " / " + p
        labels.append(pd.DataFrame({**{k: g[k] for k in keys}, "task": g["task"].astype(str), "label": lab}))
    return pd.concat(labels, ignore_index=True)


def with_labels(df: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the ``label`` column of `method_labels` (joined on cell and hyperparameters)."""
    keys = [k for k in ("cell", *HP_COLUMNS) if k in df.columns and k in labels.columns]
    return df.merge(labels[[*keys, "label"]], on=keys, how="left")


def palette(labels: pd.DataFrame) -> dict[str, tuple]:
    """A colour per label, the same in every figure: plain method names first, sorted."""
    uniq = sorted(labels["label"].unique(), key=lambda s: (" / " in s, s))
    cols = sns.color_palette("colorblind", 10) if len(uniq) <= 10 else sns.color_palette("husl", len(uniq))
    return {lab: cols[i % len(cols)] for i, lab in enumerate(uniq)}


def label_order(labels: Sequence[str], pal: dict) -> list[str]:
    """The distinct labels in the palette's order (unknown ones last)."""
    order = list(pal)
    distinct = pd.unique(pd.Series(labels, dtype=object)) if not isinstance(labels, pd.Series) else labels.unique()
    return sorted(set(distinct), key=lambda s: order.index(s) if s in order else len(order))


def natural_key(text) -> list:
    """Sort key with digit runs compared as numbers (w2 < w16)."""
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def split_order(tables: dict[str, pd.DataFrame], task: str) -> list[str]:
    """A task's splits: train first, then the OOD splits in the order the history lists them."""
    h = tables["history"]
    seen = list(dict.fromkeys(h.loc[h["task"] == task, "split"].astype(str)))
    return (["train"] if "train" in seen else []) + [s for s in seen if s != "train"]


def task_facts(tables: dict[str, pd.DataFrame], task: str) -> dict:
    """A task's target kind, primary metric, models and optimizers (from its cells)."""
    c = _cells(tables)
    c = c[c["task"] == task]
    if c.empty:
        raise ValueError(f"no cells for task {task!r}; tasks: {', '.join(map(str, tasks(tables)))}")
    row = c.iloc[0]
    return {"target": str(row.get("target", "scalar")), "primary": str(row.get("primary", "mse")),
            "models": sorted(c["model"].astype(str).unique()) if "model" in c else [],
            "optimizers": sorted(c["optimizer"].astype(str).unique()) if "optimizer" in c else []}


def tasks(tables: dict[str, pd.DataFrame]) -> list[str]:
    """The suite's tasks, in the order of its cells."""
    return list(dict.fromkeys(_cells(tables)["task"].astype(str)))


def final_rows(h: pd.DataFrame) -> pd.DataFrame:
    """Rows at the last evaluation step of each (cell, run)."""
    last = h.groupby(["cell", "run"], observed=True)["step"].transform("max")
    return h[h["step"] == last]


def seeds_note(tables: dict[str, pd.DataFrame], task: str | None = None) -> list[str]:
    """Facts for a header: seeds per cell, and how many runs diverged."""
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


# -- axes ---------------------------------------------------------------------------------

def panel_grid(title: str, meta: Sequence[str], n: int, row_in: float, pad_in: float = 0.3, max_cols: int = 3):
    """A suite figure of ``n`` panels, up to ``max_cols`` a row, sharing axes (the unused ones
    hidden). Returns (figure, axes [rows, cols], cols, rows). Call inside `style()`."""
    ncols = min(n, max_cols)
    nrows = math.ceil(n / ncols)
    fig = suite_figure(title, meta, row_in * nrows + pad_in)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes, ncols, nrows


def stage_starts(tables: dict[str, pd.DataFrame], cells) -> list[tuple[float, str]]:
    """(first step, name) of every stage after the first, of staged cells among ``cells``
    (the ``stages`` table of `testbed.train_stages`); [] when no cell was trained in stages."""
    st = tables.get("stages")
    if st is None or st.empty or "cell" not in st.columns:
        return []
    st = st[st["cell"].isin(list(cells)) & (st["start"] > 0)]
    return list(st[["start", "name"]].drop_duplicates("start").sort_values("start").itertuples(index=False,
                                                                                                 name=None))


def mark_stages(ax, starts: list[tuple[float, str]], label: bool = True) -> None:
    """Vertical lines where later stages start, named at the top of ``ax``."""
    for start, name in starts:
        ax.axvline(start, color="#222222", lw=1.0, ls=(0, (4, 2)), alpha=0.8, zorder=1, gid="stage_start")
        if label:
            ax.text(start, 0.98, f" {name}", transform=ax.get_xaxis_transform(), ha="left", va="top",
                    fontsize=7.5, color="#222222")


def log_spaced(steps) -> bool:
    """Whether evaluation steps look log-spaced (gaps growing: the largest gap is more than 4x
    the median gap)."""
    s = np.unique(np.asarray(steps, np.float64))
    s = s[s > 0]
    if len(s) < 5:
        return False
    d = np.diff(s)
    return bool(d.max() > 4 * np.median(d))


def step_axis(ax, logx: bool, max_step: float | None = None) -> None:
    """Symlog step axis (0, then decades) for log-spaced evaluations; linear otherwise."""
    if not logx:
        return
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    top = int(np.floor(np.log10(max_step))) if max_step and max_step >= 10 else 3
    ax.xaxis.set_major_locator(mpl.ticker.FixedLocator([0.0] + [10.0 ** k for k in range(1, top + 1)]))
    ax.xaxis.set_major_formatter(mpl.ticker.FuncFormatter(
        lambda v, _: "0" if v == 0 else f"$10^{{{int(round(np.log10(v)))}}}$"))
    ax.xaxis.set_minor_locator(mpl.ticker.NullLocator())


def log_floor(values: pd.Series) -> float:
    """The smallest positive finite value (at least `LOG_FLOOR`; 1 when there is none)."""
    v = values.to_numpy(np.float64)
    pos = v[np.isfinite(v) & (v > 0)]
    return max(float(pos.min()) if pos.size else 1.0, LOG_FLOOR)


def log_ticks(axis, lim) -> None:
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


def legend(ax, handles: list, labels: list[str], title: str | None = None, **kw):
    """A legend that accepts tuples of handles (drawn side by side, e.g. region + line style)."""
    opts = dict(loc="center left", frameon=False, fontsize=7.8, borderaxespad=0.0, handlelength=2.6,
                title=title, title_fontsize=7.8, alignment="left")
    opts.update(kw)
    return ax.legend(handles, labels, handler_map={tuple: HandlerTuple(ndivide=None, pad=0.4)}, **opts)
