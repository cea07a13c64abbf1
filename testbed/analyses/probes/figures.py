"""Probe figure: what a task's models predict at the probe grid over training.

* `probe_trajectory`: per method a row of what the model predicts at the grid probes
  over training, with the loss of the same runs below; 1-D inputs drawn here (heatmaps
  over step and input), 2-D inputs in `testbed.analyses.probes.fields`.
* `velocity_curves`: how fast those predictions move (`testbed.analyses.probes.velocity`)
  under the loss, with the runs' stall escapes marked.

`CAPTION` is the figure's report caption (a template: ``{task}``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from testbed.analyses.figkit import (
    legend,
    log_spaced,
    log_ticks,
    mark_stages,
    method_labels,
    palette,
    split_order,
    stage_starts,
    step_axis,
    suite_figure,
    task_facts,
)
from testbed.analyses.probes.fields import grid_layout, trajectory_2d
from testbed.analyses.probes.runs import (
    Cube,
    class_ticks,
    cube_values,
    draw_run_curves,
    is_integer_axis,
    log_softmax,
    probe_runs,
    run_curves,
    split_dashes,
    split_label,
    train_intervals,
    traj_meta,
)
from testbed.core.style import cell_edges, run_bounds, split_colors, style

__all__ = ["CAPTION", "VELOCITY_CAPTION", "probe_trajectory", "train_intervals", "velocity_curves"]

CAPTION = (
    "{task}: predictions over training\n"
    "One run per method (first seed), rows by method; the loss panel shows the same runs. 1-D tasks: "
    "heatmap over (step, input) with the train region's edges marked, and the final prediction against "
    "the target; 2-D tasks: the field at 4 steps and the target; distribution tasks: per-probe KL and "
    "the log-probability of a few probes' top class; class tasks: whether the argmax is the label.\n"
    "Look for: which inputs are learned first (colour settling along the step axis) and whether that "
    "lines up with drops in the loss; what the model does outside the train region (edges, strips, "
    "dashed outlines) while it fits the inside: continuing a piece, flattening, or drifting.")


def probe_trajectory(tables: dict[str, pd.DataFrame], task: str, method: str | Sequence[str] | None = None
                     ) -> Figure | None:
    """What the model predicts at the probe grid over training, for one task.

    ``method``: a method label (or method name), a list of them, or None for all of the
    task's methods; each gets a row, from the first run of its cell that has probes (the
    first seed). The loss panel shows the primary metric of those same runs (colour:
    method; line style: split).

    * 1-D inputs (grid probes with ``x1`` NaN), scalar or vector targets: per method a
      heatmap of the prediction (output 0) over (training step, x0), on a colour scale
      set by the target's range (shared by all methods; beyond it saturates); the train
      region's edges as black-and-white dashed lines and a split strip at the left edge; the loss panel
      below on the same step axis; on the right the final prediction of every method
      against the target over x0, splits shaded.
    * 1-D distribution targets: the heatmap shows the per-probe KL(target || prediction)
      (log colour); on the right, per method, the log-probability of each of 3 probe
      points' most likely target class over training (solid) against its target value
      (dashed), the probes marked on the heatmap's right edge.
    * 1-D class targets: the heatmap shows whether the argmax is the label (right/wrong);
      the right panel its final value.
    * 2-D inputs: per method a row of fields over (x0, x1) at 4 steps (first, two middle
      by evaluation index, last) of the same value (prediction, KL or argmax right) and the
      target field (scalar, vector output 0; the most likely class for distributions; the
      label for classes), train region outlined, OOD splits dashed; the loss panel below
      marks the 4 steps. On an integer lattice only partly covered by probes, cells
      without a probe are left blank (light grey) and OOD probes marked with dots.

    Returns None when there is nothing to draw this way: no grid probes, or grid probes
    that are neither a full 2-D grid nor on an integer lattice (tasks of more than 2
    input dims, whose grid is scattered points). Class tasks are drawn (argmax right or
    wrong, the per-probe form of the ``error`` metric), not skipped.
    """
    picks = probe_runs(tables, task, method)
    picks = [pk for pk in picks if not pk[1].empty]
    if not picks:
        return None
    info = task_facts(tables, task)
    pal = palette(method_labels(tables))
    splits = split_order(tables, task)
    cubes = [(lab, Cube(df), facts) for lab, df, facts in picks]
    two_d = np.isfinite(cubes[0][1].x1).any()
    if two_d and grid_layout(cubes[0][1])[0] == "scatter":
        return None  # more than 2 input dims: x0, x1 of scattered points are no picture of the function
    curves = run_curves(tables, task, picks, info["primary"])
    logx = log_spaced(cubes[0][1].steps)
    with style():
        if two_d:
            return trajectory_2d(task, info, cubes, curves, splits, pal, logx)
        return _trajectory_1d(task, info, cubes, curves, splits, pal, logx,
                              stage_starts(tables, [f["cell"] for _, _, f in picks]))


# -- 1-D inputs: heatmaps over (step, x0) -----------------------------------------------------

def _pick_probes(xs: np.ndarray, sp: np.ndarray, n: int = 3) -> list[int]:
    """Indices (into x-sorted probes) of a few probes to follow: a quarter and three quarters into
    the largest train run, and the middle of the largest run of each OOD split; at most ``n``."""
    train, ood = [], []
    runs = run_bounds(sp == "train")
    if runs:
        a, b = max(runs, key=lambda r: r[1] - r[0])
        train = list(dict.fromkeys([a + (b - a) // 4, a + 3 * (b - a) // 4]))
    for s in dict.fromkeys(sp):
        if s != "train" and (runs := run_bounds(sp == s)):
            a, b = max(runs, key=lambda r: r[1] - r[0])
            ood.append((a + b) // 2)
    picks = train[:1] + ood[:max(n - 2, 1)] + train[1:]
    return list(dict.fromkeys(picks))[:n]


def _trajectory_1d(task, info, cubes, curves, splits, pal, logx, stages=()) -> Figure:
    target = info["target"]
    M = len(cubes)
    ocol = split_colors(splits)
    vals, tvals, name, (cmap, norm, extend) = cube_values(cubes, target)
    what = {"distribution": "per-probe KL over training", "class": "argmax right or wrong over training"}.get(
        target, "prediction over training")
    heat_h = 2.0 if M <= 2 else 1.55
    fig = suite_figure(f"{task}: {what}", traj_meta(info, cubes, what), heat_h * M + 2.1)
    gs = fig.add_gridspec(M + 1, 3, width_ratios=(5.0, 0.12, 2.9), height_ratios=[heat_h] * M + [1.9])
    heat_axes: list = []
    mesh = None
    integer = is_integer_axis(cubes[0][1].x0)
    max_step = max(float(c.steps.max()) for _, c, _ in cubes)
    pcols = sns.color_palette("dark", 8)
    for i, (lab, c, facts) in enumerate(cubes):
        ax = fig.add_subplot(gs[i, 0], sharex=heat_axes[0] if heat_axes else None)
        o = np.argsort(c.x0)
        xs, sp = c.x0[o], c.split[o]
        xe, se = cell_edges(xs, integer), cell_edges(c.steps, False)
        mesh = ax.pcolormesh(se, xe, vals[i][:, o].T, cmap=cmap, norm=norm, shading="flat", rasterized=True)
        mesh.set_gid("probe_heatmap")
        step_axis(ax, logx, max_step)
        ax.set_xlim(se[0], se[-1])
        ax.set_ylim(xe[0], xe[-1])
        runs = run_bounds(sp == "train")
        edges = sorted({e for a, b in runs for e in ((xe[a],) if a > 0 else ()) + ((xe[b + 1],) if b + 1 < len(xs)
                                                                                  else ())})
        if len(edges) <= 4:  # train region edges (inside the domain); many edges would hide the picture
            for edge in edges:
                ax.axhline(edge, color="#111111", gapcolor="white", lw=1.1, ls=(0, (3, 3)), gid="train_edge")
        for s in splits:  # split membership: a strip at the left edge
            for a, b in run_bounds(sp == s):
                ax.axhspan(xe[a], xe[b + 1], xmin=0, xmax=0.018, color=ocol[s], lw=0, zorder=3, gid=f"strip:{s}")
        ax.set_ylabel("x" + (" (integer)" if integer else ""))
        ax.set_title(f"{lab} (seed {facts['seed']}): {name}", loc="left", color=pal[lab], fontweight="bold")
        ax.grid(False)
        ax.tick_params(labelbottom=False)
        heat_axes.append(ax)
        if target == "distribution":
            picks = _pick_probes(xs, sp)
            for j, pi in enumerate(picks):
                ax.plot([1.0], [xs[pi]], marker="<", ms=7, color=pcols[j], transform=ax.get_yaxis_transform(),
                        clip_on=False, zorder=6, markeredgecolor="white", mew=0.6)
            rax = fig.add_subplot(gs[i, 2], sharex=heat_axes[0])
            _draw_probe_logits(rax, c, o, picks, pcols, show_legend=i == 0)
            step_axis(rax, logx, max_step)
            rax.tick_params(labelbottom=i == M - 1)
            if i == 0:
                rax.set_title("marked probes: log p(top target class)", fontsize=8.5)
    cax = fig.add_subplot(gs[:M, 1])
    cb = fig.colorbar(mesh, cax=cax, extend=extend)
    cb.set_label(name, fontsize=8)
    class_ticks(cb, target)
    lax = fig.add_subplot(gs[M, 0], sharex=heat_axes[0])
    dash = draw_run_curves(lax, curves, splits, pal, info["primary"], logx)
    mark_stages(lax, stages)
    for ax in heat_axes:
        mark_stages(ax, stages, label=False)
    lax.set_title(f"{info['primary']} of the runs shown", loc="left", fontsize=8.5)
    handles: list = [Line2D([], [], color=pal[lab], lw=2) for lab, _, _ in cubes]
    labels = [lab for lab, _, _ in cubes]
    on_grid = set(cubes[0][1].split)
    for s in splits:
        handles.append((Patch(facecolor=ocol[s], alpha=0.5 if s == "train" else 0.9),
                        Line2D([], [], color="#444444", ls=dash[s], lw=1.5)))
        labels.append(split_label(s) + ("" if s in on_grid else ": no grid probes"))
    if target != "distribution":
        rax = fig.add_subplot(gs[:M, 2])
        _draw_final_profile(rax, cubes, vals, tvals, splits, pal, integer, target, norm)
        if tvals[0] is not None:
            handles.append(Line2D([], [], color="#111111", ls=(0, (3, 1.5)), lw=1.4))
            labels.append("target")
    else:
        handles += [Line2D([], [], color="#444444", lw=1.5), Line2D([], [], color="#444444", lw=1.2, ls=(0, (3, 1.5)))]
        labels += ["probe: predicted log p", "probe: target log p"]
    hax = fig.add_subplot(gs[M, 2])
    hax.axis("off")
    legend(hax, handles, labels, title="method; split: region strip, loss line")
    return fig


def _draw_probe_logits(ax, c: Cube, o, picks, pcols, show_legend: bool) -> None:
    lt, lp = log_softmax(c.target), log_softmax(c.pred)
    for j, pi in enumerate(picks):
        p = o[pi]
        k = int(np.nanargmax(c.target[p]))
        ax.plot(c.steps, lp[:, p, k], color=pcols[j], lw=1.5, label=f"x={c.x0[p]:.3g} ({c.split[p]})")
        ax.axhline(lt[p, k], color=pcols[j], lw=1.1, ls=(0, (3, 1.5)))
    ax.set_ylabel("log p(class)", fontsize=8)
    if show_legend:
        ax.legend(loc="lower right", fontsize=7, frameon=True, framealpha=0.85, handlelength=1.5, borderpad=0.3)


def _draw_final_profile(ax, cubes, vals, tvals, splits, pal, integer, target, norm) -> None:
    c0 = cubes[0][1]
    o = np.argsort(c0.x0)
    xs, sp = c0.x0[o], c0.split[o]
    xe = cell_edges(xs, integer)
    ocol = split_colors(splits)
    for s in splits:
        for a, b in run_bounds(sp == s):
            ax.axvspan(xe[a], xe[b + 1], color=ocol[s], alpha=0.16 if s == "train" else 0.2, lw=0, zorder=0)
    for (lab, c, _), v in zip(cubes, vals, strict=True):
        oo = np.argsort(c.x0)
        ax.plot(c.x0[oo], v[-1][oo], color=pal[lab], lw=1.8, zorder=3, marker="o" if integer else None, ms=3)
    if tvals[0] is not None:
        ax.plot(xs, tvals[0][o], color="#111111", lw=1.4, ls=(0, (3, 1.5)), zorder=4)
    ax.set_xlim(xe[0], xe[-1])
    if target == "class":
        ax.set_ylim(-0.03, 1.03)
    else:
        lo, hi = norm.vmin, norm.vmax
        fin = np.concatenate([v[-1].ravel() for v in vals])
        fin = fin[np.isfinite(fin)]
        if fin.size:  # show the final predictions, within reason
            span = hi - lo
            lo, hi = max(min(lo, fin.min()), lo - span), min(max(hi, fin.max()), hi + span)
        ax.set_ylim(lo, hi)
    ax.set_xlabel("x" + (" (integer)" if integer else ""))
    ax.set_title("final prediction (solid) vs target (dashed)" if target != "class"
                 else "final: argmax = label (1) or not (0)", fontsize=8.5)


# -- probe velocity under the loss ------------------------------------------------------------

VELOCITY_CAPTION = (
    "{task}: how fast the predictions move, under the loss\n"
    "One run per method (first seed). Top: the primary metric of those runs (line style: split). Bottom: "
    "probe velocity, the RMS change of the predictions at the probe inputs per training step between "
    "evaluations (log-softmax for distribution and class targets), over all probes (solid) and per OOD "
    "split's probes (line style); vertical lines: each run's stall escapes (the detected drop steps).\n"
    "Look for: velocity peaks at the escapes (the function changes when the loss drops) or movement "
    "during a stall (the model reorganizes without lowering the loss); OOD probes that keep moving "
    "after the train loss has settled.")


def velocity_curves(tables: dict[str, pd.DataFrame], task: str, method: str | Sequence[str] | None = None
                    ) -> Figure | None:
    """Probe velocity (``probe_velocity`` table, or computed from ``probes``) of one run per
    method under the loss of the same runs, with the runs' stall escapes (``plateau_rows``)
    marked. Returns None when the task has no probe velocity to draw."""
    from testbed.analyses.probes.velocity import probe_velocity

    picks = probe_runs(tables, task, method)
    if not picks:
        return None
    info = task_facts(tables, task)
    pal = palette(method_labels(tables))
    splits = split_order(tables, task)
    vel = tables.get("probe_velocity")
    if vel is None:
        p = tables["probes"]
        vel = probe_velocity(p[p["task"] == task], by=("cell",), target=info["target"])
    curves = run_curves(tables, task, picks, info["primary"])
    rows = tables.get("plateau_rows")
    dash = {"all": "solid", **{s: d for s, d in split_dashes(splits).items() if s != "train"}}
    n_entries = len(picks) + len(dash) + 1
    with style():
        fig = suite_figure(f"{task}: probe velocity under the loss",
                           [f"probe velocity   |   target: {info['target']}   |   model: {', '.join(info['models'])}",
                            f"one run per method (its first seed, {len(picks)} runs); top: the primary metric "
                            f"({info['primary']}) of those runs"],
                           max(5.4, 0.2 * n_entries + 0.6))
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (1.0, 1.25)})
        logx = log_spaced(curves["step"]) if len(curves) else False
        draw_run_curves(top, curves, splits, pal, info["primary"], logx)
        top.set_xlabel("")
        drawn = False
        for lab, _, facts in picks:
            v = vel[(vel["cell"] == facts["cell"]) & (vel["run"] == facts["run"]) & (vel["piece"] == "all")]
            for split, style_ in dash.items():
                s = v[v["split"] == split].sort_values("step")
                y = s["velocity"].to_numpy(np.float64)
                ok = np.isfinite(y) & (y > 0)
                if ok.any():
                    bottom.plot(s["step"].to_numpy()[ok], y[ok], color=pal[lab], ls=style_, lw=1.4 if split == "all"
                                else 1.1, gid=f"velocity:{split}")
                    drawn = True
            if rows is not None and not rows.empty:
                esc = rows[(rows["cell"] == facts["cell"]) & (rows["run"] == facts["run"]) & rows["ended"].astype(bool)]
                for st in esc["drop_step"].dropna():
                    for ax in (top, bottom):
                        ax.axvline(st, color=pal[lab], lw=0.9, ls=":", alpha=0.9, zorder=0, gid="escape")
        if not drawn:
            return None
        starts = stage_starts(tables, [f["cell"] for _, _, f in picks])
        mark_stages(top, starts)
        mark_stages(bottom, starts, label=False)
        bottom.set_yscale("log")
        log_ticks(bottom.yaxis, bottom.get_ylim())
        step_axis(bottom, logx, curves["step"].max() if len(curves) else None)
        bottom.set_ylabel("probe velocity\n(RMS change per step)")
        bottom.set_xlabel("training step")
        handles = [Line2D([], [], color=pal[lab], lw=2) for lab, _, _ in picks]
        labels = [lab for lab, _, _ in picks]
        for split, style_ in dash.items():
            handles.append(Line2D([], [], color="#444444", ls=style_, lw=1.3))
            labels.append("all probes" if split == "all" else f"{split} probes (OOD)")
        handles.append(Line2D([], [], color="#444444", ls=":", lw=1.0))
        labels.append("stall escape (drop step)")
        fig.legend(handles, labels, loc="outside right upper", frameon=False, fontsize=8)
    return fig
