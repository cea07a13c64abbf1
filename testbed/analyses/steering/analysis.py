"""``steering``: does a piece direction exist, and where is it used?

Named by a suite (``analyses = ["steering"]``) on tasks of two or more pieces with scalar or
vector targets. Per cell, `testbed.analyses.steering.measure.steer` injects directions from the
first piece (source) towards the second (target) at every hidden layer with a coefficient
scan. Comparison tables:

- ``steering``: per task x label x layer x direction, at alpha = 1: the mixing coefficient
  (0: the source piece's function, 1: the target's), the fraction of source inputs moved
  nearer the target function, the source loss, and the spill-over onto the other pieces
  (change of their primary metric with the same injection on their own inputs);
  ``steering_long``: the numeric twin at every alpha.

Findings: per task, the strongest direction and layer against the random control, and how
the effect differs by layer. Figure: per task, the mixing coefficient against alpha, one
panel per direction, one line per layer.
"""

from __future__ import annotations

import math

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis

AT = 1.0  # the coefficient the comparison reads (a full step along the direction)
QUANTITIES = ("mix", "residual", "toward", "loss")


def _applies(task, method) -> bool:
    return len(task.pieces) >= 2 and task.target in ("scalar", "vector")


def _measure(task, method, result) -> dict[str, pd.DataFrame]:
    from testbed.analyses.steering.measure import steer

    table, spill = steer(task, method, result)
    if table.empty:  # a model without hidden layers
        return {}
    return {"steering": _with_runs(table, result), "steering_spill": _with_runs(spill, result)}


def _with_runs(df: pd.DataFrame, result) -> pd.DataFrame:
    """Add the swept columns of each run, so rows join the other tables."""
    from testbed.core.columns import RUN

    runs = result.runs[list(RUN)]
    return runs.merge(df.drop(columns="seed"), on="run", how="right")


def _long(v: kit.View) -> pd.DataFrame:
    s = v.with_label(v.tables["steering"])
    longs = [v.summary(s, ["task", "label", "layer", "direction", "alpha"], q).assign(quantity=q) for q in QUANTITIES]
    spill = v.tables.get("steering_spill")
    if spill is not None and len(spill):
        sp = v.with_label(spill).groupby([*kit.UNIT, "layer", "direction", "alpha"], sort=False, observed=True)[
            "change"].mean().reset_index()
        longs.append(v.summary(sp, ["task", "label", "layer", "direction", "alpha"], "change").assign(quantity="spill"))
    long = pd.concat(longs, ignore_index=True)
    return kit.sort_by(long, {"task": v.tasks, "label": v.order})


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    if "steering" not in v.tables or v.tables["steering"].empty:
        return {}
    long = _long(v)
    at = long[long["alpha"] == AT]
    names = {"mix": "mix at alpha=1", "residual": "residual", "toward": "nearer target", "loss": "source loss",
             "spill": "spill-over"}
    at = at.assign(text=[kit.fmt_ci(m, lo, hi, v.digits) if math.isfinite(m) else kit.MISSING
                         for m, lo, hi in zip(at["mean"], at["ci_low"], at["ci_high"], strict=True)])
    wide = at.pivot_table(index=["task", "label", "layer", "direction"], columns="quantity", values="text",
                          aggfunc="first", sort=False).reset_index()
    wide.columns.name = None
    wide = wide[["task", "label", "layer", "direction", *[q for q in names if q in wide.columns]]].rename(columns=names)
    pair = v.tables["steering"].drop_duplicates("task").set_index("task")[["source_piece", "target_piece"]]
    wide.insert(2, "source -> target", [f"{pair.loc[t, 'source_piece']} -> {pair.loc[t, 'target_piece']}" for t in wide["task"]])
    wide.attrs.update(title="Steering: a direction from one piece to another, injected at alpha = 1", note=(
        f"Mean [{v.level:.0%} bootstrap CI] over runs. h_l <- h_l + alpha v after layer l's nonlinearity, on the "
        "source piece's inputs; mix: least-squares coefficient of the target piece's function in the steered "
        "output (0: source function, 1: target function); residual: RMS of what that mixture leaves unexplained "
        "over the RMS difference of the two functions (near 0: the output is that mixture); nearer target: fraction of source inputs whose output "
        "is nearer the target function; source loss: primary metric against the source targets; spill-over: "
        "change of the other pieces' primary metric with the same injection on their inputs. Directions: "
        "mean_diff (difference of mean activations), probe (a linear probe's weight, same norm), random (the "
        "control, same norm), patch (h <- (1 - alpha) h(x) + alpha h(x'), x' the nearest target input)."))
    long.attrs.update(title="Steering at every coefficient (numeric)", note=(
        "quantity: mix, residual, toward, loss, spill; per task, label, layer, direction, alpha: mean, CI and n over runs."))
    return {"steering": wide, "steering_long": long}


def _findings(v: kit.View, comparison: dict) -> list:
    if "steering_long" not in comparison:
        return []
    long = comparison["steering_long"]
    mix = long[(long["quantity"] == "mix") & (long["alpha"] == AT)]
    out = []
    for task, gt in mix.groupby("task", sort=False):  # one line per task: its strongest label and direction
        real = gt[gt["direction"].isin(["mean_diff", "probe"])]
        if real.empty:
            continue
        lab = real.loc[(real["mean"] - 1.0).abs().idxmin(), "label"]  # the closest to a full switch
        g, real = gt[gt["label"] == lab], real[real["label"] == lab]
        best = real.loc[(real["mean"] - 1.0).abs().idxmin()]
        ctrl = g[(g["direction"] == "random") & (g["layer"] == best["layer"])]
        res = long[(long["quantity"] == "residual") & (long["alpha"] == AT) & (long["task"] == task)
                   & (long["label"] == lab) & (long["layer"] == best["layer"])].set_index("direction")["mean"]
        text = (f"{lab}: steering with {best['direction']} at layer {int(best['layer'])} moves the source piece "
                f"{best['mean']:.2f} of the way to the target piece's function at alpha = 1 (residual "
                f"{res.get(best['direction'], float('nan')):.2f})")
        if len(ctrl):
            text += (f"; a random direction of the same norm: {ctrl['mean'].iloc[0]:.2f} (residual "
                     f"{res.get('random', float('nan')):.2f})")
        per_layer = real[real["direction"] == best["direction"]].sort_values("layer")
        if len(per_layer) > 1:
            text += "; by layer " + ", ".join(f"{int(r.layer)}: {r.mean:.2f}" for r in per_layer.itertuples())
        out.append((task, text))
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.steering import figures

    s = tables.get("steering")
    if s is None or s.empty:
        return []
    return [Figure("steering", figures.CAPTION.format(task=t), figures.steering_scan(tables, t), t)
            for t in dict.fromkeys(s["task"].astype(str))]


@register_analysis("steering")
def steering() -> Analysis:
    """Activation injection from one piece towards another with a coefficient scan (named by a suite)."""
    return Analysis("steering", tables=("steering",), applies=_applies, measure=_measure, compare=_compare,
                    printed=("steering",), findings=_findings, figures=_figures)
