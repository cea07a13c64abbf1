"""``plateaus``: loss plateaus of every run's per-update training loss.

Derived when a results folder is read (from ``batch_loss``, so folders written before
this analysis existed get it too): ``plateau_rows`` (one row per detected plateau) and
``plateaus`` (per run: plateau count and time, final train loss, whether it reached the
zero-loss level). Comparison: ``plateaus`` (count per label x task), ``zero_loss`` (rate
of reaching zero loss) and ``plateaus_long``; the headline table gets the mean plateau
count and plateau time. Figure: per task, the loss curves with the plateaus marked.
"""

from __future__ import annotations

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis
from testbed.core.columns import CELL, SWEPT

QUANTITIES = ("plateaus", "plateau_frac", "median_duration", "reached_zero", "final_loss")


def _derive(tables: dict) -> dict[str, pd.DataFrame]:
    from testbed.analyses.plateaus.tables import run_plateaus, with_final_loss

    if "batch_loss" not in tables:
        return {}
    rows, per_run = run_plateaus(tables["batch_loss"], by=[*CELL, *SWEPT])
    return {"plateau_rows": rows, "plateaus": with_final_loss(per_run, tables["history"])}


def _long(v: kit.View) -> pd.DataFrame | None:
    plat = v.tables.get("plateaus")
    if plat is None or plat.empty:
        return None
    p = v.with_label(plat)
    longs = [v.summary(p, ["label", "task"], col).assign(quantity=col) for col in QUANTITIES if col in p.columns]
    return kit.sort_by(pd.concat(longs, ignore_index=True), {"label": v.order, "task": v.tasks})


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    plong = _long(v)
    if plong is None:
        return {}
    ci = f"mean [{v.level:.0%} bootstrap CI] over runs"
    out = {"plateaus": v.wide(plong[plong["quantity"] == "plateaus"].assign(metric="plateaus"))}
    out["plateaus"].attrs.update(
        title="Loss plateaus per run (per-update training loss)",
        note=f"Cells: plateau count, {ci}. The OOD table's 'plateaus' and 'plateau time' columns "
             "average the count and the fraction of training spent on plateaus over tasks.")
    if "reached_zero" in set(plong["quantity"]):
        out["zero_loss"] = v.wide(plong[plong["quantity"] == "reached_zero"].assign(metric="reached_zero"))
        out["zero_loss"].attrs.update(
            title="Rate of reaching the zero-loss solution",
            note=f"Fraction of runs whose final train loss (the method's objective) is below 1e-3; {ci}.")
    out["plateaus_long"] = plong
    plong.attrs.update(title="Loss plateaus (numeric)", note=(
        "quantity: plateaus (count), plateau_frac (fraction of training on plateaus), median_duration (steps), "
        "reached_zero (fraction of runs whose final train loss is below 1e-3), final_loss (the method's train loss)."))
    return out


def _headline(v: kit.View) -> pd.DataFrame | None:
    plong = _long(v)
    if plong is None:
        return None
    means = plong.groupby(["label", "quantity"])["mean"].mean().unstack()
    return pd.DataFrame({"label": means.index, "plateaus": means["plateaus"].round(2).to_numpy(),
                         "plateau time": means["plateau_frac"].map(
                             lambda x: f"{x:.0%}" if pd.notna(x) else kit.MISSING).to_numpy()})


def _findings(v: kit.View, compared: dict[str, pd.DataFrame]) -> list[str]:
    """Where training stalled most: the label x task with the most training time on plateaus."""
    plong = compared.get("plateaus_long")
    if plong is None or plong.empty:
        return []
    frac = plong[(plong["quantity"] == "plateau_frac") & plong["mean"].notna()]
    if frac.empty or frac["mean"].max() <= 0:
        return ["No loss plateaus were found."]
    worst = frac.sort_values("mean", ascending=False, kind="stable").iloc[0]
    count = plong[(plong["quantity"] == "plateaus") & (plong["label"] == worst["label"])
                  & (plong["task"] == worst["task"])]["mean"]
    n = f"{float(count.iloc[0]):.1f} plateaus per run, " if len(count) else ""
    return [f"Stalls: most time on loss plateaus for {worst['label']} on {worst['task']} "
            f"({n}{worst['mean']:.0%} of training); see the plateaus table."]


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.figkit import method_labels, task_facts
    from testbed.analyses.plateaus import figures

    out = []
    for task in dict.fromkeys(method_labels(tables)["task"]):
        try:
            fig = figures.loss_curves(tables, task, plateaus=tables.get("plateau_rows"))
        except ValueError:
            continue
        primary = task_facts(tables, task)["primary"]
        out.append(Figure("loss_curves", figures.CAPTION.format(task=task, primary=primary), fig, task))
    return out


@register_analysis("plateaus")
def plateaus() -> Analysis:
    """Plateaus of the per-update training loss (runs on every cell, derived when read)."""
    return Analysis("plateaus", default=True, derive=_derive, compare=_compare, headline=_headline,
                    printed=("plateaus", "zero_loss"), findings=_findings, figures=_figures)
