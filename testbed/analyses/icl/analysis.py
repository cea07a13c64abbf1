"""``icl``: in-context learning on prompt tasks, against the baselines on the same prompts.

Reads what every prompt cell stores (`testbed.suites.prompt_cells`): ``icl_error`` (per run,
evaluation step, shift and number of examples N: the normalized error), ``icl_baselines``,
``icl_closest`` and ``icl_probes``. Comparison tables:

- ``icl_error``: per task x shift, each model (mean [95% CI] over seeds, final step) and each
  baseline at N = d/2, d and 2d (Garg et al.'s points); ``icl_long`` its numeric twin at every N.
- ``icl_closest``: which baseline the model's predictions are nearest, per task, model and N
  (fraction of in-distribution evaluation prompts, mean over seeds): does it behave like least
  squares, like k-NN, like averaging?

Findings: per task, each model at N = 2d against least squares and the best other baseline,
whether it beats k-NN and averaging at every N >= d, and what it behaves like. Figures: per task,
the error against N (one panel per shift) and the probe predictions over training.
"""

from __future__ import annotations

import math

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis

TABLES = ("icl_error", "icl_baselines")


def points(d: int) -> list[int]:
    """Garg et al.'s numbers of in-context examples: d/2, d and 2d."""
    return sorted({max(1, d // 2), d, 2 * d})


def _column(n: int, d: int) -> str:
    return {max(1, d // 2): "N = d/2", d: "N = d", 2 * d: "N = 2d"}[n]


def _final(v: kit.View) -> pd.DataFrame:
    e = v.with_label(v.tables["icl_error"])
    return e[e["step"] == e.groupby("cell", observed=True)["step"].transform("max")]


def _baselines(v: kit.View) -> pd.DataFrame:
    """``task, shift, baseline, n, error``: the baselines (the same prompts in every cell of a task)."""
    b = kit.plain(v.tables["icl_baselines"])
    return b.groupby(["task", "shift", "baseline", "n"], sort=False)["error"].mean().reset_index()


def _long(v: kit.View) -> pd.DataFrame:
    f = kit.plain(_final(v)).rename(columns={"n": "examples"})  # the summary's own "n" counts seeds
    long = v.summary(f, ["task", "shift", "label", "examples", "d"], "error")
    return kit.sort_by(long, {"task": v.tasks, "shift": list(dict.fromkeys(f["shift"])), "label": v.order})


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    if any(t not in v.tables for t in TABLES):
        return {}
    long = _long(v)
    base = _baselines(v)
    rows = []
    for (task, shift), g in long.groupby(["task", "shift"], sort=False):
        d = int(g["d"].iloc[0])
        ns = [n for n in points(d) if n <= g["examples"].max()]
        for lab, gl in g.groupby("label", sort=False):
            at = gl.set_index("examples")
            rows.append({"task": task, "shift": shift, "model or baseline": lab, **{
                _column(n, d): kit.fmt_ci(at.loc[n, "mean"], at.loc[n, "ci_low"], at.loc[n, "ci_high"], v.digits)
                for n in ns if n in at.index}})
        gb = base[(base["task"] == task) & (base["shift"] == shift)]
        for name, b in gb.groupby("baseline", sort=False):
            at = b.set_index("n")["error"]
            rows.append({"task": task, "shift": shift, "model or baseline": f"baseline: {name}",
                         **{_column(n, d): f"{at.loc[n]:.{v.digits}g}" for n in ns if n in at.index}})
    table = pd.DataFrame(rows).fillna(kit.MISSING)
    table.attrs.update(title="In-context error at N = d/2, d, 2d", note=(
        f"Normalized squared error (/ d) of the query's prediction from the first N examples, mean over "
        f"evaluation prompts; models: mean [{v.level:.0%} bootstrap CI] over seeds at the final step; baselines "
        "computed on the very same prompts. Shift 'none' is in distribution; 'more_points' prompts have twice "
        "the training length."))
    long.attrs.update(title="In-context error at every N (numeric)", note=(
        "task, shift, label, examples (N), d; mean, CI and n (seeds) of the normalized error at the "
        "final step."))
    out = {"icl_error": table, "icl_long": long}
    if "icl_closest" in v.tables:
        out["icl_closest"] = _closest_table(v)
    return out


def _closest(v: kit.View) -> pd.DataFrame:
    """``task, label, n, baseline, fraction`` in distribution at N = d/2, d, 2d (mean over seeds)."""
    c = kit.plain(v.with_label(v.tables["icl_closest"]))
    c = c[c["shift"] == "none"]
    d_of = kit.plain(v.tables["icl_error"]).groupby("task")["d"].first().to_dict()
    c = c[[n in points(int(d_of[t])) for t, n in zip(c["task"], c["n"], strict=True)]]
    return c.groupby(["task", "label", "n", "baseline"], sort=False)["fraction"].mean().reset_index()


def _closest_table(v: kit.View) -> pd.DataFrame:
    wide = _closest(v).pivot_table(index=["task", "label", "n"], columns="baseline", values="fraction", sort=False)
    wide = wide.reset_index()
    wide.columns.name = None
    for col in wide.columns[3:]:
        wide[col] = [f"{x:.0%}" if math.isfinite(x) else kit.MISSING for x in wide[col]]
    wide = kit.sort_by(wide, {"task": v.tasks, "label": v.order})
    wide.attrs.update(title="Which baseline the model behaves like (in distribution)", note=(
        "Fraction of evaluation prompts on which each baseline's prediction is the nearest to the model's "
        "(squared distance), mean over seeds; n: in-context examples (d/2, d, 2d)."))
    return wide


def _findings(v: kit.View, comparison: dict) -> list:
    if "icl_long" not in comparison:
        return []
    long = comparison["icl_long"]
    long = long[long["shift"] == "none"]
    base = _baselines(v)
    base = base[base["shift"] == "none"]
    near = _closest(v) if "icl_closest" in v.tables else None
    out = []
    for (task, lab), g in long.groupby(["task", "label"], sort=False):
        d = int(g["d"].iloc[0])
        at = g.set_index("examples")
        n2 = 2 * d if 2 * d in at.index else int(at.index.max())
        b = base[base["task"] == task].pivot_table(index="n", columns="baseline", values="error")
        if n2 not in at.index or n2 not in b.index:
            continue
        text = f"{lab} at N = {n2}: {kit.fmt_ci(at.loc[n2, 'mean'], at.loc[n2, 'ci_low'], at.loc[n2, 'ci_high'], 3)}"
        others = b.loc[n2].drop(labels=["least_squares"], errors="ignore").dropna()
        if "least_squares" in b.columns:
            text += f" (least squares {b.loc[n2, 'least_squares']:.3g}"
            text += f", best other baseline {others.idxmin()} {others.min():.3g})" if len(others) else ")"
        weak = [w for w in ("knn", "averaging") if w in b.columns]
        if weak:
            ns = [n for n in at.index if n >= d and n in b.index]
            beats = all(at.loc[n, "mean"] < b.loc[n, w] for n in ns for w in weak)
            text += f"; {'beats' if beats else 'does not beat'} {' and '.join(weak)} at every N >= d"
        if near is not None:
            row = near[(near["task"] == task) & (near["label"] == lab) & (near["n"] == n2)]
            if len(row):
                best = row.loc[row["fraction"].idxmax()]
                text += f"; nearest to {best['baseline']} on {best['fraction']:.0%} of prompts"
        out.append((task, text))
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.figkit import method_labels, with_labels
    from testbed.analyses.icl import figures

    if any(t not in tables for t in TABLES):
        return []
    labels = method_labels(tables)
    err = with_labels(kit.plain(tables["icl_error"]), labels)
    base = kit.plain(tables["icl_baselines"])
    probes = tables.get("icl_probes")
    probes = with_labels(kit.plain(probes), labels) if probes is not None else None
    loss = tables.get("batch_loss")
    loss = with_labels(kit.plain(loss), labels) if loss is not None else None
    out = []
    for task in dict.fromkeys(err["task"]):
        fig = figures.error_vs_n(err[err["task"] == task], base[base["task"] == task],
                                 title=f"{task}: error against in-context examples")
        out.append(Figure("error_vs_n", figures.CAPTION.format(task=task), fig, task))
        if probes is not None and loss is not None:
            fig = figures.probe_predictions(probes[probes["task"] == task], loss[loss["task"] == task],
                                            title=f"{task}: probe predictions over training")
            if fig is not None:
                out.append(Figure("probe_predictions", figures.PROBE_CAPTION.format(task=task), fig, task))
    return out


@register_analysis("icl")
def icl() -> Analysis:
    """In-context error against the baselines, what the model behaves like, predictions over
    training (every suite of prompt tasks; its cells store the tables themselves)."""
    return Analysis("icl", default=True, tables=TABLES, compare=_compare, printed=("icl_error", "icl_closest"),
                    findings=_findings, figures=_figures)
