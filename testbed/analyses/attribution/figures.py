"""Attribution figure: which candidate behaviour the final predictions on each OOD split follow.

* `attribution_bars`: per (task: split, method) a stacked bar of the fractions of the
  split's probe points whose final prediction is closest to each candidate (the
  ``attribution`` table).

`CAPTION` is the figure's report caption.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from testbed.analyses.figkit import (
    label_order,
    method_labels,
    palette,
    split_order,
    suite_figure,
    tasks,
    with_labels,
)
from testbed.core.style import WIDTH_IN, style

__all__ = ["CAPTION", "attribution_bars"]

CAPTION = (
    "OOD attribution: which behaviour the final predictions follow\n"
    "For each OOD split and method: the fraction of the split's probe points whose final prediction is "
    "closest to each candidate (mean over seeds). Green: the true target; blues: a piece's function "
    "continued; oranges/purples: the task's named candidates; grey: the affine fit of the training data.\n"
    "Look for: how much is green (true extrapolation); which wrong rule takes the rest (continuing a "
    "neighbouring piece, a simpler candidate, or plain linear extrapolation); methods that pick different "
    "rules on the same split.")
LINEAR_FIT = (0.62, 0.62, 0.62)


def _target_color() -> tuple:
    return sns.color_palette("colorblind")[2]


def _candidate_colors(names_by_task: dict[str, list[str]]) -> dict[tuple[str, str], tuple]:
    """(task, candidate) -> colour, by kind: target green, pieces blues, named candidates
    oranges then purples, linear_fit grey."""
    out = {}
    for task, names in names_by_task.items():
        pieces = [n for n in names if n.startswith("piece:")]
        named = [n for n in names if n not in pieces and n not in ("target", "linear_fit")]
        blues = sns.color_palette("Blues_r", max(len(pieces), 1) + 2)
        warm = [*sns.color_palette("Oranges_r", 4)[:3], *sns.color_palette("Purples_r", 4)[:3]]
        for n in names:
            if n == "target":
                out[task, n] = _target_color()
            elif n == "linear_fit":
                out[task, n] = LINEAR_FIT
            elif n in pieces:
                out[task, n] = blues[pieces.index(n) + 1]
            else:
                out[task, n] = warm[named.index(n) % len(warm)]
    return out


def _kind_handles(names_by_task: dict[str, list[str]]) -> list[Patch]:
    """A legend patch per kind of candidate present."""
    kinds = [("target", _target_color()), ("piece continued (piece:<name>)", sns.color_palette("Blues_r", 4)[1]),
             ("named task candidate", sns.color_palette("Oranges_r", 4)[0]), ("linear_fit", LINEAR_FIT)]
    present = {c for n in names_by_task.values() for c in n}
    keep = [k for k in kinds if (k[0] == "target" and "target" in present)
            or (k[0].startswith("piece") and any(c.startswith("piece:") for c in present))
            or (k[0] == "linear_fit" and "linear_fit" in present)
            or (k[0].startswith("named") and any(not c.startswith("piece:") and c not in ("target", "linear_fit")
                                                 for c in present))]
    return [Patch(facecolor=c, label=k) for k, c in keep]


def attribution_bars(tables: dict[str, pd.DataFrame]) -> Figure:
    """Which behaviour the final predictions on each OOD split follow: per (task: split, method)
    a stacked horizontal bar of the fractions of the split's probe points whose final
    prediction is closest to each candidate (mean over seeds). Colour by kind of candidate
    (target green; ``piece:<name>``, a piece's function continued, blues; named task
    candidates oranges/purples; ``linear_fit`` grey), each segment named where it fits.
    """
    a = tables["attribution"]
    if a.empty:
        raise ValueError("attribution_bars: the attribution table is empty")
    labels = method_labels(tables)
    pal = palette(labels)
    a = with_labels(a, labels)
    a = a.assign(task=a["task"].astype(str), split=a["split"].astype(str), candidate=a["candidate"].astype(str))
    m = a.groupby(["task", "split", "label", "candidate"], observed=True, sort=False)["fraction"].mean()
    m = m.reset_index()
    task_rank = {t: i for i, t in enumerate(tasks(tables))}
    names_by_task = {t: list(dict.fromkeys(a.loc[a["task"] == t, "candidate"])) for t in m["task"].unique()}
    colors = _candidate_colors(names_by_task)
    groups = sorted(m[["task", "split"]].drop_duplicates().itertuples(index=False),
                    key=lambda ts: (task_rank.get(ts[0], 99), split_order(tables, ts[0]).index(ts[1])
                                    if ts[1] in split_order(tables, ts[0]) else 99))
    bars = []  # (y, task, split, label)
    y = 0.0
    ticks, group_y = [], []
    for task, split in groups:
        labs = label_order(m.loc[(m["task"] == task) & (m["split"] == split), "label"], pal)
        group_y.append((y, task, split))
        y += 1.0
        for lab in labs:
            bars.append((y, task, split, lab))
            ticks.append((y, lab))
            y += 1.0
        y += 0.35
    bar_h = 0.8
    per_unit = 0.2
    width_in = WIDTH_IN - 2.6  # the bars' width in inches, roughly (method names left, a short note right)
    with style():
        fig = suite_figure("OOD attribution: which behaviour the final predictions follow", [
            "per OOD split and method: fraction of the split's probe points whose final prediction is closest to "
            "each candidate (mean over seeds); green: the true target; blues: a piece's function continued "
            "(piece:<name>); oranges/purples: the task's named candidates; grey: the least-squares affine fit "
            "of the training data; right of a bar: the largest segment too narrow to name (+ how many more)"],
            per_unit * y + 0.6)
        ax = fig.add_subplot(1, 1, 1)
        for yb, task, split, lab in bars:
            s = m[(m["task"] == task) & (m["split"] == split) & (m["label"] == lab)]
            left = 0.0
            unnamed = []
            for cand in names_by_task[task]:
                fr = float(s.loc[s["candidate"] == cand, "fraction"].sum())
                if fr <= 0:
                    continue
                col = colors[task, cand]
                ax.barh(yb, fr, left=left, height=bar_h, color=col, edgecolor="white", lw=0.6,
                        gid=f"attr:{task}:{split}:{lab}:{cand}")
                text = cand.removeprefix("piece:") + (" (piece)" if cand.startswith("piece:") else "")
                if fr * width_in > len(text) * 7.2 * 0.56 / 72 + 0.08:
                    dark = sum(col[:3]) / 3 < 0.55
                    ax.text(left + fr / 2, yb, text, ha="center", va="center", fontsize=7.2,
                            color="white" if dark else "#111111", clip_on=True)
                elif fr >= 0.005:
                    unnamed.append((fr, cand))
                left += fr
            if unnamed:  # segments too narrow to name: the largest named right of the bar
                unnamed.sort(reverse=True)
                f0, c0 = unnamed[0]
                c0 = c0 if len(c0) <= 22 else c0[:21] + "…"
                more = "" if len(unnamed) == 1 else f" +{len(unnamed) - 1}"
                ax.text(1.01, yb, f"{c0} {f0:.0%}{more}", transform=ax.get_yaxis_transform(), ha="left",
                        va="center", fontsize=7, color="#555555")
        for yg, task, split in group_y:
            ax.text(0.0, yg + 0.1, f"{task}: {split}", ha="left", va="center", fontsize=8.5,
                    fontweight="bold", transform=ax.get_yaxis_transform(), color="#222222")
        ax.set_yticks([t for t, _ in ticks])
        ax.set_yticklabels([lab for _, lab in ticks], fontsize=8)
        for tl, (_, lab) in zip(ax.get_yticklabels(), ticks, strict=True):
            tl.set_color(pal.get(lab, "#333333"))
        ax.set_ylim(y - 0.2, -0.3)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fraction of the OOD split's probe points closest to the candidate")
        ax.grid(axis="y", visible=False)
        ax.tick_params(axis="y", length=0)
        kinds = _kind_handles(names_by_task)
        ax.legend(handles=kinds, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=len(kinds), frameon=False,
                  borderaxespad=0.3, handlelength=1.6, columnspacing=1.4)
    return fig
