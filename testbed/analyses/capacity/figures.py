"""Capacity figures: the unit x piece damage matrix (sorted) and the per-piece loss against width."""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.analyses.figkit import (
    label_order,
    method_labels,
    natural_key,
    palette,
    suite_figure,
    with_labels,
)
from testbed.core.style import style

SHARING_CAPTION = (
    "{task}: which hidden units each piece uses\n"
    "Per hidden unit (rows) and piece (columns): the damage of zeroing the unit, the piece's primary metric "
    "increase over the task's target variance (one panel per layer); units sorted by how "
    "many pieces use them, then by the piece that uses them most (the widest model's first run).\n"
    "Look for: blocks of units private to one piece (specialization) against rows dark in several columns "
    "(shared units), and dead units that no piece needs.")
WIDTH_CAPTION = (
    "{task}: per-piece train loss against hidden width\n"
    "The task's primary metric on each piece's train inputs at the final step, mean over runs (log axes).\n"
    "Look for: which piece's loss falls first as units are added (it gets capacity first) and where each curve "
    "flattens (the marginal value of a unit).")
COMPETITION_CAPTION = (
    "{task}: the pieces' losses over training, above the cosine between their gradients\n"
    "Top: each piece's train loss (the primary metric on its train inputs, mean over runs, log axis); bottom: the "
    "cosine between two pieces' mean-loss gradients over every parameter at each evaluation (mean over runs); one "
    "column per label (up to three).\n"
    "Look for: one piece's loss falling while another's stalls, and whether the cosine is negative then (the pieces "
    "compete for the same weights) or near zero (they use different ones).")
PIECE_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2")


def unit_matrix(tables: dict[str, pd.DataFrame], task: str):
    u = tables["unit_use"]
    u = with_labels(u[u["task"] == task], method_labels(tables))
    units = u.groupby("label")["unit"].max()
    lab = max(units.index, key=lambda k: (units[k], natural_key(k)))  # the widest model's units
    u = u[u["label"] == lab]
    u = u[u["run"] == u["run"].min()]
    cell = u["cell"].iloc[0]
    u = u[u["cell"] == cell]
    layers = sorted(set(u["layer"].astype(int)))
    pieces = list(dict.fromkeys(u["piece"].astype(str)))
    meta = [f"label: {lab}   |   run {int(u['run'].iloc[0])} (seed {int(u['seed'].iloc[0])})   |   used: damage > 1% "
            "of the task's target variance",
            "colour: damage / target variance (log scale from 1e-3); white: no damage"]
    with style():
        fig = suite_figure(f"{task}: units used by each piece", meta, 3.4)
        axes = fig.subplots(1, len(layers), squeeze=False)[0]
        for ax, layer in zip(axes, layers, strict=True):
            g = u[u["layer"] == layer]
            m = g.pivot_table(index="unit", columns="piece", values="damage", sort=False)[pieces]
            rel = m.to_numpy() / g.drop_duplicates("piece").set_index("piece")["scale"].reindex(pieces).to_numpy()
            used = (rel > 0.01).sum(1)
            order = np.lexsort((-rel.max(1), rel.argmax(1), used))[::-1]
            img = np.log10(np.clip(rel[order], 1e-3, None))
            im = ax.imshow(img, aspect="auto", cmap="Blues", vmin=-3, vmax=max(0.0, float(img.max())),
                           interpolation="nearest")
            ax.set_xticks(range(len(pieces)), pieces, rotation=30, ha="right")
            ax.grid(False)
            ax.set_ylabel("unit (sorted)")
            ax.set_title(f"layer {layer}: used by 0/1/2+ pieces: "
                         f"{(used == 0).sum()}/{(used == 1).sum()}/{(used >= 2).sum()}", fontweight="bold")
        fig.colorbar(im, ax=axes[-1], label="log10 damage / variance")
    return fig


