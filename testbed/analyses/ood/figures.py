"""OOD figures: how far each method's final error outside the train region is from inside.

* `ood_vs_train`: final train vs final OOD primary metric, one point per (method, seed),
  one panel per task.
* `piece_heatmap`: final primary metric per (task, split, piece) and method.

`CAPTIONS` holds each figure's report caption (heading, what is drawn, what to look for).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from testbed.analyses.figkit import (
    final_rows,
    label_order,
    log_ticks,
    method_labels,
    palette,
    split_order,
    suite_figure,
    tasks,
    with_labels,
)
from testbed.core.style import LOG_FLOOR, WIDTH_IN, style

__all__ = ["CAPTIONS", "ood_vs_train", "piece_heatmap"]

CAPTIONS = {
    "ood_vs_train": (
        "Final OOD vs train error\n"
        "One point per run (method, seed) at its last step; the outlined diamond is the method's mean over "
        "seeds; dashed: y = x.\n"
        "Look for: distance above the diagonal (the generalization gap: how much worse the model is outside "
        "the training region than inside); methods whose points sit lower at the same train error (better "
        "extrapolation); a vertical spread of one method's seeds (extrapolation that depends on the seed)."),
    "piece_heatmap": (
        "Final error per piece\n"
        "Colour: log10 of the final primary metric (mean over seeds) per piece of each split; values written "
        "in the cells; darker is worse; metrics differ between tasks (named in each row).\n"
        "Look for: train pieces that stay dark (a piece the model never fitted, often the harder one of a "
        "pair); OOD rows where methods differ by orders of magnitude; a piece that is fine in training but "
        "dark on an OOD split (the rule was learned only where it was seen)."),
}


# -- OOD vs train ------------------------------------------------------------------------------

def _final_split_values(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per (task, cell, run, label, seed): final primary on train and mean over OOD splits."""
    h = tables["history"]
    h = h[(h["piece"] == "all") & (h["metric"].astype(str) == h["primary"].astype(str))]
    f = final_rows(h)
    f = with_labels(f, method_labels(tables))
    f = f.assign(ood=f["split"].astype(str) != "train")
    keys = ["task", "cell", "run", "seed", "label", "primary"]
    g = f.groupby([*keys, "ood"], observed=True)["value"].mean().unstack("ood")
    g = g.rename(columns={False: "train", True: "ood"}).reset_index()
    for c in ("train", "ood"):
        if c not in g.columns:
            g[c] = np.nan
    g["task"] = g["task"].astype(str)
    return g


