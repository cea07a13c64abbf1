"""``ood``: the primary metric at the final step on the OOD splits and on train.

Comparison tables (display tables hold formatted strings; each has a numeric twin):

- ``ood`` / ``ood_long``: primary metric on the OOD splits, per label x task; ``ood``
  also has ``mean rank`` (rank by mean per task, 1 = lowest, ties averaged, averaged
  over the tasks the label has a finite mean on) and ``wins`` (tasks where the label's
  mean is the lowest, ties counting for each); rows sorted by mean rank. It is the
  headline table: other analyses may add columns to it.
- ``train`` / ``train_long``: the same for the train split.
- ``ratio`` / ``ratio_long``: per-run OOD / train ratio, then mean and CI (no ranks: a
  low ratio can mean a poor train fit); rows in the order of ``ood``.
- ``splits``: every split separately; ``pieces``: every (split, piece), piece != "all".
- ``divergence``: diverged runs / runs per label x task, from ``runs``.
- ``labels``: label -> method, model, optimizer, lr, weight_decay, init_scale.

Figures: OOD against train error per run, and the final error per piece.
"""

from __future__ import annotations

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    history, sel, final, order, tasks, level = v.tables["history"], v.selected, v.final, v.order, v.tasks, v.level
    split_order, piece_order = kit.order_of(history["split"]), kit.order_of(history["piece"])
    split_order = ["train"] + [s for s in split_order if s != "train"]
    ood_run, train_run = kit.per_run(sel[sel["ood"]]), kit.per_run(sel[~sel["ood"]])
    metrics = sel.drop_duplicates("task").set_index("task")["metric"].to_dict()

    out: dict[str, pd.DataFrame] = {}
    ood_long = kit.long_table(ood_run, level, rank=True)
    out["ood"] = v.wide(ood_long, rank=True)
    train_long = kit.long_table(train_run, level, rank=True)
    out["train"] = v.wide(train_long, rank=True)
    ratio_run = ood_run.merge(train_run, on=[*kit.UNIT, "metric"], suffixes=("_ood", "_train"))
    ratio_run["value"] = ratio_run["value_ood"] / ratio_run["value_train"]
    ratio_long = kit.long_table(ratio_run, level, rank=False)
    out["ratio"] = v.wide(ratio_long)

    by_task_label = {"task": tasks, "label": order}
    out["ood_long"] = kit.sort_by(ood_long, by_task_label)
    out["train_long"] = kit.sort_by(train_long, by_task_label)
    out["ratio_long"] = kit.sort_by(ratio_long, by_task_label)

    splits = v.summary(sel, ["task", "split", "label", "metric"])
    out["splits"] = kit.sort_by(splits, {"task": tasks, "split": split_order, "label": order})
    wanted = final["primary"] if v.metric is None else v.metric
    pf = final[(final["piece"] != "all") & (final["metric"] == wanted)]
    pieces = v.summary(pf, ["task", "split", "piece", "label", "metric"])
    out["pieces"] = kit.sort_by(pieces, {"task": tasks, "split": split_order, "piece": piece_order, "label": order})

    runs = v.tables.get("runs")
    if runs is not None and not runs.empty:
        r = v.with_label(runs)
        r["diverged"] = r["diverged_step"] >= 0
        div = r.groupby(["label", "task"], sort=False).agg(
            diverged=("diverged", "sum"), runs=("diverged", "size")).reset_index()
        div["diverged"] = div["diverged"].astype(int)
        div["fraction"] = div["diverged"] / div["runs"]
        out["divergence"] = kit.sort_by(div, {"label": order, "task": sorted(div["task"].unique())})
    else:
        out["divergence"] = pd.DataFrame(columns=["label", "task", "diverged", "runs", "fraction"])
    out["labels"] = kit.sort_by(v.labels, {"label": order})

    what = f"`{v.metric}`" if v.metric else "primary metric"
    per_task = ", ".join(f"{t}: {m}" for t, m in metrics.items())
    ci = f"mean [{level:.0%} bootstrap CI] over runs"
    metric_note = f"Metric per task: {per_task}. " if per_task else ""
    titles = {
        "ood": (f"OOD {what} at the final step (mean over OOD splits per run)",
                f"{metric_note}Cells: {ci}; lower is better; {kit.n_note(ood_long)}. "
                "mean rank: rank by mean per task (1 = best), averaged over tasks; "
                "wins: tasks with the best mean."),
        "train": (f"Train {what} at the final step",
                  f"{metric_note}Cells: {ci}; lower is better; {kit.n_note(train_long)}."),
        "ratio": (f"OOD / train ratio of the {what} (per run, then averaged)",
                  f"Cells: {ci}; {kit.n_note(ratio_long)}."),
        "splits": (f"{what} per split at the final step", f"{ci}."),
        "pieces": (f"{what} per split and piece at the final step", f"{ci}."),
        "divergence": ("Diverged runs", "diverged / runs per label and task."),
        "labels": ("Labels", "What each row label stands for."),
    }
    for name, (title, note) in titles.items():
        out[name].attrs.update(title=title, note=note)
    for name in ("ood", "train", "ratio"):
        out[f"{name}_long"].attrs.update(title=out[name].attrs["title"] + " (numeric)", note=out[name].attrs["note"])
    return out


def _findings(v: kit.View, compared: dict[str, pd.DataFrame]) -> list:
    """Per task: the label with the lowest OOD error, and whether its CI separates from the
    runner-up's; then any diverged runs."""
    out = []
    long = compared.get("ood_long")
    for task in v.tasks if long is not None else []:
        g = long[(long["task"] == task) & long["mean"].notna()].sort_values("mean", kind="stable")
        if g.empty:
            continue
        best, metric, runs = g.iloc[0], g.iloc[0]["metric"], int(g["n"].max())

        def shown(r, runs=runs) -> str:  # the value, and how many of the runs it rests on when not all
            part = f" ({int(r['n'])} of {runs} runs)" if int(r["n"]) < runs else ""
            return f"{r['label']} {kit.fmt_ci(r['mean'], r['ci_low'], r['ci_high'], 3)}{part}"

        text = f"lowest OOD {metric}: {shown(best)}"
        if len(g) > 1:
            nxt = g.iloc[1]
            if min(int(best["n"]), int(nxt["n"])) < 2:
                text += f"; next {shown(nxt)} (one run: no interval to compare)"
            else:
                sep = "separates from" if best["ci_high"] < nxt["ci_low"] else "does not separate from"
                text += f"; its interval {sep} the next, {shown(nxt)}"
        out.append((task, text))
    div = compared.get("divergence")
    if div is not None and len(div) and div["diverged"].sum() > 0:
        bad = div[div["diverged"] > 0]
        out.append("Diverged runs: " + ", ".join(f"{r.label} on {r.task} {r.diverged}/{r.runs}"
                                                  for r in bad.itertuples(index=False)) + ".")
    elif div is not None and len(div):
        out.append("No run diverged.")
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.ood import figures

    out = []
    for name, draw in (("ood_vs_train", figures.ood_vs_train), ("piece_heatmap", figures.piece_heatmap)):
        try:
            fig = draw(tables)
        except ValueError:  # no rows of the kind this figure needs
            continue
        if fig is not None:
            out.append(Figure(name, figures.CAPTIONS[name], fig))
    return out


@register_analysis("ood")
def ood() -> Analysis:
    """The headline comparison: OOD and train error at the final step (runs on every cell)."""
    return Analysis("ood", default=True, compare=_compare, printed=("ood", "train", "ratio"), findings=_findings,
                    figures=_figures)