def loss_vs_width(tables: dict[str, pd.DataFrame], task: str):
    u = tables["unit_use"]
    u = u[u["task"] == task]
    width = u.groupby(["cell", "layer"], observed=True)["unit"].max().add(1).groupby("cell", observed=True).max()
    if width.nunique() < 2:
        return None
    h = tables["history"]
    h = h[(h["task"] == task) & (h["split"] == "train") & (h["piece"] != "all")]
    h = h[h["metric"].astype(str) == h["primary"].astype(str)]
    h = h[h["step"] == h.groupby("cell", observed=True)["step"].transform("max")]
    h = h.assign(width=h["cell"].map(width).astype(float))
    g = h.groupby(["piece", "width"], observed=True)["value"].mean().reset_index()
    meta = [f"widths: {', '.join(str(int(w)) for w in sorted(set(g['width'])))}   |   runs per width: "
            f"{int(h.groupby('cell', observed=True)['run'].nunique().max())}", "y: final train metric per piece"]
    with style():
        fig = suite_figure(f"{task}: loss against hidden width", meta, 3.0)
        ax = fig.subplots(1, 1)
        for k, (piece, gp) in enumerate(g.groupby("piece", sort=False, observed=True)):
            gp = gp.sort_values("width")
            ax.plot(gp["width"], np.maximum(gp["value"], 1e-8), marker="o", lw=1.8,
                    color=PIECE_COLORS[k % len(PIECE_COLORS)], label=str(piece), gid=f"piece:{piece}")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("hidden width")
        ax.set_ylabel("final train metric")
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def competition(tables: dict[str, pd.DataFrame], task: str):
    g = tables.get("piece_gradients")
    if g is None:
        return None
    g = g[g["task"] == task]
    if g.empty or g["step"].nunique() < 2:
        return None
    labels = method_labels(tables)
    g = with_labels(g, labels)
    labs = sorted(label_order(g["label"].astype(str), palette(labels)), key=natural_key)[-3:]  # e.g. the widest
    h = tables["history"]
    h = h[(h["task"] == task) & (h["split"] == "train") & (h["piece"] != "all")]
    h = with_labels(h[h["metric"].astype(str) == h["primary"].astype(str)], labels)
    meta = [f"labels: {', '.join(labs)}   |   runs per label: {int(g.groupby('label')['run'].nunique().max())}",
            "bottom: cosine between the pieces' gradients (dotted: 0)"]
    with style():
        fig = suite_figure(f"{task}: competition between pieces", meta, 4.6)
        axes = fig.subplots(2, len(labs), sharex=True, squeeze=False,
                            gridspec_kw={"height_ratios": [1.3, 1.0]})
        for c, lab in enumerate(labs):
            top, bot = axes[0, c], axes[1, c]
            hl = h[h["label"] == lab]
            for k, (piece, hp) in enumerate(hl.groupby("piece", sort=False, observed=True)):
                m = hp.groupby("step")["value"].mean()
                top.plot(m.index, np.maximum(m.to_numpy(), 1e-8), color=PIECE_COLORS[k % len(PIECE_COLORS)], lw=1.6,
                         label=str(piece))
            top.set_yscale("log")
            top.set_title(lab, fontweight="bold")
            gl = g[g["label"] == lab]
            for k, ((a, b), gp) in enumerate(gl.groupby(["piece_a", "piece_b"], sort=False, observed=True)):
                m = gp.groupby("step")["cosine"].mean()
                bot.plot(m.index, m.to_numpy(), color="#555555" if k == 0 else PIECE_COLORS[(k + 3) % 6], lw=1.4,
                         marker="o", ms=2.5, label=f"{a} / {b}", gid=f"cosine:{lab}:{a}/{b}")
            bot.axhline(0.0, color="#999999", ls=":", lw=0.9)
            bot.set_ylim(-1.05, 1.05)
            bot.set_xlabel("training step")
            if c == 0:
                top.set_ylabel("train loss per piece")
                bot.set_ylabel("gradient cosine")
        axes[0, -1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5)
        axes[1, -1].legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.0)
    return fig