def ood_vs_train(tables: dict[str, pd.DataFrame]) -> Figure:
    """Final train vs final OOD primary metric (the mean over a task's OOD splits), one small
    log-log panel per task with OOD splits, one point per (method label, seed), hue method;
    a large outlined marker per method at the mean (geometric) and the y = x line (on it: no
    generalization gap). ``error`` tasks use linear 0..1 axes. Non-finite values (diverged
    runs) are left out and counted in the panel title.
    """
    g = _final_split_values(tables)
    labels = method_labels(tables)
    pal = palette(labels)
    shown = [t for t in tasks(tables) if g.loc[g["task"] == t, "ood"].notna().any()]
    if not shown:
        raise ValueError("ood_vs_train: no task has an OOD split in the history")
    n = len(shown)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    panel = min(2.05, (WIDTH_IN - 1.6) / ncols)
    with style():
        fig = suite_figure("Final OOD vs train error", [
            "each small point: one run (method, seed) at its last step; x: train primary metric, y: mean of "
            "the primary metric over the task's OOD splits; large outlined marker: mean over seeds (geometric "
            "on log axes); dashed: y = x (no generalization gap)"], panel * nrows + 0.35)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        used: list[str] = []
        for ax, task in zip(axes.flat, shown, strict=False):
            t = g[g["task"] == task]
            primary = str(t["primary"].iloc[0])
            ok = np.isfinite(t["train"]) & np.isfinite(t["ood"])
            bad = int((~ok).sum())
            t = t[ok]
            logs = primary != "error"
            order = label_order(t["label"], pal)
            used += [lab for lab in order if lab not in used]
            if logs and not t.empty:
                floor = max(min(t["train"][t["train"] > 0].min(), t["ood"][t["ood"] > 0].min()), LOG_FLOOR) \
                    if ((t["train"] > 0).any() and (t["ood"] > 0).any()) else 1.0
                t = t.assign(train=t["train"].clip(lower=floor), ood=t["ood"].clip(lower=floor))
            for lab in order:
                s = t[t["label"] == lab]
                ax.scatter(s["train"], s["ood"], s=14, color=pal[lab], alpha=0.85, lw=0.3, edgecolor="white",
                           zorder=4, gid=f"seed:{lab}")
                if len(s):
                    mx = np.exp(np.log(s["train"]).mean()) if logs else s["train"].mean()
                    my = np.exp(np.log(s["ood"]).mean()) if logs else s["ood"].mean()
                    ax.scatter([mx], [my], s=42, color=pal[lab], edgecolor="#111111", lw=0.9, zorder=3,
                               marker="D", alpha=0.75, gid=f"mean:{lab}")
            if logs:
                ax.set_xscale("log")
                ax.set_yscale("log")
                vals = np.concatenate([t["train"].to_numpy(), t["ood"].to_numpy()]) if len(t) else np.array([1.0])
                lo, hi = np.log10(vals.min()), np.log10(vals.max())
                pad = max(0.15 * (hi - lo), 0.25)
                lim = (10 ** (lo - pad), 10 ** (hi + pad))
            else:
                lim = (-0.03, 1.03)
            ax.plot(lim, lim, color="#777777", ls=(0, (4, 3)), lw=1.0, zorder=1)
            ax.set_xlim(lim)
            ax.set_ylim(lim)
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(task + (f"  ({bad} non-finite)" if bad else ""), fontsize=9, pad=3)
            ax.set_xlabel(f"train {primary}", fontsize=8, labelpad=1)
            ax.set_ylabel(f"OOD {primary}", fontsize=8, labelpad=1)
            ax.tick_params(labelsize=7, pad=1)
            if logs:
                log_ticks(ax.xaxis, lim)
                log_ticks(ax.yaxis, lim)
        for ax in axes.flat[n:]:
            ax.set_visible(False)
        handles = [Line2D([], [], ls="none", marker="o", color=pal[lab], label=lab) for lab in used]
        handles += [Line2D([], [], ls="none", marker="D", color="#bbbbbb", markeredgecolor="#111111",
                           label="mean over seeds"),
                    Line2D([], [], color="#777777", ls=(0, (4, 3)), label="y = x")]
        axes.flat[min(ncols, n) - 1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.06, 1.0),
                                            borderaxespad=0.0, frameon=False, title="method")
    return fig


# -- piece heatmap ---------------------------------------------------------------------------------

