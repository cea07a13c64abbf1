"""Gradient-routing figures: per-piece loss under each ablation, and recovery curves.

Read from a suite's ``ablation`` and ``recovery_curves`` tables (suites run with
``analyses = ["routing"]``); plots read tables, never runs.

`CAPTION` is the figure's report caption (it follows ``"<task>: "``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from testbed.core.style import DPI

__all__ = ["CAPTION", "routing_figure"]

CAPTION = (
    "gradient routing\nLeft: per-piece train loss with each block ablated; a localized model loses only the "
    "ablated block's piece. Right: per-piece loss while fine-tuning after the first block was zeroed.")


def routing_figure(tables: dict[str, pd.DataFrame], task: str) -> Figure | None:
    """For one task, a row per method label: (left) mean train loss per piece with each
    block ablated ("none" = intact), log scale; (right) per-piece loss while fine-tuning
    on all pieces after the first block was zeroed. None when the task has no routing data."""
    abl, rec = tables.get("ablation"), tables.get("recovery_curves")
    if abl is None or rec is None:
        return None
    abl = abl[(abl["task"] == task) & (abl["metric"] == "loss")]
    rec = rec[(rec["task"] == task) & (rec["piece"] != "all")]
    if abl.empty:
        return None
    labels = list(dict.fromkeys(abl["method"].astype(str)))
    pieces = [p for p in dict.fromkeys(abl["piece"].astype(str))]
    blocks = ["none"] + [b for b in dict.fromkeys(abl["block"].astype(str)) if b != "none"]
    colors = dict(zip(pieces, sns.color_palette("colorblind", len(pieces)), strict=True))
    fig = Figure(figsize=(10, 2.6 * len(labels) + 0.9), dpi=DPI, layout="constrained")
    fig.suptitle(f"{task}: gradient routing — ablation (left) and recovery (right)", x=0.01, ha="left",
                 fontweight="bold")
    axes = fig.subplots(len(labels), 2, squeeze=False)
    width = 0.8 / max(len(pieces), 1)
    for row, lab in enumerate(labels):
        ax, bx = axes[row]
        a = abl[abl["method"].astype(str) == lab]
        means = a.groupby(["block", "piece"], observed=True)["value"].mean()
        for j, p in enumerate(pieces):
            vals = [means.get((b, p), np.nan) for b in blocks]
            ax.bar(np.arange(len(blocks)) + (j - (len(pieces) - 1) / 2) * width, vals, width,
                   color=colors[p], label=p)
        ax.set_yscale("log")
        # block names alone: "ablate <piece>" for 5-6 blocks ran into each other
        ax.set_xticks(np.arange(len(blocks)), [b if b != "none" else "intact" for b in blocks], fontsize=8)
        ax.set_xlabel("ablated block", fontsize=9)
        ax.set_ylabel("train loss")
        ax.set_title(lab, loc="left", fontsize=10)
        r = rec[rec["method"].astype(str) == lab]
        for p in pieces:
            curve = r[r["piece"].astype(str) == p].groupby("step")["value"].mean()
            bx.plot(curve.index, curve.to_numpy(), color=colors[p], label=p)
        bx.set_yscale("log")
        bx.set_xlabel("fine-tuning step after zeroing the first block")
        bx.set_ylabel("train loss")
    axes[0][0].legend(title="piece", fontsize=8, title_fontsize=8)
    return fig
