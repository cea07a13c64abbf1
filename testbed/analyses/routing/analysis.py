"""``routing``: the gradient-routing study of a cell (Cloud et al. 2024, arXiv 2410.04332).

Named by a suite (``analyses = ["routing"]``); measures cells of tasks with at least two
pieces. Per cell (`testbed.analyses.routing.measure`): ``ablation``, ``localization``,
``identification``, ``recovery`` and ``recovery_curves``; their headline numbers also land
in the history at the final step. Comparison: localization, identification and recovery
per label x task. Figure: per task, per-piece loss under each block's ablation and the
recovery curves.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis
from testbed.core.columns import RUN, SWEPT

TABLES = ("ablation", "localization", "identification", "recovery", "recovery_curves")


def history_rows(tables: Mapping[str, pd.DataFrame], step: int) -> pd.DataFrame:
    """The routing measurements as history rows at the final step (split "train"):
    ``localization`` per piece, ``ablated_loss:<block>`` per piece, ``recovery_step``
    per piece, and ``identification`` and ``recovery_ratio`` per run (piece "all")."""
    hp = list(RUN)
    parts = []
    loc = tables["localization"]
    parts.append(loc[hp + ["piece"]].assign(metric="localization", value=loc["score"]))
    abl = tables["ablation"]
    abl = abl[(abl["metric"] == "loss") & (abl["block"] != "none")]
    parts.append(abl[hp + ["piece"]].assign(metric="ablated_loss:" + abl["block"].astype(str), value=abl["value"]))
    ident = tables["identification"]
    parts.append(ident[hp].assign(piece="all", metric="identification", value=ident["accuracy"]))
    rec = tables["recovery"]
    parts.append(rec[hp + ["piece"]].assign(metric="recovery_step", value=rec["recovery_step"]))
    per_run = rec.drop_duplicates("run")
    parts.append(per_run[hp].assign(piece="all", metric="recovery_ratio", value=per_run["ratio"]))
    rows = pd.concat(parts, ignore_index=True).assign(step=step, split="train")
    return rows[[*RUN, "step", "split", "piece", "metric", "value"]]


def routing_tables(task, method, result) -> dict[str, pd.DataFrame]:
    """Gradient-routing measurements of a cell (see testbed.analyses.routing).

    A routed cell is measured on its own blocks; any other cell on the blocks a
    default ``routing`` method would use (one per piece, layer 0), so a plainly
    trained model is the baseline with blocks of the same sizes. Tables: ablation
    (per-piece loss with each block zeroed), localization, identification,
    recovery and recovery_curves (fine-tuning on all pieces after zeroing the
    first piece's block, a tenth of the cell's steps at its learning rate).
    """
    from testbed.analyses.routing import measure as ra
    from testbed.methods.routing import layout_of

    spec = layout_of(method)
    hp = result.runs[["run", *SWEPT]]
    abl = ra.ablate_blocks(task, method, result, blocks=spec)
    block = next(b for b in abl["block"].unique() if b not in ("none", "shared"))
    lr = float(result.runs["lr"].iloc[0])
    retrained = ra.retrain_after_ablation(task, method, result, block, blocks=spec, lr=lr,
                                          steps=max(int(result.config["steps"]) // 10, 20))
    h = retrained.history
    curves = h[(h["split"] == "train") & (h["metric"] == "loss")][["run", "seed", "step", "piece", "value"]]
    tables = {"ablation": abl, "localization": ra.localization(abl),
              "identification": ra.piece_identification(task, result, blocks=spec),
              "recovery": ra.recovery_table(retrained), "recovery_curves": curves}
    return {k: hp.merge(pd.DataFrame(v), on="run") for k, v in tables.items()}


ROUTING_TABLES = {
    "routing_localization": ("localization", "median localization score over pieces per run: the own "
                             "piece's share of the damage when its block is ablated (1: only its own piece is "
                             "hurt, 0.5: it and the others equally)."),
    "routing_identification": ("identification", "accuracy of naming the piece from the most active block."),
    "routing_recovery": ("recovery", "steps for the ablated piece to recover over the other pieces' steps "
                         "(fine-tuning on all pieces after zeroing its block)."),
}


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    """Gradient-routing tables (label x task), from a suite run with analyses = ["routing"]."""
    out = {}
    for name, (src, note) in ROUTING_TABLES.items():
        df = v.tables.get(src)
        if df is None or df.empty:
            continue
        d = v.with_label(df)
        keys = [*kit.UNIT]
        if src == "localization":
            per_run = d.groupby(keys, sort=False)["score"].median().reset_index(name="value")
        elif src == "identification":
            per_run = d[keys + ["accuracy"]].rename(columns={"accuracy": "value"})
        else:
            per_run = d.groupby(keys, sort=False)["ratio"].first().reset_index(name="value")
        long = v.summary(per_run.assign(metric=src), ["label", "task", "metric"])
        out[name] = v.wide(long, tasks=[t for t in v.tasks if t in set(long["task"])])
        out[name].attrs.update(title=f"Gradient routing: {src}", note=f"{note} Cells: mean [{v.level:.0%} CI] over runs.")
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.routing import figures

    if "ablation" not in tables:
        return []
    out = []
    for task in dict.fromkeys(tables["ablation"]["task"].astype(str)):
        fig = figures.routing_figure(tables, task)
        if fig is not None:
            out.append(Figure("routing", f"{task}: {figures.CAPTION}", fig, task))
    return out


@register_analysis("routing")
def routing() -> Analysis:
    """The gradient-routing study (named by a suite; tasks with two or more pieces)."""
    return Analysis("routing", tables=TABLES, applies=lambda task, method: len(task.pieces) >= 2,
                    measure=routing_tables, history=history_rows, compare=_compare,
                    printed=tuple(ROUTING_TABLES), figures=_figures)