def _short(v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-2 <= a < 100:
        return f"{v:.2g}" if a < 1 else f"{v:.3g}"
    m, e = f"{v:.1e}".split("e")
    return f"{m}e{int(e)}"


def _piece_panels(tables: dict[str, pd.DataFrame], m: pd.DataFrame, f: pd.DataFrame, cols: list[str]) -> list:
    """(title, matrix rows x labels, task of each row) for the train rows and the OOD rows."""
    task_rank = {t: i for i, t in enumerate(tasks(tables))}
    split_rank = {t: {s: i for i, s in enumerate(split_order(tables, t))} for t in task_rank}
    piece_rank = {t: {p: i for i, p in enumerate(dict.fromkeys(f.loc[f["task"] == t, "piece"]))} for t in task_rank}
    m = m.assign(o=[(task_rank.get(t, 99), split_rank.get(t, {}).get(s, 99), piece_rank.get(t, {}).get(p, 99))
                    for t, s, p in zip(m["task"], m["split"], m["piece"], strict=True)])
    panels = []
    for ood in (False, True):
        sub = m[(m["split"] != "train") == ood]
        if sub.empty:
            continue
        sub = sub.sort_values("o")
        sub = sub.assign(row=[f"{t}: {p} ({pr})" if not ood else f"{t}: {s}: {p} ({pr})"
                              for t, s, p, pr in zip(sub["task"], sub["split"], sub["piece"], sub["primary"],
                                                     strict=True)])
        mat = sub.pivot_table(index="row", columns="label", values="value", sort=False, dropna=False)
        mat = mat.reindex(columns=cols)
        rows_task = sub.drop_duplicates("row").set_index("row")["task"].reindex(mat.index)
        panels.append(("OOD splits" if ood else "train (in-distribution)", mat, rows_task.to_numpy()))
    return panels


def piece_heatmap(tables: dict[str, pd.DataFrame]) -> Figure:
    """Final primary metric per piece: rows ``task: piece`` (train panel, top) and
    ``task: split: piece`` (OOD panel, below), columns method labels; colour log10 of the
    mean over seeds (shared scale, one colour bar), the value written in each cell. Rows
    of different tasks can hold different metrics (named in the row label). Whole-split
    ("all") rows are left out.
    """
    h = tables["history"]
    h = h[(h["piece"] != "all") & (h["metric"].astype(str) == h["primary"].astype(str))]
    f = final_rows(h)
    labels = method_labels(tables)
    pal = palette(labels)
    f = with_labels(f, labels)
    f = f.assign(task=f["task"].astype(str), split=f["split"].astype(str), piece=f["piece"].astype(str))
    m = f.groupby(["task", "split", "piece", "primary", "label"], observed=True, sort=False)["value"].mean()
    m = m.reset_index()
    if m.empty:
        raise ValueError("piece_heatmap: no per-piece rows in the history")
    cols = label_order(m["label"], pal)
    panels = _piece_panels(tables, m, f, cols)
    allv = np.concatenate([p[1].to_numpy().ravel() for p in panels])
    pos = allv[np.isfinite(allv) & (allv > 0)]
    floor = max(float(pos.min()) if pos.size else 1e-6, LOG_FLOOR)
    lv = np.log10(np.clip(allv[np.isfinite(allv)], floor, None))
    vmin, vmax = (float(np.percentile(lv, 1)), float(np.percentile(lv, 99))) if lv.size else (-3.0, 0.0)
    if vmax - vmin < 0.5:
        vmin, vmax = vmin - 0.25, vmax + 0.25
    norm = Normalize(vmin, vmax)
    cmap = sns.color_palette("rocket_r", as_cmap=True)
    n_rows = [len(p[1]) for p in panels]
    row_h = 0.2
    with style():
        fig = suite_figure("Final error per piece", [
            "colour: log10 of the final primary metric (mean over seeds) on each piece of each split; the value "
            "is written in the cell; darker is worse. Metrics differ across tasks (named in each row)."],
            row_h * sum(n_rows) + 0.75 * len(panels) + 0.2)
        gs = fig.add_gridspec(len(panels), 2, height_ratios=[max(r, 1) + 2.5 for r in n_rows],
                              width_ratios=(1.0, 0.03))
        for i, (title, mat, rows_task) in enumerate(panels):
            ax = fig.add_subplot(gs[i, 0])
            vals = mat.to_numpy(np.float64)
            img = np.log10(np.clip(vals, floor, None))
            im = ax.imshow(np.ma.masked_invalid(img), aspect="auto", cmap=cmap, norm=norm, interpolation="nearest")
            for (r, c), v in np.ndenumerate(vals):
                if not np.isfinite(v):
                    ax.text(c, r, "n/a", ha="center", va="center", fontsize=7, color="#9a9a9a")
                    continue
                dark = norm(np.log10(max(v, floor))) > 0.55
                ax.text(c, r, _short(v), ha="center", va="center", fontsize=7.2,
                        color="white" if dark else "#111111")
            ax.set_xticks(range(len(cols)))
            ax.set_xticklabels(cols, fontsize=8.5)
            ax.xaxis.tick_top()
            ax.set_yticks(range(len(mat)))
            ax.set_yticklabels(mat.index, fontsize=7.5)
            ax.grid(False)
            ax.set_title(title, fontweight="bold", loc="left", fontsize=9.5)
            for r in range(1, len(rows_task)):  # a line between tasks
                if rows_task[r] != rows_task[r - 1]:
                    ax.axhline(r - 0.5, color="white", lw=2.2)
            for c in range(1, len(cols)):
                ax.axvline(c - 0.5, color="white", lw=1.0)
            ax.tick_params(length=0)
            for s in ax.spines.values():
                s.set_visible(False)
        cax = fig.add_subplot(gs[:, 1])
        cb = fig.colorbar(im, cax=cax)
        cb.set_label("log10 final metric (mean over seeds)")
    return fig
