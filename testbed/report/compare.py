"""Method comparison tables from a suite's result tables.

Reads the tables of `docs/suite_tables.md` (``history``, ``runs``, ``attribution``) and
gives tidy DataFrames with plain columns, ready for markdown, CSV and LaTeX.

Rows are *labels*: one per (method, model, optimizer, lr, weight_decay, init_scale)
combination. A label is the method, plus ``/model`` when the suite has more than one
model, ``/optimizer`` when it has more than one optimizer, and ``, lr=…``, ``, wd=…``,
``, init=…`` for each of lr, weight_decay, init_scale that takes more than one value in
the suite (e.g. ``ce/mlp, lr=0.01``). The ``labels`` table maps labels back to their parts.

Statistics: the unit of replication is a run (one seed of one grid point of one cell).
A run's value is the metric at the cell's final step, whole split (``piece == "all"``);
for "OOD" it is the mean over the task's OOD splits (NaN when any of them is NaN, so a
run is never scored on a subset of splits). Means and percentile-bootstrap CIs over
runs come from `testbed.stats.bootstrap_ci`, with the runs in seed order. Non-finite
run values (diverged runs) are left out of a cell's mean, CI and ``n``. All metrics
compared are lower-is-better (``mse``, ``kl``, ``error``, ``xent``).

`comparison` returns (display tables hold formatted strings; each has a numeric twin):

- ``ood`` / ``ood_long``: primary metric on the OOD splits, per label x task; ``ood``
  also has ``mean rank`` (rank by mean per task, 1 = lowest, ties averaged, averaged
  over the tasks the label has a finite mean on) and ``wins`` (tasks where the label's
  mean is the lowest, ties counting for each); rows sorted by mean rank.
- ``train`` / ``train_long``: the same for the train split.
- ``ratio`` / ``ratio_long``: per-run OOD / train ratio, then mean and CI (no ranks: a
  low ratio can mean a poor train fit); rows in the order of ``ood``.
- ``splits``: every split separately; ``pieces``: every (split, piece), piece != "all".
- ``attribution`` (wide, percent) / ``attribution_long``: the fraction of OOD probe
  points closest to each candidate behaviour, per task x OOD split x label.
- ``divergence``: diverged runs / runs per label x task, from ``runs``.
- ``labels``: label -> method, model, optimizer, lr, weight_decay, init_scale.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.report.tables import markdown_table
from testbed.stats import bootstrap_ci

GRID = ["lr", "weight_decay", "init_scale"]
LABEL_PARTS = ["method", "model", "optimizer", *GRID]
_GRID_SHORT = {"lr": "lr", "weight_decay": "wd", "init_scale": "init"}
_UNIT = ["label", "task", "cell", "run", "seed"]  # one run: a seed of a grid point of a cell
_STATS = ["mean", "ci_low", "ci_high", "n"]
MISSING = "-"  # display cell of a label that has no value for a task


# ---------------------------------------------------------------------------- helpers
def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with categorical columns turned back into their categories' dtype."""
    df = df.copy()
    for col in df.columns:
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(df[col].cat.categories.dtype)
    return df


def _order(values: pd.Series) -> list:
    """Distinct values in category order (categorical) or order of first appearance."""
    present = pd.unique(values.dropna())
    if isinstance(values.dtype, pd.CategoricalDtype):
        seen = set(present)
        return [c for c in values.cat.categories if c in seen]
    return list(present)


def _num(v) -> str:
    return format(float(v), "g")


def _summary(df: pd.DataFrame, by: list[str], value: str, level: float) -> pd.DataFrame:
    """Mean, bootstrap CI (`bootstrap_ci`) and number of finite values of ``value`` per group."""
    rows = []
    for key, g in df.groupby(by, sort=False, observed=True):
        v = g[value].to_numpy(dtype=np.float64)
        mean, lo, hi = bootstrap_ci(v, level=level)
        rows.append((*key, mean, lo, hi, int(np.isfinite(v).sum())))
    return pd.DataFrame(rows, columns=[*by, *_STATS])


