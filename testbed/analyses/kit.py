"""The comparison toolkit every analysis's comparison tables are made with.

Rows are *labels*: one per (method, model, optimizer, lr, weight_decay, init_scale)
combination. A label is the method, plus ``/model`` when the suite has more than one
model, ``/optimizer`` when it has more than one optimizer, and ``, lr=...``, ``, wd=...``,
``, init=...`` for each swept column that takes more than one value in the suite
(e.g. ``ce/mlp, lr=0.01``). The ``labels`` table maps labels back to their parts.

Statistics: the unit of replication is a run (one seed of one grid point of one cell).
A run's value is the metric at the cell's final step, whole split (``piece == "all"``);
for "OOD" it is the mean over the task's OOD splits (NaN when any of them is NaN, so a
run is never scored on a subset of splits). Means and percentile-bootstrap CIs over
runs come from `testbed.core.stats.summarize`, with the runs in seed order. Non-finite
run values (diverged runs) are left out of a cell's mean, CI and ``n``. All metrics
compared are lower-is-better (``mse``, ``kl``, ``error``, ``xent``).

`view` reads a suite's tables once into a `View`: labels, final values, the row order
(labels by mean OOD rank) and the tasks, which every analysis's ``compare`` receives.
Plain pandas and numpy: no JAX.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np
import pandas as pd

from testbed.core.columns import SWEPT
from testbed.core.stats import STATS, summarize

LABEL_PARTS = ["method", "model", "optimizer", *SWEPT]
_SWEPT_SHORT = {"lr": "lr", "weight_decay": "wd", "init_scale": "init"}
UNIT = ["label", "task", "cell", "run", "seed"]  # one run: a seed of a grid point of a cell
MISSING = "-"  # display cell of a label that has no value for a task


def plain(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with categorical columns turned back into their categories' dtype."""
    df = df.copy()
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(df[col].cat.categories.dtype)
    return df


def order_of(values: pd.Series) -> list:
    """Distinct values in category order (categorical) or order of first appearance."""
    present = pd.unique(values.dropna())
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = set(present)
        return [c for c in values.cat.categories if c in seen]
    return list(present)


def num(v) -> str:
    return format(float(v), "g")


def summary(df: pd.DataFrame, by: list[str], value: str, level: float) -> pd.DataFrame:
    """Mean, bootstrap CI and number of finite values of ``value`` per group, runs in seed
    order (the unit of replication; `testbed.core.stats.summarize`)."""
    if {"seed", "run"} <= set(df.columns):
        df = df.sort_values(["seed", "run"], kind="stable")
    return summarize(df, by, value, level)


