"""The steering scan figure: the mixing coefficient against the injection coefficient alpha, one
panel per direction (columns) and label (rows), one line per layer (mean over runs, 95% band)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from testbed.analyses.figkit import (
    label_order,
    method_labels,
    natural_key,
    palette,
    suite_figure,
    with_labels,
)
from testbed.core.stats import summarize
from testbed.core.style import style

CAPTION = (
    "{task}: steering from one piece towards another, against the injection coefficient\n"
    "h_l <- h_l + alpha v after hidden layer l's nonlinearity, on the source piece's inputs (patch: "
    "h <- (1 - alpha) h(x) + alpha h(x')); y: the least-squares mixing coefficient of the target piece's function in "
    "the steered output (0: the source function, 1: the target's); one line per layer, mean over runs with a 95% "
    "bootstrap band.\n"
    "Look for: a direction whose line reaches 1 near alpha = 1 while the random control stays flat (the direction "
    "exists), and lines that differ by layer (the direction is also read by other computation).")
LAYER_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2")
ORDER = ("mean_diff", "probe", "random", "patch", "vector")


def steering_scan(tables: dict[str, pd.DataFrame], task: str):
    s = tables["steering"]
    s = s[s["task"] == task]
    labels = method_labels(tables)
    s = with_labels(s, labels)
    labs = sorted(label_order(s["label"].astype(str), palette(labels)), key=natural_key)[-3:]  # e.g. the widest
    dirs = [d for d in ORDER if d in set(s["direction"].astype(str))]
    layers = sorted(set(s["layer"].astype(int)))
    pair = s.iloc[0]
    meta = [f"source piece: {pair['source_piece']}   |   target piece: {pair['target_piece']}   |   runs per label: "
            f"{s.groupby('label')['run'].nunique().max()}",
            "lines: hidden layer the direction is injected at; dotted: 0 (source function) and 1 (target function)"]
    with style():
        fig = suite_figure(f"{task}: steering scan", meta, 2.5 * len(labs) + 0.4)
        axes = fig.subplots(len(labs), len(dirs), sharex=True, sharey=True, squeeze=False)
        for r, lab in enumerate(labs):
            for c, d in enumerate(dirs):
                ax = axes[r, c]
                for k, layer in enumerate(layers):
                    g = s[(s["label"] == lab) & (s["direction"] == d) & (s["layer"] == layer)]
                    if g.empty:
                        continue
                    m = summarize(g, ["alpha"], "mix", 0.95).sort_values("alpha")
                    color = LAYER_COLORS[k % len(LAYER_COLORS)]
                    ax.fill_between(m["alpha"], m["ci_low"], m["ci_high"], color=color, alpha=0.2, lw=0)
                    ax.plot(m["alpha"], m["mean"], color=color, lw=1.8, marker="o", ms=3, gid=f"{lab}:{d}:{layer}")
                for y in (0.0, 1.0):
                    ax.axhline(y, color="#999999", ls=":", lw=0.9)
                ax.set_title(d if len(labs) == 1 else f"{lab}: {d}", fontweight="bold")
                if r == len(labs) - 1:
                    ax.set_xlabel("injection coefficient alpha")
                if c == 0:
                    ax.set_ylabel("mixing coefficient")
        handles = [Line2D([], [], color=LAYER_COLORS[k % len(LAYER_COLORS)], lw=2, label=f"layer {layer}")
                   for k, layer in enumerate(layers)]
        axes[0, -1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0), frameon=False,
                           borderaxespad=0.0)
        lo, hi = float(np.nanmin(s["mix"])), float(np.nanmax(s["mix"]))
        axes[0, 0].set_ylim(min(-0.2, lo - 0.1), max(1.2, min(hi + 0.1, 3.0)))
    return fig