def _fmt_ci(mean: float, lo: float, hi: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "nan"
    f = f"#.{digits}g"
    return f"{format(mean, f)} [{format(lo, f)}, {format(hi, f)}]"


def _sort(df: pd.DataFrame, keys: dict[str, list]) -> pd.DataFrame:
    """Sort by columns, each in the given value order."""
    if df.empty:
        return df.reset_index(drop=True)
    pos = {c: {v: i for i, v in enumerate(order)} for c, order in keys.items()}
    return df.sort_values(list(keys), key=lambda s: s.map(pos[s.name]), kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------- final values
def final_values(history: pd.DataFrame) -> pd.DataFrame:
    """History rows at each cell's last evaluation step (the cell's maximum ``step``).

    Whole-split (``piece == "all"``) and per-piece rows are kept; categorical columns are
    made plain; a boolean column ``ood`` (``split != "train"``) is added. Without a
    ``cell`` column (e.g. a `RunResult.history`) the cell is (task, method, model, optimizer).
    """
    h = _plain(history)
    by = ["cell"] if "cell" in h.columns else [c for c in ("task", "method", "model", "optimizer")
                                                if c in h.columns]
    last = h.groupby(by, sort=False)["step"].transform("max") if by else h["step"].max()
    f = h[h["step"] == last].copy()
    f["ood"] = f["split"] != "train"
    return f.reset_index(drop=True)


# ---------------------------------------------------------------------------- labels
def _label_table(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Row labels: the method, plus each part that varies *within some task*.

    A part that differs only between tasks (a per-task model or optimizer override,
    say) does not split a method's row.
    """
    cols = ["task", *LABEL_PARTS]
    frames = [_plain(f[[c for c in cols if c in f.columns]]) for f in frames if f is not None]
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
        return ", ".join([s, *(f"{_GRID_SHORT[c]}={num(r[c])}" for c in GRID if vary[c])])

    combos.insert(0, "label", [label(r, _num) for _, r in combos.iterrows()])
    if combos.duplicated(["task", "label"]).any():  # values equal to 6 digits: print them in full
        combos["label"] = [label(r, lambda v: repr(float(v))) for _, r in combos.iterrows()]
    return combos.drop(columns="task").drop_duplicates(LABEL_PARTS).reset_index(drop=True)


def _with_label(df: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    return _plain(df).merge(labels, on=LABEL_PARTS, how="left", validate="many_to_one")


# ---------------------------------------------------------------------------- per-run values
def _run_values(final: pd.DataFrame, metric: str | None) -> pd.DataFrame:
    """Whole-split final rows of the compared metric (``primary`` per task, or ``metric``)."""
    f = final[final["piece"] == "all"]
    wanted = f["primary"] if metric is None else metric
    return f[f["metric"] == wanted]


def _per_run(sel: pd.DataFrame) -> pd.DataFrame:
    """One value per run: the mean over the selected splits, NaN if any of them is NaN."""
    if sel.empty:
        return pd.DataFrame(columns=[*_UNIT, "metric", "value"])
    sel = sel.assign(_nan=sel["value"].isna())
    g = sel.groupby([*_UNIT, "metric"], sort=False)
    out = g["value"].mean().to_frame()
    out.loc[g["_nan"].any(), "value"] = np.nan
    return out.reset_index()


def _long(per_run: pd.DataFrame, level: float, rank: bool) -> pd.DataFrame:
    cols = ["label", "task", "metric", *_STATS] + (["rank"] if rank else [])
    if per_run.empty:
        return pd.DataFrame(columns=cols)
    per_run = per_run.sort_values(["seed", "run"], kind="stable")  # bootstrap in seed order
    long = _summary(per_run, ["label", "task", "metric"], "value", level)
    if rank:
        long["rank"] = long.groupby("task")["mean"].rank(method="average", ascending=True)
    return long[cols]


def _wide(long: pd.DataFrame, labels: list[str], tasks: list[str], digits: int,
          rank: bool) -> tuple[pd.DataFrame, list[str]]:
    """Display table: label x task strings (+ mean rank, wins); and the row order."""
    cells = {(r.label, r.task): _fmt_ci(r.mean, r.ci_low, r.ci_high, digits)
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


def _n_note(long: pd.DataFrame) -> str:
    if long.empty:
        return "no runs"
    lo, hi = int(long["n"].min()), int(long["n"].max())
    return f"runs per cell: {lo}" if lo == hi else f"runs per cell: {lo} to {hi}"


# ---------------------------------------------------------------------------- attribution
def _attribution(attr: pd.DataFrame | None, labels: pd.DataFrame, order: list[str],
                 level: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = ["task", "split", "label", "candidate", *_STATS]
    if attr is None or attr.empty:
        return pd.DataFrame(columns=["task", "split", "label"]), pd.DataFrame(columns=cols)
    split_order, cand_order = _order(attr["split"]), _order(attr["candidate"])
    a = _with_label(attr, labels)
    a = a[a["split"] != "train"]
    key = [*_UNIT, "split"]
    per_run = []
    for _, g in a.groupby(["task", "split"], sort=False):  # candidates of this task's split
        gb = g.groupby([*key, "candidate"], sort=False)
        frac = gb["fraction"].mean().unstack("candidate")  # one value per cell; NaN stays NaN
        seen = gb.size().unstack("candidate", fill_value=0)
        frac = frac.where(seen > 0, 0.0)  # a candidate missing from a run's rows: fraction 0
        per_run.append(frac.stack(future_stack=True).rename("fraction").reset_index())
    per_run = pd.concat(per_run, ignore_index=True).sort_values(["seed", "run"], kind="stable")
    long = _summary(per_run, ["task", "split", "label", "candidate"], "fraction", level)
    long = _sort(long, {"task": sorted(long["task"].unique()), "split": split_order,
                        "label": order + sorted(set(long["label"]) - set(order)),
                        "candidate": cand_order})[cols]
    # pivot (not pivot_table with dropna=False): only (task, split, label) rows that exist
    wide = long.pivot(index=["task", "split", "label"], columns="candidate", values="mean")
    wide = (100.0 * wide[[c for c in cand_order if c in wide.columns]]).round(1)
    wide = wide.reset_index()
    wide.columns.name = None
    wide = _sort(wide, {"task": sorted(wide["task"].unique()), "split": split_order,
                        "label": order + sorted(set(wide["label"]) - set(order))})
    return wide, long



ROUTING_TABLES = {
    "routing_localization": ("localization", "log10 of the median localization score over pieces per run: "
                             "own-block ablation damage over the mean damage to other pieces (0: none)."),
    "routing_identification": ("identification", "accuracy of naming the piece from the most active block."),
    "routing_recovery": ("recovery", "steps for the ablated piece to recover over the other pieces' steps "
                         "(fine-tuning on all pieces after zeroing its block)."),
}


def _routing(tables, labels, order, tasks, digits, level) -> dict[str, pd.DataFrame]:
    """Gradient-routing tables (label x task), from a suite run with analyses = ["routing"]."""
    out = {}
    for name, (src, note) in ROUTING_TABLES.items():
        df = tables.get(src)
        if df is None or df.empty:
            out[name] = pd.DataFrame(columns=["label"])
            continue
        d = _with_label(df, labels)
        keys = [*_UNIT]
        if src == "localization":
            per_run = d.groupby(keys, sort=False)["score"].median().reset_index(name="value")
            per_run["value"] = np.log10(per_run["value"].clip(lower=1e-12))
        elif src == "identification":
            per_run = d[keys + ["accuracy"]].rename(columns={"accuracy": "value"})
        else:
            per_run = d.groupby(keys, sort=False)["ratio"].first().reset_index(name="value")
        per_run = per_run.assign(metric=src).sort_values(["seed", "run"], kind="stable")
        long = _summary(per_run, ["label", "task", "metric"], "value", level)
        out[name], _ = _wide(long, order, [t for t in tasks if t in set(long["task"])], digits, rank=False)
        out[name].attrs.update(title=f"Gradient routing: {src}", note=f"{note} Cells: mean [{level:.0%} CI] over runs.")
    return out

MYOPIA_COLUMNS = {  # quantity -> display column
    "shutdown_epoch": "shutdown epoch", "turn_epoch": "reward turns", "shut_down": "shut down",
    "reward_total": "reward", "operating_loss": "task loss", "rate_unseen": "shutdown, unseen epochs",
    "rate_train": "shutdown, train inputs", "rate_ood": "shutdown, OOD inputs",
}


def myopia_per_run(final: pd.DataFrame, profile: pd.DataFrame | None) -> pd.DataFrame:
    """Per-run myopia quantities (long: _UNIT, quantity, value) from labelled final history
    rows (the myopic methods' per-run metrics and final ``shutdown_rate`` per split) and the
    labelled ``profile`` table (shutdown rate at epoch indices >= the run's epoch count)."""
    f = final[final["piece"] == "all"]
    runs = f[f["metric"] == "epochs"][[*_UNIT, "value"]].rename(columns={"value": "epochs"})
    if runs.empty:
        return pd.DataFrame(columns=[*_UNIT, "quantity", "value"])
    parts = [f[f["metric"].isin(["shutdown_epoch", "turn_epoch", "shut_down", "reward_total", "operating_loss"])]
             [[*_UNIT, "metric", "value"]].rename(columns={"metric": "quantity"})]
    rate = f[f["metric"] == "shutdown_rate"]
    parts.append(rate[~rate["ood"]][[*_UNIT, "value"]].assign(quantity="rate_train"))
    ood = rate[rate["ood"]].groupby(_UNIT, sort=False)["value"].mean().reset_index()
    parts.append(ood.assign(quantity="rate_ood"))
    if profile is not None and not profile.empty:
        pr = profile[(profile["metric"] == "shutdown_rate") & (profile["split"] == "train")]
        pr = pr[pr["step"] == pr.groupby("cell")["step"].transform("max")].merge(runs, on=_UNIT)
        unseen = pr[pr["epoch"] >= pr["epochs"]].groupby(_UNIT, sort=False)["value"].mean().reset_index()
        parts.append(unseen.assign(quantity="rate_unseen"))
    return pd.concat(parts, ignore_index=True)


def _natural(text: str) -> list:
    """Sort key with digit runs compared as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def _myopia(tables, final, labels, tasks, digits, level) -> dict[str, pd.DataFrame]:
    """Myopia tables: one row per task x label with a column per quantity."""
    prof = tables.get("profile")
    per_run = myopia_per_run(final, None if prof is None else _with_label(prof, labels))
    if per_run.empty:
        return {"myopia": pd.DataFrame(columns=["task", "label"]),
                "myopia_long": pd.DataFrame(columns=["task", "label", "quantity", *_STATS])}
    long = _summary(per_run.sort_values(["seed", "run"], kind="stable"), ["task", "label", "quantity"], "value",
                    level)
    order = sorted(set(long["label"]), key=_natural)  # H1 < H4 < H16
    long = _sort(long, {"task": tasks, "label": order, "quantity": list(MYOPIA_COLUMNS)})
    wide = long.assign(text=[
        MISSING if not math.isfinite(m) else _fmt_ci(m, lo, hi, digits) if q != "turn_epoch" else _num(m)
        for m, lo, hi, q in zip(long["mean"], long["ci_low"], long["ci_high"], long["quantity"], strict=True)])
    wide = wide.pivot(index=["task", "label"], columns="quantity", values="text")
    wide = wide[[q for q in MYOPIA_COLUMNS if q in wide.columns]].rename(columns=MYOPIA_COLUMNS).reset_index()
    wide.columns.name = None
    wide = _sort(wide, {"task": tasks, "label": order}).fillna(MISSING)
    return {"myopia": wide, "myopia_long": long}


# ---------------------------------------------------------------------------- comparison
def comparison(tables: dict[str, pd.DataFrame], *, metric: str | None = None,
               level: float = 0.95, digits: int = 3) -> dict[str, pd.DataFrame]:
    """Method comparison tables from suite tables (see the module docstring for each).

    Args:
        tables: the suite tables (`testbed.suite.load_tables`); ``history`` is required,
            ``runs`` and ``attribution`` are used when present.
        metric: the metric compared on every task; default each task's ``primary``.
        level: confidence level of the bootstrap intervals.
        digits: significant digits of the display strings (``0.0123 [0.0101, 0.0150]``).

    Returns:
        Named DataFrames with plain columns: ``ood``, ``train``, ``ratio`` (display),
        ``ood_long``, ``train_long``, ``ratio_long`` (label, task, metric, mean, ci_low,
        ci_high, n, and rank for ood/train), ``splits`` (task, split, label, metric, mean,
        ci_low, ci_high, n), ``pieces`` (task, split, piece, label, metric, mean, ...),
        ``attribution`` (task, split, label, one column per candidate: mean % of OOD
        probe points), ``attribution_long`` (task, split, label, candidate, mean, ci_low,
        ci_high, n; fractions), ``divergence`` (label, task, diverged, runs, fraction),
        ``labels``. ``DataFrame.attrs["title"]`` / ``["note"]`` describe each table.
    """
    history = tables["history"]
    runs, attr = tables.get("runs"), tables.get("attribution")
    labels = _label_table([history, runs, attr])
    split_order, piece_order = _order(history["split"]), _order(history["piece"])
    split_order = ["train"] + [s for s in split_order if s != "train"]

    final = _with_label(final_values(history), labels)
    sel = _run_values(final, metric)
    ood_run, train_run = _per_run(sel[sel["ood"]]), _per_run(sel[~sel["ood"]])
    tasks = sorted(set(final["task"]))
    metrics = sel.drop_duplicates("task").set_index("task")["metric"].to_dict()
    label_order = list(dict.fromkeys(labels["label"]))  # a label may cover several combos

    out: dict[str, pd.DataFrame] = {}
    ood_long = _long(ood_run, level, rank=True)
    out["ood"], order = _wide(ood_long, label_order, tasks, digits, rank=True)
    order += [lab for lab in label_order if lab not in order]
    train_long = _long(train_run, level, rank=True)
    out["train"], _ = _wide(train_long, order, tasks, digits, rank=True)

    ratio_run = ood_run.merge(train_run, on=[*_UNIT, "metric"], suffixes=("_ood", "_train"))
    ratio_run["value"] = ratio_run["value_ood"] / ratio_run["value_train"]
    ratio_long = _long(ratio_run, level, rank=False)
    out["ratio"], _ = _wide(ratio_long, order, tasks, digits, rank=False)

    by_task_label = {"task": tasks, "label": order}
    out["ood_long"] = _sort(ood_long, by_task_label)
    out["train_long"] = _sort(train_long, by_task_label)
    out["ratio_long"] = _sort(ratio_long, by_task_label)

    per_split = sel.sort_values(["seed", "run"], kind="stable")
    splits = _summary(per_split, ["task", "split", "label", "metric"], "value", level)
    out["splits"] = _sort(splits, {"task": tasks, "split": split_order, "label": order})

    wanted = final["primary"] if metric is None else metric
    pf = final[(final["piece"] != "all") & (final["metric"] == wanted)]
    pieces = _summary(pf.sort_values(["seed", "run"], kind="stable"),
                      ["task", "split", "piece", "label", "metric"], "value", level)
    out["pieces"] = _sort(pieces, {"task": tasks, "split": split_order, "piece": piece_order,
                                   "label": order})

    out["attribution"], out["attribution_long"] = _attribution(attr, labels, order, level)

    if runs is not None and not runs.empty:
        r = _with_label(runs, labels)
        r["diverged"] = r["diverged_step"] >= 0
        div = r.groupby(["label", "task"], sort=False).agg(
            diverged=("diverged", "sum"), runs=("diverged", "size")).reset_index()
        div["diverged"] = div["diverged"].astype(int)
        div["fraction"] = div["diverged"] / div["runs"]
        out["divergence"] = _sort(div, {"label": order, "task": sorted(div["task"].unique())})
    else:
        out["divergence"] = pd.DataFrame(columns=["label", "task", "diverged", "runs", "fraction"])

    out["labels"] = _sort(labels, {"label": order})

    plat = tables.get("plateaus")
    if plat is not None and not plat.empty:
        p = _with_label(plat, labels)
        longs = []
        quantities = ("plateaus", "plateau_frac", "median_duration", "reached_zero", "final_loss")
        for col in [q for q in quantities if q in p.columns]:
            lg = _summary(p.sort_values(["seed", "run"], kind="stable"), ["label", "task"], col, level)
            longs.append(lg.assign(quantity=col))
        plong = _sort(pd.concat(longs, ignore_index=True), {"label": order, "task": tasks})
        out["plateaus"], _ = _wide(plong[plong["quantity"] == "plateaus"].assign(metric="plateaus"),
                                   order, tasks, digits, rank=False)
        if "reached_zero" in set(plong["quantity"]):
            out["zero_loss"], _ = _wide(plong[plong["quantity"] == "reached_zero"].assign(metric="reached_zero"),
                                        order, tasks, digits, rank=False)
        else:
            out["zero_loss"] = pd.DataFrame(columns=["label"])
        out["plateaus_long"] = plong
        # Every suite's headline table carries the plateau count and plateau time.
        means = plong.groupby(["label", "quantity"])["mean"].mean().unstack()
        out["ood"]["plateaus"] = out["ood"]["label"].map(means["plateaus"]).round(2)
        out["ood"]["plateau time"] = out["ood"]["label"].map(means["plateau_frac"]).map(
            lambda v: f"{v:.0%}" if pd.notna(v) else "-")
    else:
        out["plateaus"] = pd.DataFrame(columns=["label"])
        out["zero_loss"] = pd.DataFrame(columns=["label"])
        out["plateaus_long"] = pd.DataFrame(columns=["label", "task", "quantity", *_STATS])

    out.update(_routing(tables, labels, order, tasks, digits, level))
    out.update(_myopia(tables, final, labels, tasks, digits, level))

    what = f"`{metric}`" if metric else "primary metric"
    per_task = ", ".join(f"{t}: {m}" for t, m in metrics.items())
    ci = f"mean [{level:.0%} bootstrap CI] over runs"
    metric_note = f"Metric per task: {per_task}. " if per_task else ""
    titles = {
        "ood": (f"OOD {what} at the final step (mean over OOD splits per run)",
                f"{metric_note}Cells: {ci}; lower is better; {_n_note(ood_long)}. "
                "mean rank: rank by mean per task (1 = best), averaged over tasks; "
                "wins: tasks with the best mean."),
        "train": (f"Train {what} at the final step",
                  f"{metric_note}Cells: {ci}; lower is better; {_n_note(train_long)}."),
        "ratio": (f"OOD / train ratio of the {what} (per run, then averaged)",
                  f"Cells: {ci}; {_n_note(ratio_long)}."),
        "splits": (f"{what} per split at the final step", f"{ci}."),
        "pieces": (f"{what} per split and piece at the final step", f"{ci}."),
        "attribution": ("Attribution: % of OOD probe points closest to each candidate",
                        "Mean over runs of the final prediction's nearest candidate."),
        "attribution_long": ("Attribution fractions", f"Fractions: {ci}."),
        "divergence": ("Diverged runs", "diverged / runs per label and task."),
        "labels": ("Labels", "What each row label stands for."),
        "plateaus": ("Loss plateaus per run (per-update training loss)",
                     f"Cells: plateau count, {ci}. The OOD table's 'plateaus' and 'plateau time' columns "
                     "average the count and the fraction of training spent on plateaus over tasks."),
        "zero_loss": ("Rate of reaching the zero-loss solution",
                      f"Fraction of runs whose final train loss (the method's objective) is below 1e-3; {ci}."),
        "myopia": ("Myopia and shutdown (myopic / nonmyopic methods)",
                   f"Cells: {ci}. shutdown epoch: the epoch where the run's batch shutdown probability first "
                   "exceeded the threshold (runs that shut down; n in myopia_long); reward turns: the first "
                   "epoch with a negative bonus; shut down: fraction of runs; reward: reward collected, in "
                   "per-epoch units; task loss: mean training-batch task loss while operating; shutdown rates: "
                   "fraction of inputs with shutdown probability above the threshold for the final model, at "
                   "epoch indices never reached in training (>= the run's epochs; train inputs), and at the "
                   "last epoch on train and OOD inputs."),
        "myopia_long": ("Myopia (numeric)", "quantity: shutdown_epoch, turn_epoch, shut_down, reward_total, "
                        "operating_loss, rate_unseen, rate_train, rate_ood; mean, CI and n over runs."),
        "plateaus_long": ("Loss plateaus (numeric)", "quantity: plateaus (count), plateau_frac (fraction of "
                          "training on plateaus), median_duration (steps), reached_zero (fraction of runs whose final train loss is "
                          "below 1e-3), final_loss (the method's train loss)."),
    }
    for name, (title, note) in titles.items():
        out[name].attrs.update(title=title, note=note)
    for name in ("ood", "train", "ratio"):
        out[f"{name}_long"].attrs.update(title=out[name].attrs["title"] + " (numeric)",
                                         note=out[name].attrs["note"])
    return out


# ---------------------------------------------------------------------------- output
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A booktabs ``tabular`` of ``df`` (index dropped; numbers right-aligned; NaN as --)."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "--" if math.isnan(v) else latex_escape(format(float(v), floatfmt))
        return latex_escape(v)

    lines = [r"% needs \usepackage{booktabs}",
             r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}",
             r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write each table as ``<name>.csv`` and ``<name>.tex`` in ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"table name {name!r} is not a plain file name")
        csv, tex = out_dir / f"{name}.csv", out_dir / f"{name}.tex"
        df.to_csv(csv, index=False)
        tex.write_text(latex_table(df))
        paths += [csv, tex]
    return paths


def render_markdown(tables: dict[str, pd.DataFrame],
                    which: Sequence[str] = ("ood", "train", "ratio", "plateaus", "zero_loss",
                                            "routing_localization", "routing_identification",
                                            "routing_recovery", "myopia", "attribution")) -> str:
    """Markdown sections (title, note, table) for the named tables, for the terminal.

    The wide ``attribution`` table is shown per task, with only that task's candidates.
    """
    parts = []
    for name in which:
        if name not in tables:
            raise KeyError(f"no table {name!r}; have {sorted(tables)}")
        df = tables[name]
        if df.empty and (name in ("plateaus", "zero_loss", "myopia") or name.startswith("routing")):  # not measured
            continue
        parts.append(f"## {df.attrs.get('title', name)}")
        if df.attrs.get("note"):
            parts.append(df.attrs["note"])
        if df.empty:
            parts.append("(no rows)")
        elif name == "attribution" and "task" in df.columns:
            for task, g in df.groupby("task", sort=False):
                g = g.drop(columns="task").dropna(axis=1, how="all")
                parts.append(f"### {task}\n\n{markdown_table(g, floatfmt='.1f')}")
        else:
            parts.append(markdown_table(df))
    return "\n\n".join(parts) + "\n"
