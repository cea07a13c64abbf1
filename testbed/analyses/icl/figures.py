"""The in-context error figure (Garg et al.'s main figure): normalized error against the number
of in-context examples N, one panel per shift, the trained model (mean over seeds, 95%
bootstrap band) and the baselines on the very same prompts (dashed).

`error_vs_n` takes the tables of `testbed.train_prompts` (``history``, ``baselines``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.analyses.figkit import panel_grid
from testbed.core.stats import summarize
from testbed.core.style import style

CAPTION = (
    "{task}: normalized error against the number of in-context examples\n"
    "Squared error of the query's prediction divided by d, mean over evaluation prompts; the model: mean over seeds "
    "with a 95% bootstrap band; dashed: baselines on the very same prompts; one panel per shift.\n"
    "Look for: where the model meets least squares (zero from N = d on noise-free linear prompts), whether it beats "
    "k-NN and averaging, and what each OOD shift costs it and the baselines.")

FLOOR = 1e-3  # errors below are drawn at it (least squares is exact to 1e-13 from N = d on)
BASELINE_STYLE = {"least_squares": "#222222", "ridge": "#6b6b6b", "averaging": "#b07aa1", "one_step_gd": "#e15759",
                  "knn": "#59a14f", "lasso": "#edc948"}


def error_vs_n(history: pd.DataFrame, baselines: pd.DataFrame | None, *, title: str, model: str = "model",
               step: int | None = None) -> Figure:
    """The figure; ``step``: which evaluation of the model (default the last)."""
    h = history[history["step"] == (history["step"].max() if step is None else step)]
    if h.empty:
        raise ValueError(f"error_vs_n: no evaluation at step {step}")
    shifts = list(dict.fromkeys(h["shift"]))
    n = len(shifts)
    meta = [f"model: {model}   |   seeds: {h['seed'].nunique()}   |   step {int(h['step'].iloc[0])}",
            "y: squared error / d (log axis, drawn from 1e-3), mean over evaluation prompts; dashed: baselines on "
            "the same prompts"]
    with style():
        fig, axes, ncols, _ = panel_grid(title, meta, n, 2.7, 0.4)
        for i, shift in enumerate(shifts):
            ax = axes.flat[i]
            ax.set_yscale("log")
            sub = h[h["shift"] == shift].rename(columns={"n": "examples"})  # summarize adds its own "n"
            s = summarize(sub, ["examples"], "error", 0.95).sort_values("examples")
            lo = np.maximum(s["ci_low"].to_numpy(), FLOOR)
            ax.fill_between(s["examples"], lo, np.maximum(s["ci_high"].to_numpy(), FLOOR), color="#4e79a7",
                            alpha=0.25, lw=0)
            ax.plot(s["examples"], np.maximum(s["mean"].to_numpy(), FLOOR), color="#4e79a7", lw=2.0, gid="model")
            if baselines is not None and len(baselines):
                for name, b in baselines[baselines["shift"] == shift].groupby("baseline", sort=False):
                    b = b.sort_values("n")
                    ax.plot(b["n"], np.maximum(b["error"].to_numpy(), FLOOR), ls=(0, (4, 2)), lw=1.3,
                            color=BASELINE_STYLE.get(name, "#999999"), gid=f"baseline:{name}")
            ax.set_title(shift if shift != "none" else "no shift (in distribution)", fontweight="bold")
            ax.set_xlabel("in-context examples N")
            if i % ncols == 0:
                ax.set_ylabel("squared error / d")
        handles = [Line2D([], [], color="#4e79a7", lw=2, label=model)]
        if baselines is not None and len(baselines):
            handles += [Line2D([], [], color=BASELINE_STYLE.get(b, "#999999"), ls=(0, (4, 2)), lw=1.3, label=b)
                        for b in dict.fromkeys(baselines["baseline"])]
        axes.flat[min(ncols, n) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                                            frameon=False, borderaxespad=0.0)
    return fig
