"""``capacity``: which piece gets a network's capacity first, and how pieces share its units.

Named by a suite (``analyses = ["capacity"]``) on tasks of two or more pieces. Per cell
(`testbed.analyses.capacity.measure`): ``unit_use`` (per hidden unit and piece: ablation damage,
activation share, used or not) and ``piece_gradients`` (the cosine between the pieces' loss
gradients at every evaluation: the analysis asks the engine to keep the parameters there).
Comparison tables:

- ``capacity_width`` (suites whose cells of a task differ in hidden width): per task and
  piece, the final train metric at each width, and ``capacity_first``: the smallest width at
  which each piece reaches 10% of its loss at the smallest width, and the marginal value of a
  unit (loss drop per added unit, as a fraction of the smallest width's loss) up to there.
- ``unit_sharing``: per task and label, the fraction of units used by 0, 1, 2, ... pieces
  (mean over runs and layers), and the mean gradient cosine between pieces.
- ``capacity_order``: per task, label and piece, the step at which its train loss first falls
  below 10% of its first evaluated value (mean over runs): who learns first while the other
  waits.
- ``competition``: per task, label and piece pair, the gradient cosine at the start, its
  lowest, at the end, and the fraction of evaluations where it is negative.

Findings: which piece gets capacity first (by width, or by step), how many units are shared.
Figures: per task, the unit x piece damage matrix (sorted), the loss against width, and the
per-piece losses over training above the gradient cosines.
"""

from __future__ import annotations

import math

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis

LEARNED = 0.1  # a piece is learned once its loss is below this fraction of the reference loss


def _applies(task, method) -> bool:
    return len(task.pieces) >= 2


def _measure(task, method, result) -> dict[str, pd.DataFrame]:
    from testbed.analyses.capacity.measure import gradient_cosines, unit_use
    from testbed.core.columns import RUN

    use = unit_use(task, method, result)
    if use.empty:
        return {}
    runs = result.runs[list(RUN)]

    def joined(df):
        return runs.merge(df.drop(columns="seed"), on="run", how="right")

    return {"unit_use": joined(use), "piece_gradients": joined(gradient_cosines(task, method, result))}


def _widths(v: kit.View) -> pd.Series:
    """Hidden width per cell: the largest layer's unit count."""
    u = kit.plain(v.tables["unit_use"])
    return u.groupby(["cell", "layer"])["unit"].max().add(1).groupby("cell").max()


