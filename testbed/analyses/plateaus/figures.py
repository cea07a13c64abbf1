"""Plateau figure: a task's loss curves over training, with the detected plateaus as a rug.

* `loss_curves`: one task's primary metric over training, per method, with the train
  split and each OOD split as panels (mean over seeds, 95% CI bands), and optionally
  the plateaus found in each run (``testbed.analyses.plateaus``) under the curves.
* `run_curves`: every run's per-update loss, a panel per method label, with the stalls
  the detector found drawn at their level: typical curves, and a check of the detector.

`CAPTION` is the figure's report caption (a template: ``{task}``, ``{primary}``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from testbed.analyses.figkit import (
    HP_COLUMNS,
    METRIC_NAMES,
    label_order,
    log_floor,
    log_spaced,
    log_ticks,
    mark_stages,
    method_labels,
    palette,
    panel_grid,
    seeds_note,
    split_order,
    stage_starts,
    step_axis,
    suite_figure,
    task_facts,
    with_labels,
)
from testbed.core.style import split_colors, style

__all__ = ["CAPTION", "RUNS_CAPTION", "loss_curves", "run_curves"]

CAPTION = (
    "{task}: {primary} over training\n"
    "Mean over seeds with 95% CI bands, train and each OOD split as panels on shared axes.\n"
    "Rug: escaped stalls (solid) and runs stuck at the end (dotted), one row per run; a converged tail is "
    "never marked.\n"
    "Look for: stalls and the drops that end them (and whether methods drop at different times); OOD "
    "curves that rise or stall while train keeps falling (fitting the train region at the expense of "
    "extrapolation); wide bands (seed-dependent dynamics).")


def loss_curves(tables: dict[str, pd.DataFrame], task: str, plateaus: pd.DataFrame | None = None) -> Figure:
    """A task's primary metric over training: one panel per split (train, then each OOD split),
    one line per method label: the mean over seeds (geometric on the log axis) with a 95%
    bootstrap CI band (seaborn, ``seed=0``). Log y (linear 0..1 for ``error``); log x
    (symlog, so step 0 shows) when the evaluation steps are log-spaced. Panels share axes.

    Args:
        tables: suite tables.
        task: task name.
        plateaus: optional detected plateaus with columns ``cell, run, seed, piece, start,
            end`` (steps) and optionally ``ended``; rows of ``piece == "all"`` (all rows when
            there are none) are drawn as a rug of thin bars at the bottom of every panel, one
            row per run, in the run's method colour: solid for escaped stalls, dotted for a
            run's final stretch when it is stuck there (``ended`` false).
    """
    info = task_facts(tables, task)
    primary = info["primary"]
    h = tables["history"]
    d = h[(h["task"] == task) & (h["metric"] == primary) & (h["piece"] == "all")].copy()
    labels = method_labels(tables)
    pal = palette(labels)
    d = with_labels(d, labels)
    d["split"] = d["split"].astype(str)
    logy = primary != "error"
    if logy:
        d["value"] = d["value"].clip(lower=log_floor(d["value"]))
    splits = split_order(tables, task)
    colors = split_colors(splits)
    logx = log_spaced(d["step"])
    n = len(splits)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    meta = [f"{primary} ({METRIC_NAMES.get(primary, primary)}) on each split over training   |   "
            f"target: {info['target']}   |   model: {', '.join(info['models'])}   |   "
            f"optimizer: {', '.join(info['optimizers'])}",
            "   |   ".join(["lines: mean over seeds" + (" (geometric, log axis)" if logy else "")
                            + ", bands: 95% bootstrap CI", *seeds_note(tables, task)]
                           + (["steps log-spaced (symlog x axis)"] if logx else []))]
    rug = plateaus is not None and not plateaus.empty
    starts = stage_starts(tables, labels.loc[labels["task"] == task, "cell"].unique())
    n_entries = len(d["label"].dropna().unique()) + 2 + bool(starts) + 2 * rug
    legend_cols = 2 if n_entries > 16 else 1
    with style():
        # tall enough for the legend beside the panels (0.2 in a row)
        fig = suite_figure(f"{task}: {primary} over training", meta,
                           max(2.55 * nrows + 0.3, 0.2 * math.ceil(n_entries / legend_cols) + 0.5))
        axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
        order = label_order(d["label"].dropna(), pal)
        for i, split in enumerate(splits):
            ax = axes.flat[i]
            if logy:
                ax.set_yscale("log")  # before plotting: seaborn then aggregates in log space
            step_axis(ax, logx, d["step"].max())
            sub = d[d["split"] == split]
            for lab, band in _bands(sub, logy).groupby("label", sort=False, observed=True):
                if lab in pal:
                    ax.fill_between(band["step"], band["lo"], band["hi"], color=pal[lab], alpha=0.18, lw=0)
                    ax.plot(band["step"], band["mean"], color=pal[lab], lw=1.6)
            title = f"{split} (in-distribution)" if split == "train" else f"{split} (OOD)"
            ax.set_title(title, color="#222222" if split == "train" else colors[split], fontweight="bold")
            ax.set_xlabel("training step" if i // ncols == nrows - 1 or i + ncols >= n else "")
            ax.set_ylabel(primary if i % ncols == 0 else "")
            if rug:
                _draw_plateau_rug(ax, plateaus, tables, task, labels, pal, order)
            mark_stages(ax, starts, label=i == 0)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        if not logy:
            axes.flat[0].set_ylim(-0.02, 1.02)
        elif len(d):
            log_ticks(axes.flat[0].yaxis, axes.flat[0].get_ylim())  # shared: all panels
        handles = [Line2D([], [], color=pal[lab], lw=2, label=lab) for lab in order]
        handles.append(Patch(facecolor="#888888", alpha=0.3, label="95% CI over seeds"))
        if starts:
            handles.append(Line2D([], [], color="#222222", lw=1.0, ls=(0, (4, 2)), label="a training stage starts"))
        if rug:
            handles.append(Line2D([], [], color="#555555", lw=2.2, solid_capstyle="butt",
                                  label="stall, escaped (rug: a row per run)"))
            if "ended" in plateaus.columns and (~plateaus["ended"].astype(bool)).any():
                handles.append(Line2D([], [], color="#555555", lw=2.2, ls=(0, (1, 1)), alpha=0.6,
                                      label="stuck at the end"))
        axes.flat[min(ncols, n) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.03, 1.0),
                                            borderaxespad=0.0, frameon=False, title="method", ncols=legend_cols)
    return fig


N_BOOT = 500  # bootstrap resamples of each band


def _bands(d: pd.DataFrame, logy: bool) -> pd.DataFrame:
    """Per (label, step): the mean over seeds (in log10 space when ``logy``: the geometric
    mean) and its 95% percentile-bootstrap interval, all groups resampled at once (seeded)."""
    rows = []
    d = d[np.isfinite(d["value"])]
    rng = np.random.default_rng(0)
    for n, g in d.groupby(d.groupby(["label", "step"], observed=True)["value"].transform("size")):
        keys = g[["label", "step"]].drop_duplicates().reset_index(drop=True)
        v = g.sort_values(["label", "step"], kind="stable")["value"].to_numpy(np.float64).reshape(len(keys), int(n))
        v = np.log10(v) if logy else v
        means = v[:, rng.integers(0, int(n), size=(N_BOOT, int(n)))].mean(-1)  # [groups, N_BOOT]
        lo, hi = np.percentile(means, [2.5, 97.5], axis=1)
        mean = v.mean(1)
        back = (lambda a: 10 ** a) if logy else (lambda a: a)
        keys = keys.sort_values(["label", "step"], kind="stable").reset_index(drop=True)
        rows.append(keys.assign(mean=back(mean), lo=back(lo), hi=back(hi)))
    if not rows:
        return pd.DataFrame(columns=["label", "step", "mean", "lo", "hi"])
    return pd.concat(rows, ignore_index=True).sort_values(["label", "step"], kind="stable")


def _draw_plateau_rug(ax, plateaus, tables, task, labels, pal, order) -> None:
    """The task's plateaus as thin bars at the bottom of ``ax``: a row per run, method colours."""
    cells = labels.loc[labels["task"] == task, "cell"].unique()
    p = plateaus[plateaus["cell"].isin(cells)]
    if "piece" in p.columns and (p["piece"] == "all").any():
        p = p[p["piece"] == "all"]
    if p.empty:
        return
    runs = tables.get("runs")
    if runs is not None and all(c in runs.columns for c in HP_COLUMNS):
        p = p.merge(runs[["cell", "run", *HP_COLUMNS]].drop_duplicates(), on=["cell", "run"], how="left")
    p = with_labels(p, labels)
    rows = p[["label", "cell", "run"]].drop_duplicates()
    rows["o"] = rows["label"].map(lambda s: order.index(s) if s in order else len(order))
    rows = rows.sort_values(["o", "cell", "run"]).reset_index(drop=True)
    pos = {(r.cell, r.run): i for i, r in enumerate(rows.itertuples())}
    step = min(0.014, 0.22 / max(len(rows), 1))
    tr = ax.get_xaxis_transform()
    for r in p.itertuples():
        y = 0.012 + step * pos[(r.cell, r.run)]
        stuck = not getattr(r, "ended", True)
        ax.plot([r.start, r.end], [y, y], transform=tr, color=pal.get(r.label, "#555555"), lw=1.8,
                solid_capstyle="butt", alpha=0.45 if stuck else 0.85, ls=(0, (1, 1)) if stuck else "-",
                zorder=5, gid="stuck" if stuck else "plateau")


