"""``attribution``: which behaviour the final predictions follow on the OOD splits.

Per cell (`testbed.analyses.attribution.measure.attribution`): for every run and OOD split,
the fraction of the split's probe points whose final prediction is closest to each candidate.
Comparison: ``attribution`` (wide, percent: task x OOD split x label, a column per
candidate) and ``attribution_long`` (mean, CI and n of each fraction). Figure: bars.
"""

from __future__ import annotations

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis


def _measure(task, method, result) -> dict[str, pd.DataFrame]:
    from testbed.analyses.attribution.measure import attribution

    return {"attribution": attribution(task, result)}


def _prepare(task, method, probe_x) -> None:
    from testbed.analyses.attribution.measure import candidate_values

    candidate_values(task, probe_x)  # kept: the cell's measure (and the task's other cells) read it


def attribution_tables(attr: pd.DataFrame | None, labels: pd.DataFrame, order: list[str],
                 level: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    cols = ["task", "split", "label", "candidate", *kit.STATS]
    if attr is None or attr.empty:
        return pd.DataFrame(columns=["task", "split", "label"]), pd.DataFrame(columns=cols)
    split_order, cand_order = kit.order_of(attr["split"]), kit.order_of(attr["candidate"])
    a = kit.with_label(attr, labels)
    a = a[a["split"] != "train"]
    key = [*kit.UNIT, "split"]
    per_run = []
    for _, g in a.groupby(["task", "split"], sort=False):  # candidates of this task's split
        gb = g.groupby([*key, "candidate"], sort=False)
        frac = gb["fraction"].mean().unstack("candidate")  # one value per cell; NaN stays NaN
        seen = gb.size().unstack("candidate", fill_value=0)
        frac = frac.where(seen > 0, 0.0)  # a candidate missing from a run's rows: fraction 0
        per_run.append(frac.stack(future_stack=True).rename("fraction").reset_index())
    per_run = pd.concat(per_run, ignore_index=True).sort_values(["seed", "run"], kind="stable")
    long = kit.summary(per_run, ["task", "split", "label", "candidate"], "fraction", level)
    long = kit.sort_by(long, {"task": sorted(long["task"].unique()), "split": split_order,
                        "label": order + sorted(set(long["label"]) - set(order)),
                        "candidate": cand_order})[cols]
    # pivot (not pivot_table with dropna=False): only (task, split, label) rows that exist
    wide = long.pivot(index=["task", "split", "label"], columns="candidate", values="mean")
    wide = (100.0 * wide[[c for c in cand_order if c in wide.columns]]).round(1)
    wide = wide.reset_index()
    wide.columns.name = None
    wide = kit.sort_by(wide, {"task": sorted(wide["task"].unique()), "split": split_order,
                        "label": order + sorted(set(wide["label"]) - set(order))})
    return wide, long


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    attr = v.tables.get("attribution")
    if attr is None or attr.empty:
        return {}
    wide, long = attribution_tables(attr, v.labels, v.order, v.level)
    wide.attrs.update(title="Attribution: % of OOD probe points closest to each candidate",
                      note="Mean over runs of the final prediction's nearest candidate.", per_task=True)
    long.attrs.update(title="Attribution fractions", note=f"Fractions: mean [{v.level:.0%} bootstrap CI] over runs.")
    return {"attribution": wide, "attribution_long": long}


def _findings(v: kit.View, compared: dict[str, pd.DataFrame]) -> list:
    """Per task: which candidate each label's final predictions follow most on the OOD splits."""
    long = compared.get("attribution_long")
    if long is None or long.empty:
        return []
    mean = long.groupby(["task", "label", "candidate"], sort=False)["mean"].mean().reset_index()
    out = []
    for task, g in mean.groupby("task", sort=False):
        top = g.loc[g.groupby("label", sort=False)["mean"].idxmax()]
        order = {lab: i for i, lab in enumerate(v.order)}
        top = top.sort_values("label", key=lambda s: s.map(order), kind="stable")
        parts = [f"{r.label} -> {r.candidate} ({r.mean:.0%})" for r in top.itertuples(index=False)]
        out.append((task, "out of distribution follows " + "; ".join(parts)))
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.attribution import figures

    attr = tables.get("attribution")
    if attr is None or attr.empty:
        return []
    try:
        fig = figures.attribution_bars(tables)
    except ValueError:
        return []
    return [] if fig is None else [Figure("attribution_bars", figures.CAPTION, fig)]


@register_analysis("attribution")
def attribution() -> Analysis:
    """OOD attribution of the final predictions to candidate behaviours (runs on every cell)."""
    return Analysis("attribution", default=True, tables=("attribution",), measure=_measure, compare=_compare,
                    printed=("attribution",), findings=_findings, figures=_figures,
                    prepare=_prepare)