def _piece_final(v: kit.View) -> pd.DataFrame:
    f = v.final
    f = f[(f["split"] == "train") & (f["piece"] != "all") & (f["metric"] == f["primary"])]
    return f


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    if "unit_use" not in v.tables or v.tables["unit_use"].empty:
        return {}
    out: dict[str, pd.DataFrame] = {}
    width = _widths(v)
    pf = _piece_final(v).assign(width=lambda d: d["cell"].map(width))
    sweep = pf.groupby("task")["width"].nunique()
    swept = [t for t in v.tasks if sweep.get(t, 0) > 1]
    if swept:
        long = v.summary(pf[pf["task"].isin(swept)], ["task", "piece", "width"], "value")
        wide = long.assign(text=[kit.fmt_ci(m, lo, hi, v.digits) for m, lo, hi in
                                 zip(long["mean"], long["ci_low"], long["ci_high"], strict=True)])
        wide = wide.pivot_table(index=["task", "piece"], columns="width", values="text", aggfunc="first",
                                sort=False)
        wide = wide[sorted(wide.columns)].reset_index()  # widths in increasing order
        wide.columns = [c if isinstance(c, str) else f"width {int(c)}" for c in wide.columns]
        wide.attrs.update(title="Per-piece train loss against hidden width", note=(
            f"Each task's primary metric on each piece's train inputs at the final step, mean [{v.level:.0%} "
            "bootstrap CI] over runs, one column per hidden width."))
        out["capacity_width"] = wide
        out["capacity_first"] = _first(long)
    use = kit.plain(v.with_label(v.tables["unit_use"]))
    from testbed.analyses.capacity.measure import sharing

    sh = sharing(use, by=("label", "task", "cell", "run", "layer"))
    # one row per (run, layer) with every count present (0 where no unit has it), then the mean
    per = sh.pivot_table(index=["task", "label", "cell", "run", "layer"], columns="pieces", values="fraction",
                         fill_value=0.0, sort=False)
    table = per.groupby(level=["task", "label"], sort=False).mean()
    table = table[sorted(table.columns)].reset_index()
    table.columns = [c if isinstance(c, str) else f"used by {int(c)}" for c in table.columns]
    for c in table.columns[2:]:
        table[c] = [f"{x:.0%}" for x in table[c]]
    grads = v.tables.get("piece_gradients")
    if grads is not None and len(grads):
        g = kit.plain(v.with_label(grads))
        g = g[g["step"] == g.groupby("cell")["step"].transform("max")]
        g = g.groupby(["task", "label"], sort=False)["cosine"].mean()
        table["gradient cosine"] = [f"{g.get((t, lab), math.nan):.2f}" for t, lab in zip(table["task"], table["label"],
                                                                                     strict=True)]
    table = kit.sort_by(table, {"task": v.tasks, "label": v.order})
    table.attrs.update(title="How pieces share the hidden units", note=(
        "Fraction of hidden units (mean over runs and layers) whose zeroing costs a piece more than 1% of the task's "
        "target variance, by how many pieces use them; gradient cosine: between the pieces' loss gradients at the "
        "final parameters, mean over runs and piece pairs (negative: the pieces pull the weights apart)."))
    out["unit_sharing"] = table
    order = _order(v)
    if order is not None:
        out["capacity_order"] = order
    if grads is not None and len(grads) and kit.plain(grads)["step"].nunique() > 1:
        out["competition"] = _competition(v, kit.plain(v.with_label(grads)))
    return out


def _competition(v: kit.View, g: pd.DataFrame) -> pd.DataFrame:
    """Per task, label and piece pair: the gradient cosine over training."""
    g = g.sort_values("step")
    keys = ["task", "label", "piece_a", "piece_b"]
    per_run = g.groupby([*keys, "cell", "run"], sort=False).agg(
        first=("cosine", "first"), lowest=("cosine", "min"), last=("cosine", "last"),
        negative=("cosine", lambda c: float((c < 0).mean()))).reset_index()
    out = per_run.groupby(keys, sort=False)[["first", "lowest", "last", "negative"]].mean().reset_index()
    out = out.rename(columns={"first": "cosine at start", "lowest": "lowest cosine", "last": "cosine at end",
                              "negative": "evaluations with negative cosine"})
    out = kit.sort_by(out, {"task": v.tasks, "label": v.order})
    out.attrs.update(title="Competition over training: cosine between the pieces' gradients", note=(
        "Cosine between two pieces' mean-loss gradients over every parameter, at each evaluation (the runs kept "
        "their parameters there), mean over runs: at the first evaluation, the lowest, at the end, and the fraction "
        "of evaluations where it is negative (the pieces pull the weights apart)."))
    return out