def fmt_ci(mean: float, lo: float, hi: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "nan"
    f = f"#.{digits}g"
    return f"{format(mean, f)} [{format(lo, f)}, {format(hi, f)}]"


def sort_by(df: pd.DataFrame, keys: dict[str, list]) -> pd.DataFrame:
    """Sort by columns, each in the given value order (values not in it last, in their order).
    A categorical column too: it is ranked by the given order, not by its categories."""
    if df.empty:
        return df.reset_index(drop=True)
    pos = {c: {v: i for i, v in enumerate(order)} for c, order in keys.items()}

    def rank(s: pd.Series) -> pd.Series:  # mapping a categorical gives a categorical, sorted by its categories
        return s.astype(object).map(pos[s.name]).astype(float)

    return df.sort_values(list(keys), key=rank, kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------- final values
def final_values(history: pd.DataFrame) -> pd.DataFrame:
    """History rows at each cell's last evaluation step (the cell's maximum ``step``).

    Whole-split (``piece == "all"``) and per-piece rows are kept; categorical columns are
    made plain; a boolean column ``ood`` (``split != "train"``) is added. Without a
    ``cell`` column (e.g. a `RunResult.history`) the cell is (task, method, model, optimizer).
    """
    h = plain(history)
    by = ["cell"] if "cell" in h.columns else [c for c in ("task", "method", "model", "optimizer")
                                                if c in h.columns]
    last = h.groupby(by, sort=False)["step"].transform("max") if by else h["step"].max()
    f = h[h["step"] == last].copy()
    f["ood"] = f["split"] != "train"
    return f.reset_index(drop=True)


# ---------------------------------------------------------------------------- labels
def label_table(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Row labels: the method, plus each part that varies *within some task*.

    A part that differs only between tasks (a per-task model or optimizer override,
    say) does not split a method's row.
    """
    cols = ["task", *LABEL_PARTS]
    frames = [plain(f[[c for c in cols if c in f.columns]]) for f in frames if f is not None]
    parts = [f for f in frames if len(f)] or frames[:1]  # all empty: keep the dtypes
    combos = pd.concat(parts, ignore_index=True).drop_duplicates()
    if "task" not in combos.columns:
        combos["task"] = ""
    combos = combos.sort_values(cols, kind="stable").reset_index(drop=True)
    # A part is named when it varies among combos that agree on everything named before it
    # (and the task): an optimizer's lr is not repeated when the optimizer label differs.
    vary, fixed = {}, ["task", "method"]
    for c in LABEL_PARTS:
        if c == "method":
            continue
        vary[c] = bool((combos.groupby(fixed, dropna=False)[c].nunique(dropna=False) > 1).any())
        fixed.append(c)

    def label(r, num) -> str:
        s = str(r["method"]) + "".join(f"/{r[c]}" for c in ("model", "optimizer") if vary[c])
        return ", ".join([s, *(f"{_SWEPT_SHORT[c]}={num(r[c])}" for c in SWEPT if vary[c])])

    combos.insert(0, "label", [label(r, num) for _, r in combos.iterrows()])
    if combos.duplicated(["task", "label"]).any():  # values equal to 6 digits: print them in full
        combos["label"] = [label(r, lambda v: repr(float(v))) for _, r in combos.iterrows()]
    return combos.drop(columns="task").drop_duplicates(LABEL_PARTS).reset_index(drop=True)


def with_label(df: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    return plain(df).merge(labels, on=LABEL_PARTS, how="left", validate="many_to_one")


# ---------------------------------------------------------------------------- per-run values
def run_values(final: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """Whole-split final rows of the compared metric (``primary`` per task, or ``metric``)."""
    f = final[final["piece"] == "all"]
    wanted = f["primary"] if metric is None else metric
    return f[f["metric"] == wanted]


def per_run(sel: pd.DataFrame) -> pd.DataFrame:
    """One value per run: the mean over the selected splits, NaN if any of them is NaN."""
    if sel.empty:
        return pd.DataFrame(columns=[*UNIT, "metric", "value"])
    sel = sel.assign(_nan=sel["value"].isna())
    g = sel.groupby([*UNIT, "metric"], sort=False)
    out = g["value"].mean().to_frame()
    out.loc[g["_nan"].any(), "value"] = np.nan
    return out.reset_index()


def long_table(per_run: pd.DataFrame, level: float, rank: bool) -> pd.DataFrame:
    cols = ["label", "task", "metric", *STATS] + (["rank"] if rank else [])
    if per_run.empty:
        return pd.DataFrame(columns=cols)
    per_run = per_run.sort_values(["seed", "run"], kind="stable")  # bootstrap in seed order
    long = summary(per_run, ["label", "task", "metric"], "value", level)
    if rank:
        long["rank"] = long.groupby("task")["mean"].rank(method="average", ascending=True)
    return long[cols]


def wide_table(long: pd.DataFrame, labels: list[str], tasks: list[str], digits: int,
          rank: bool) -> tuple[pd.DataFrame, list[str]]:
    """Display table: label x task strings (+ mean rank, wins); and the row order."""
    cells = {(r.label, r.task): fmt_ci(r.mean, r.ci_low, r.ci_high, digits)
             for r in long.itertuples(index=False)}
    present = [lab for lab in labels if lab in set(long["label"])]
    wide = pd.DataFrame({"label": present})
    for t in tasks:
        wide[t] = [cells.get((lab, t), MISSING) for lab in present]
    if rank:
        best = long.groupby("task")["mean"].transform("min")
        win = (long["mean"] == best) & long["mean"].notna()
        mean_rank = long.groupby("label")["rank"].mean()
        wins = win.groupby(long["label"]).sum()
        wide["mean rank"] = [float(mean_rank.get(lab, np.nan)) for lab in present]
        wide["wins"] = [int(wins.get(lab, 0)) for lab in present]
        wide = wide.sort_values("mean rank", kind="stable", na_position="last")
    wide = wide.reset_index(drop=True)
    return wide, list(wide["label"])


def n_note(long: pd.DataFrame) -> str:
    if long.empty:
        return "no runs"
    lo, hi = int(long["n"].min()), int(long["n"].max())
    return f"runs per cell: {lo}" if lo == hi else f"runs per cell: {lo} to {hi}"


# ---------------------------------------------------------------------------- the view
class View(NamedTuple):
    """A suite's tables read once for every analysis's ``compare``.

    Attributes:
        tables: the suite tables (`testbed.load_tables` plus every analysis's derived ones).
        labels: label -> method, model, optimizer and swept values (`label_table`).
        final: labelled history rows at each cell's final step, with ``ood`` (bool).
        selected: ``final``'s whole-split rows of the compared metric (each task's primary).
        order: labels in display order: by mean rank of the OOD metric, then the rest.
        tasks: the tasks, sorted.
        metric: the metric compared (None: each task's primary).
        level: confidence level of the intervals. digits: significant digits of display strings.
    """

    tables: dict
    labels: pd.DataFrame
    final: pd.DataFrame
    selected: pd.DataFrame
    order: list
    tasks: list
    metric: str | None
    level: float
    digits: int

    def with_label(self, df: pd.DataFrame) -> pd.DataFrame:
        """``df`` (with label-part columns) with its ``label`` column."""
        return with_label(df, self.labels)

    def summary(self, df: pd.DataFrame, by: list[str], value: str = "value") -> pd.DataFrame:
        """`summary` at the view's confidence level."""
        return summary(df, by, value, self.level)

    def wide(self, long: pd.DataFrame, rank: bool = False, tasks: list | None = None) -> pd.DataFrame:
        """Display table label x task (rows in the view's order) of a long table (label, task,
        mean, ci_low, ci_high, and rank when ``rank``); ``tasks`` default every task."""
        return wide_table(long, self.order, self.tasks if tasks is None else tasks, self.digits, rank)[0]


def view(tables: dict, *, metric: str | None = None, level: float = 0.95, digits: int = 3) -> View:
    """Read a suite's tables into a `View` (``history`` is required)."""
    history = tables["history"]
    labels = label_table([history, tables.get("runs")])
    final = with_label(final_values(history), labels)
    sel = run_values(final, metric)
    tasks = sorted(set(final["task"]))
    label_order = list(dict.fromkeys(labels["label"]))  # a label may cover several combos
    ood_long = long_table(per_run(sel[sel["ood"]]), level, rank=True)
    _, order = wide_table(ood_long, label_order, tasks, digits, rank=True)
    order += [lab for lab in label_order if lab not in order]
    return View(tables, labels, final, sel, order, tasks, metric, level, digits)
