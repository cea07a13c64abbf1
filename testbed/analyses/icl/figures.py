"""The in-context figures.

* `error_vs_n` (Garg et al.'s main figure): normalized error against the number of in-context
  examples N, one panel per shift; each trained model (mean over seeds, 95% bootstrap band) and
  the baselines on the very same prompts (dashed).
* `probe_predictions`: predictions over training on fixed probe prompts, under the training
  loss: when the model starts using its prompt (the prediction from d or K examples leaves the
  one from a single example and goes to the true value).

Both take plain tables: ``history`` (``seed, step, shift, n, error`` and an optional ``label``),
``baselines`` (``shift, baseline, n, error``), ``probes`` and ``loss``; nothing imports JAX.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.analyses.figkit import log_floor, panel_grid, step_axis, suite_figure
from testbed.core.stats import summarize
from testbed.core.style import style

CAPTION = (
    "{task}: normalized error against the number of in-context examples\n"
    "Squared error of the query's prediction divided by d, mean over evaluation prompts; each model: mean over seeds "
    "with a 95% bootstrap band; dashed: baselines on the very same prompts; one panel per shift.\n"
    "Look for: where the model meets least squares (zero from N = d on noise-free linear prompts), whether it beats "
    "k-NN and averaging, and what each OOD shift costs it and the baselines.")
PROBE_CAPTION = (
    "{task}: predictions on fixed probe prompts over training, under the training loss\n"
    "Top: the training loss (mean over seeds, log axis). Below, one panel per probe prompt: the model's prediction "
    "of its query from the first N examples (N = 1, d and K; one colour per model, mean over seeds), the true "
    "value dashed.\n"
    "Look for: the step where the predictions from d and K examples leave the one from a single example and "
    "settle on the true value (the model starts reading its prompt), and whether that is where the loss drops.")

FLOOR = 1e-3  # errors below are drawn at it (least squares is exact to 1e-13 from N = d on)
BASELINE_STYLE = {"least_squares": "#222222", "ridge": "#6b6b6b", "averaging": "#b07aa1", "one_step_gd": "#e15759",
                  "knn": "#59a14f", "lasso": "#edc948", "two_layer_net": "#f28e2b", "greedy_tree": "#9c755f"}
MODEL_COLORS = ("#4e79a7", "#76b7b2", "#af7aa1", "#ff9da7", "#9c755f", "#bab0ac")
N_STYLE = ((0, (1, 1.5)), (0, (5, 2)), "-")  # N = 1, d, K: dotted, dashed, solid


def _n_style(i: int, count: int):
    """The line style of the i-th of ``count`` values of N: the largest solid, smaller ones dashed, dotted."""
    return N_STYLE[max(0, len(N_STYLE) - count + i)] if count <= len(N_STYLE) else "-"


def _labels(df: pd.DataFrame, model: str) -> pd.DataFrame:
    return df if "label" in df.columns else df.assign(label=model)


def error_vs_n(history: pd.DataFrame, baselines: pd.DataFrame | None, *, title: str, model: str = "model",
               step: int | None = None) -> Figure:
    """The figure; ``step``: which evaluation (default each label's last); ``model``: the name of
    the curve when ``history`` has no ``label`` column."""
    h = _labels(history, model)
    last = h.groupby("label", sort=False)["step"].transform("max")
    h = h[h["step"] == (last if step is None else step)]
    if h.empty:
        raise ValueError(f"error_vs_n: no evaluation at step {step}")
    shifts = list(dict.fromkeys(h["shift"]))
    shifts = [s for s in shifts if s == "none"] + [s for s in shifts if s != "none"]  # in distribution first
    labels = list(dict.fromkeys(h["label"]))
    colors = {lab: MODEL_COLORS[i % len(MODEL_COLORS)] for i, lab in enumerate(labels)}
    steps = sorted(set(h["step"].astype(int)))
    meta = [f"models: {', '.join(labels)}   |   seeds: {h['seed'].nunique()}   |   step "
            f"{', '.join(map(str, steps))}",
            "y: squared error / d (log axis, drawn from 1e-3), mean over evaluation prompts; dashed: baselines on "
            "the same prompts"]
    with style():
        fig, axes, ncols, _ = panel_grid(title, meta, len(shifts), 2.7, 0.4)
        for i, shift in enumerate(shifts):
            ax = axes.flat[i]
            ax.set_yscale("log")
            for lab in labels:
                sub = h[(h["shift"] == shift) & (h["label"] == lab)].rename(columns={"n": "examples"})
                if sub.empty:
                    continue
                s = summarize(sub, ["examples"], "error", 0.95).sort_values("examples")  # adds its own "n"
                ax.fill_between(s["examples"], np.maximum(s["ci_low"].to_numpy(), FLOOR),
                                np.maximum(s["ci_high"].to_numpy(), FLOOR), color=colors[lab], alpha=0.25, lw=0)
                ax.plot(s["examples"], np.maximum(s["mean"].to_numpy(), FLOOR), color=colors[lab], lw=2.0,
                        gid=f"model:{lab}")
            if baselines is not None and len(baselines):
                b_shift = baselines[baselines["shift"] == shift]
                for name, b in b_shift.groupby("baseline", sort=False, observed=True):
                    b = b.groupby("n", sort=True)["error"].mean()  # the same prompts in every cell of a task
                    ax.plot(b.index, np.maximum(b.to_numpy(), FLOOR), ls=(0, (4, 2)), lw=1.3,
                            color=BASELINE_STYLE.get(str(name), "#999999"), gid=f"baseline:{name}")
            ax.set_title(shift if shift != "none" else "no shift (in distribution)", fontweight="bold")
            ax.set_xlabel("in-context examples N")
            if i % ncols == 0:
                ax.set_ylabel("squared error / d")
        handles = [Line2D([], [], color=colors[lab], lw=2, label=lab) for lab in labels]
        if baselines is not None and len(baselines):
            handles += [Line2D([], [], color=BASELINE_STYLE.get(str(b), "#999999"), ls=(0, (4, 2)), lw=1.3,
                               label=str(b)) for b in dict.fromkeys(baselines["baseline"])]
        axes.flat[min(ncols, len(shifts)) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                                                      frameon=False, borderaxespad=0.0)
    return fig


def probe_predictions(probes: pd.DataFrame, loss: pd.DataFrame, *, title: str, model: str = "model",
                      max_prompts: int = 3) -> Figure | None:
    """The figure, or None without probes. ``probes``: ``seed, step, prompt, n, prediction, truth``
    (and ``label``); ``loss``: ``seed, step, value`` (and ``label``), the per-update training loss."""
    if probes is None or probes.empty:
        return None
    p, lo = _labels(probes, model), _labels(loss, model)
    labels = list(dict.fromkeys(p["label"]))
    colors = {lab: MODEL_COLORS[i % len(MODEL_COLORS)] for i, lab in enumerate(labels)}
    prompts = sorted(set(p["prompt"].astype(int)))[:max_prompts]
    ns = sorted(set(p["n"].astype(int)))
    meta = [f"models: {', '.join(labels)}   |   seeds: {p['seed'].nunique()}   |   probe prompts: {len(prompts)}",
            "lines: prediction of the query from the first N examples (the legend's line styles); grey dashed: "
            "the true value"]
    with style():
        fig = suite_figure(title, meta, 1.9 + 2.0 * len(prompts))
        axes = fig.subplots(1 + len(prompts), 1, sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": [1.2] + [1.0] * len(prompts)})[:, 0]
        ax = axes[0]
        ax.set_yscale("log")
        floor = log_floor(lo["value"])
        for lab in labels:
            g = lo[lo["label"] == lab]
            logs = pd.Series(np.log(np.maximum(g["value"].to_numpy(np.float64), floor)), index=g["step"].to_numpy())
            mean = logs.groupby(level=0).mean()  # geometric mean over seeds
            if len(mean) > 400:  # smoothed, drawn at about 400 points
                w = len(mean) // 400
                mean = mean.rolling(w, min_periods=1).mean().iloc[::w]
            ax.plot(mean.index, np.exp(mean.to_numpy()), color=colors[lab], lw=1.4)
        ax.set_ylabel("training loss\n(each model's objective)")
        for j, prompt in enumerate(prompts):
            ax = axes[1 + j]
            q = p[p["prompt"] == prompt]
            for lab in labels:
                for i, n in enumerate(ns):
                    g = q[(q["label"] == lab) & (q["n"] == n)].groupby("step")["prediction"].mean()
                    ax.plot(g.index, g.to_numpy(), color=colors[lab], lw=1.5 if i == len(ns) - 1 else 1.1,
                            ls=_n_style(i, len(ns)),
                            marker="o", ms=2.5)
            ax.axhline(float(q["truth"].iloc[0]), color="#777777", ls=(0, (4, 2)), lw=1.0)
            ax.set_ylabel(f"prompt {prompt}: f(x_query)")
        step_axis(axes[-1], False, float(max(p["step"].max(), lo["step"].max())))
        axes[-1].set_xlabel("training step")
        handles = [Line2D([], [], color=colors[lab], lw=2, label=lab) for lab in labels]
        handles += [Line2D([], [], color="#444444", lw=1.2, ls=_n_style(i, len(ns)),
                           label=f"N = {n}") for i, n in enumerate(ns)]
        axes[0].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
                       borderaxespad=0.0, fontsize=7.8)
    return fig