def _first(long: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (task, piece), g in long.groupby(["task", "piece"], sort=False):
        g = g.sort_values("width")
        ref = float(g["mean"].iloc[0])
        ok = g[g["mean"] <= LEARNED * ref]
        first = int(ok["width"].iloc[0]) if len(ok) else None
        stop = first if first is not None else int(g["width"].iloc[-1])
        at = g.set_index("width")["mean"]
        w0 = int(g["width"].iloc[0])
        marginal = (ref - float(at.loc[stop])) / max(stop - w0, 1) / ref if ref > 0 and stop > w0 else math.nan
        rows.append({"task": task, "piece": piece, "loss at smallest width": ref,
                     "learned at width": first if first is not None else kit.MISSING,
                     "marginal value of a unit": marginal})
    out = pd.DataFrame(rows)
    out.attrs.update(title="Which piece gets capacity first", note=(
        f"learned at width: the smallest hidden width whose mean final loss on the piece is at most {LEARNED:.0%} of "
        "its loss at the smallest width (-: none in the sweep); marginal value of a unit: the loss drop per added "
        "unit up to that width, as a fraction of the smallest width's loss."))
    return out


def _order(v: kit.View) -> pd.DataFrame | None:
    h = kit.plain(v.tables["history"])
    h = h[(h["split"] == "train") & (h["piece"] != "all") & (h["metric"] == h["primary"])]
    h = h[h["task"].isin(set(kit.plain(v.tables["unit_use"])["task"]))]
    if h.empty:
        return None
    h = h.sort_values("step")
    keys = ["cell", "run", "piece"]
    first = h.groupby(keys, sort=False)["value"].transform("first")
    below = h[h["value"] <= LEARNED * first]
    learn = below.groupby(keys, sort=False)["step"].min().rename("learn_step")
    runs = h.drop_duplicates(keys)[[*keys, "task", "seed", *[c for c in kit.LABEL_PARTS if c in h.columns]]]
    runs = runs.merge(learn.reset_index(), on=keys, how="left")
    runs = v.with_label(runs)
    s = runs.groupby(["task", "label", "piece"], sort=False).agg(
        learn_step=("learn_step", "mean"), learned=("learn_step", lambda x: float(x.notna().mean()))).reset_index()
    s = kit.sort_by(s, {"task": v.tasks, "label": v.order})
    s.attrs.update(title="Which piece is learned first over training", note=(
        f"learn_step: the first evaluation step at which the piece's train loss is at most {LEARNED:.0%} of its "
        "first evaluated value, mean over the runs that got there; learned: the fraction of runs that did."))
    return s


def _findings(v: kit.View, comparison: dict) -> list:
    out = []
    first = comparison.get("capacity_first")
    if first is not None:
        for task, g in first.groupby("task", sort=False):
            g = g[g["learned at width"] != kit.MISSING]
            if len(g):
                g = g.assign(w=g["learned at width"].astype(int)).sort_values("w")
                out.append((task, "capacity goes first to " + ", then ".join(
                    f"{r.piece} (learned at width {r.w})" for r in g.itertuples())))
    order = comparison.get("capacity_order")
    if order is not None:  # one line per task: its best-ranked label that learns every piece
        for task, gt in order.groupby("task", sort=False):
            for lab in [lab for lab in v.order if lab in set(gt["label"])]:
                g = gt[gt["label"] == lab]
                if g["learn_step"].notna().all() and len(g) > 1:
                    g = g.sort_values("learn_step")
                    out.append((task, f"{lab} learns " + ", then ".join(
                        f"{r.piece} (step {r.learn_step:.0f})" for r in g.itertuples())))
                    break
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.capacity import figures

    u = tables.get("unit_use")
    if u is None or u.empty:
        return []
    out = []
    for t in dict.fromkeys(u["task"].astype(str)):
        out.append(Figure("unit_sharing", figures.SHARING_CAPTION.format(task=t), figures.unit_matrix(tables, t), t))
        fig = figures.loss_vs_width(tables, t)
        if fig is not None:
            out.append(Figure("capacity_width", figures.WIDTH_CAPTION.format(task=t), fig, t))
        fig = figures.competition(tables, t)
        if fig is not None:
            out.append(Figure("competition", figures.COMPETITION_CAPTION.format(task=t), fig, t))
    return out


@register_analysis("capacity")
def capacity() -> Analysis:
    """How pieces share a network's capacity: width sweeps, unit use, gradient competition (named by a suite)."""
    return Analysis("capacity", tables=("unit_use",), applies=_applies, measure=_measure, compare=_compare,
                    printed=("capacity_first", "unit_sharing", "capacity_order", "competition"), findings=_findings,
                    figures=_figures, needs=("snapshots",))