RUNS_CAPTION = (
    "{task}: every run's per-update training loss, with what the plateau detector found\n"
    "One panel per method label, one thin line per seed; black bars: escaped stalls at their level (from start to "
    "end), dotted: the stretch a run is stuck on at the end; panel titles: stalls per run, runs stuck, runs at zero "
    "loss, bumps per run.\n"
    "Look for: whether the marked stalls are the plateaus you see (and nothing else is), how many each run goes "
    "through, and which labels end stuck above zero.")


def run_curves(tables: dict[str, pd.DataFrame], task: str, max_points: int = 300) -> Figure:
    """Per method label of a task, the per-update training loss of every run (``batch_loss``,
    thinned to ``max_points`` per run) with the detected stalls (``plateau_rows``) drawn as
    bars at their level, and the label's stall/stuck/zero-loss/bump numbers (``plateaus``)
    in its title. Raises ValueError when the task has no per-update losses."""
    bl = tables.get("batch_loss")
    labels = method_labels(tables)
    cells = labels.loc[labels["task"] == task, "cell"].unique()
    if bl is None or bl.empty or not bl["cell"].isin(cells).any():
        raise ValueError(f"run_curves: no per-update losses for task {task!r}")
    pal = palette(labels)
    bl = with_labels(bl[bl["cell"].isin(cells)], labels)
    order = label_order(bl["label"].dropna(), pal)
    rows = tables.get("plateau_rows")
    rows = with_labels(rows[rows["cell"].isin(cells)], labels) if rows is not None and len(rows) else None
    per_run = tables.get("plateaus")
    per_run = with_labels(per_run[per_run["cell"].isin(cells)], labels) if per_run is not None else None
    n = len(order)
    meta = [f"per-update training loss (the method's objective; batch_loss)   |   {seeds_note(tables, task)[0]}",
            "black bars: escaped stalls at their level; dotted: stuck at the end   |   title: stalls per run, stuck, "
            "zero loss, bumps per run"]
    with style():
        fig, axes, ncols, nrows = panel_grid(f"{task}: per-run loss curves and detected stalls", meta, n, 1.9)
        lo = log_floor(bl["value"])
        for i, lab in enumerate(order):
            ax = axes.flat[i]
            ax.set_yscale("log")
            sub = bl[bl["label"] == lab]
            for _, run in sub.groupby(["cell", "run"], observed=True, sort=True):
                run = run.sort_values("step")
                k = max(1, len(run) // max_points)
                ax.plot(run["step"].to_numpy()[::k], np.clip(run["value"].to_numpy()[::k], lo, None),
                        color=pal[lab], lw=0.7, alpha=0.55)
            if rows is not None:
                for r in rows[rows["label"] == lab].itertuples():
                    stuck = not r.ended
                    ax.plot([r.start, r.end], [max(r.level, lo)] * 2, color="#111111", lw=2.0 if not stuck else 1.6,
                            ls=(0, (1, 1)) if stuck else "-", solid_capstyle="butt", zorder=5,
                            gid="stuck" if stuck else "stall")
            title = lab
            if per_run is not None and "stalls" in per_run.columns:
                q = per_run[per_run["label"] == lab]
                if len(q):
                    title += (f"\n{q['stalls'].mean():.1f} stalls · {q['stuck'].mean():.0%} stuck · "
                              f"{q['reached_zero'].mean():.0%} zero · {q['bumps'].mean():.1f} bumps")
            ax.set_title(title, fontsize=7.5, color=pal[lab], loc="left")
            if i % ncols == 0:
                ax.set_ylabel("batch loss")
            if i // ncols == nrows - 1 or i + ncols >= n:
                ax.set_xlabel("training step")
        if len(bl):
            log_ticks(axes.flat[0].yaxis, axes.flat[0].get_ylim())
    return fig
