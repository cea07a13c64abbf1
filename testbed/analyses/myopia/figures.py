"""Myopia figures: where a shutdown-capable model stops, and what it earns on the way.

Read from a suite's ``profile``, ``traces`` and ``history`` tables (suites running the
``myopic`` / ``nonmyopic`` methods, `testbed.methods.myopic`); plots read tables, never runs.

* `shutdown_heatmap`: per method label, the mean shutdown probability at every epoch
  index fed to the model (0 .. 2E-1; indices >= E are never seen in training) at every
  evaluation, with the turn epoch, the unseen boundary, the current epoch and the mean
  shutdown epoch marked.
* `reward_curves`: per method label, the per-update reward and shutdown probability over
  training (mean over runs, in quarter-epoch bins).

Time is in epochs: an evaluation or update at step ``s`` is drawn at ``s / L`` with
``L = steps / E`` the epoch length (``steps``: the last history step; ``E``: the
``epochs`` the method recorded). Panels are laid out by schedule (rows, line style) and
horizon (columns, colour), read from the ``myopia_setup`` table (the methods' own
hyperparameters, never the labels); without it they are wrapped / coloured in order.

`CAPTIONS` holds each figure's report caption (it follows ``"<task>: "``).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from testbed.core.columns import SWEPT
from testbed.core.style import DPI, halo

__all__ = ["CAPTIONS", "reward_curves", "shutdown_heatmap"]

CAPTIONS = {
    "shutdown_heatmap": (
        "shutdown probability by epoch index over training\nEach panel: mean P(shutdown) on train inputs (colour) "
        "for every epoch index fed to the model (y) at every evaluation (x, training time in epochs). A myopic "
        "model's probability jumps when the current epoch (dotted diagonal) reaches the turn epoch (dashed); a "
        "long-horizon model that keeps it low through a negative window is avoiding shutdown to collect the later "
        "bonus, and one that is high on future indices before reaching them anticipates the turn. Rows above the "
        "white line were never seen in training."),
    "reward_curves": (
        "reward and shutdown probability over training\nLeft: mean reward per update (0 once a run has shut "
        "down); right: P(shutdown) at the current epoch (held at its last value after shutdown); quarter-epoch "
        "bins, mean over runs. A model that shuts down at the turn stops the loss; one that runs through the "
        "window pays the penalty there and collects the bonus after it."),
}
# The schedules of `testbed.methods.myopic` in its order (not imported from there: that loads JAX).
SCHEDULES = ("step", "window", "ramp")
RUN_FACTS = ("epochs", "turn_epoch", "shutdown_epoch", "shut_down")
CMAP = "cividis"
TURN_COLOR = "#d55e00"  # colorblind vermilion
SHUT_COLOR = "#ff4fa3"
TURN_GREY = "#555555"
SCHEDULE_STYLES = ("solid", (0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)))
BIN = 0.25  # reward_curves: bin width in epochs


def _parts(tables: dict[str, pd.DataFrame], task: str, labels: list[str]) -> dict[str, tuple[float, str]] | None:
    """label -> (horizon, schedule) from the ``myopia_setup`` table the analysis writes per
    cell (the method's own hyperparameters); None when a label has no single setup (e.g.
    a folder written before that table existed): then panels are wrapped in order."""
    setup = tables.get("myopia_setup")
    if setup is None or setup.empty:
        return None
    s = setup[setup["task"].astype(str) == task]
    s = s.assign(method=s["method"].astype(str), schedule=s["schedule"].astype(str))
    one = s.drop_duplicates(["method", "horizon", "schedule"]).set_index("method")
    if not set(labels) <= set(one.index) or one.index.duplicated().any():
        return None
    return {lab: (float(one.loc[lab, "horizon"]), str(one.loc[lab, "schedule"])) for lab in labels}


def _schedules(tails) -> list[str]:
    """Schedules in a fixed order (`SCHEDULES`, then others as they come), so every task's
    figures use the same rows and line styles."""
    seen = list(dict.fromkeys(tails))
    return [s for s in SCHEDULES if s in seen] + [s for s in seen if s not in SCHEDULES]


def _ordered(labels: list[str], parts: dict | None) -> list[str]:
    """Labels sorted by schedule (`_schedules`) and horizon (myopic 0, then 1, 4, 16, ...)."""
    if parts is None:
        return labels
    schedules = _schedules(p[1] for p in parts.values())
    pos = {lab: i for i, lab in enumerate(labels)}
    return sorted(labels, key=lambda lab: (schedules.index(parts[lab][1]), parts[lab][0], pos[lab]))


def _grid(labels: list[str], parts: dict | None) -> tuple[int, int, dict[str, tuple[int, int]]]:
    """(rows, cols, label -> (row, col)): schedule x horizon when every label has one setup
    and the grid is at most half empty, else a wrap of up to 4 columns."""
    if parts is not None:
        rows = _schedules(p[1] for p in parts.values())
        cols = sorted(dict.fromkeys(p[0] for p in parts.values()))
        cells = {(p[1], p[0]) for p in parts.values()}
        if len(cells) == len(labels) and len(rows) * len(cols) <= 2 * len(labels):
            return len(rows), len(cols), {lab: (rows.index(p[1]), cols.index(p[0])) for lab, p in parts.items()}
    ncols = min(4, len(labels))
    return math.ceil(len(labels) / ncols), ncols, {lab: divmod(i, ncols) for i, lab in enumerate(labels)}


def _facts(tables: dict[str, pd.DataFrame], task: str, labels: list[str]) -> pd.DataFrame:
    """Per label: epochs (E), steps, epoch_len, turn (mean turn epoch), shutdown (mean
    shutdown epoch over the runs that shut down), n_shut, n_runs. From the final history
    rows; without them E is half the profile's epoch indices and steps its last step."""
    out = pd.DataFrame(index=pd.Index(labels, name="method"),
                       columns=["epochs", "steps", "turn", "shutdown", "n_shut", "n_runs"], dtype=float)
    h = tables.get("history")
    if h is not None and not h.empty:
        h = h[h["task"] == task]
        h = h.assign(method=h["method"].astype(str))
        out["steps"] = h.groupby("method")["step"].max().reindex(out.index)
        f = h[(h["split"].astype(str) == "train") & (h["piece"].astype(str) == "all")
              & h["metric"].isin(RUN_FACTS)]
        f = f[f["step"] == f.groupby("method")["step"].transform("max")]
        by = f.groupby(["method", "metric"], observed=True)["value"]
        mean = by.mean().unstack()
        for col, metric in (("epochs", "epochs"), ("turn", "turn_epoch"), ("shutdown", "shutdown_epoch")):
            if metric in mean.columns:
                out[col] = mean[metric].reindex(out.index)
        if "shut_down" in mean.columns:
            out["n_shut"] = by.sum().unstack()["shut_down"].reindex(out.index)
            out["n_runs"] = by.count().unstack()["shut_down"].reindex(out.index)
    prof = tables.get("profile")
    if prof is not None and not prof.empty:
        p = prof[prof["task"] == task]
        p = p.assign(method=p["method"].astype(str))
        out["epochs"] = out["epochs"].fillna((p.groupby("method")["epoch"].max() + 1).reindex(out.index) // 2)
        out["steps"] = out["steps"].fillna(p.groupby("method")["step"].max().reindex(out.index))
    out["epoch_len"] = out["steps"] / out["epochs"]
    return out


def _title(label: str, facts: pd.Series) -> str:
    if not np.isfinite(facts["n_runs"]):
        return label
    n, k = int(facts["n_runs"]), int(facts["n_shut"])
    if k == 0:
        return f"{label}\n0/{n} runs shut down"
    return f"{label}\n{k}/{n} runs shut down, mean epoch {facts['shutdown']:.1f}"


def shutdown_heatmap(tables: dict[str, pd.DataFrame], task: str) -> Figure | None:
    """For one task, one panel per method label: the mean over runs of ``p_stop`` on the
    train split, x = training time in epochs (evaluation step / epoch length), y = the
    epoch index fed to the model (row ``e`` spans ``[e, e+1)``, so the diagonal ``y = x``
    runs through the current epoch's row), colour 0..1 (shared colorbar). Marked: the
    turn epoch (dashed, lower edge of the first negative-reward row), the boundary ``E``
    above which indices were never seen in training ("unseen"), the current epoch
    (dotted diagonal) and, when runs shut down, the mean shutdown epoch (vertical line,
    at the start of that epoch; frozen runs keep their last profile). Tick ``e`` is the
    lower edge of row / epoch ``e``. Panel titles count
    the runs that shut down. None when the task has no ``p_stop`` profile rows."""
    prof = tables.get("profile")
    if prof is None:
        return None
    p = prof[(prof["task"] == task) & (prof["metric"].astype(str) == "p_stop") & (prof["split"].astype(str) == "train")]
    if p.empty:
        return None
    p = p.assign(method=p["method"].astype(str))
    labels = list(dict.fromkeys(p["method"]))
    parts = _parts(tables, task, labels)
    labels = _ordered(labels, parts)
    facts = _facts(tables, task, labels)
    nrows, ncols, where = _grid(labels, parts)
    fig = Figure(figsize=(2.75 * ncols + 1.2, 2.55 * nrows + 1.0), dpi=DPI, layout="constrained")
    fig.suptitle(f"{task}: mean shutdown probability at each epoch index over training (train inputs)",
                 x=0.01, ha="left", fontweight="bold")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    used = set(where.values())
    for r in range(nrows):
        for c in range(ncols):
            if (r, c) not in used:
                axes[r][c].set_axis_off()
    mesh = None
    for lab in labels:
        r, c = where[lab]
        ax = axes[r][c]
        f = facts.loc[lab]
        m = p[p["method"] == lab].pivot_table(index="epoch", columns="step", values="value", aggfunc="mean")
        m = m.reindex(index=range(int(m.index.max()) + 1))  # every epoch index, a missing one blank
        x = m.columns.to_numpy(float) / f["epoch_len"]
        mid = (x[1:] + x[:-1]) / 2
        first = x[0] - (mid[0] - x[0] if len(x) > 1 else 0.5)
        last = x[-1] + (x[-1] - mid[-1] if len(x) > 1 else 0.5)
        xe = np.concatenate([[first], mid, [last]])
        ye = np.arange(len(m.index) + 1, dtype=float)
        mesh = ax.pcolormesh(xe, ye, m.to_numpy(), cmap=CMAP, vmin=0.0, vmax=1.0, shading="flat", rasterized=True)
        E = f["epochs"]
        top = min(E, x[-1])
        ax.plot([0, top], [0, top], color="white", ls=(0, (1.5, 1.5)), lw=1.3, path_effects=halo("#333333", 2.4))
        if np.isfinite(f["turn"]):
            ax.axhline(f["turn"], color=TURN_COLOR, ls=(0, (4, 2)), lw=1.5, path_effects=halo("white", 2.8))
        if np.isfinite(E) and E < ye[-1]:
            ax.axhline(E, color="white", lw=1.3, path_effects=halo("#333333", 2.6))
            ax.text(xe[0] + 0.02 * (xe[-1] - xe[0]), E + 0.2, "unseen", color="white", fontsize=7.5,
                    va="bottom", ha="left", path_effects=halo("#333333", 2.2))
        if np.isfinite(f["shutdown"]):
            ax.axvline(f["shutdown"], color=SHUT_COLOR, lw=1.6, path_effects=halo("#333333", 2.8))
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(0, ye[-1])
        ax.xaxis.set_major_locator(_int_locator())
        ax.yaxis.set_major_locator(_int_locator())
        ax.grid(False)
        ax.set_title(_title(lab, f), loc="left", fontsize=8.5)
        if r == nrows - 1 or (r + 1, c) not in used:
            ax.set_xlabel("training time (epochs)")
        if c == 0:
            ax.set_ylabel("epoch index fed to the model")
    fig.colorbar(mesh, ax=axes.ravel().tolist(), label="P(shutdown), mean over runs", shrink=0.85, aspect=30)
    handles = [Line2D([], [], color=TURN_COLOR, ls=(0, (4, 2)), lw=1.5, label="reward turns negative (turn epoch)"),
               Line2D([], [], color="white", lw=1.3, path_effects=halo("#333333", 2.6),
                      label="E: epoch indices above never seen in training"),
               Line2D([], [], color="white", ls=(0, (1.5, 1.5)), lw=1.3, path_effects=halo("#333333", 2.4),
                      label="current epoch (y = x)"),
               Line2D([], [], color=SHUT_COLOR, lw=1.6, path_effects=halo("#333333", 2.8),
                      label="mean shutdown epoch")]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig


def _int_locator():
    return MaxNLocator(nbins=6, integer=True)


def _run_matrix(tr: pd.DataFrame) -> pd.DataFrame:
    """One label's trace of one metric as steps x runs (NaN kept)."""
    keys = [k for k in ("cell", *SWEPT, "run") if k in tr.columns]
    return tr.pivot_table(index="step", columns=keys, values="value", aggfunc="mean", dropna=False)


def _stopped(w: pd.DataFrame) -> pd.DataFrame:
    """True where a run has stopped: this and every later update NaN."""
    return w.isna().iloc[::-1].cummin().iloc[::-1]


def _binned(w: pd.DataFrame, epoch_len: float) -> pd.Series:
    """Mean over runs of each run's mean per ``BIN``-epoch bin, indexed by bin centre (epochs)."""
    t = (w.index.to_numpy(float) - 1) / epoch_len  # update s runs in epoch (s - 1) // L
    b = np.floor(t / BIN + 1e-9)
    per_run = w.groupby(b).mean()
    return pd.Series(per_run.mean(axis=1).to_numpy(), index=(per_run.index.to_numpy() + 0.5) * BIN)


def reward_curves(tables: dict[str, pd.DataFrame], task: str) -> Figure | None:
    """For one task, side by side: (left) the per-update reward (batch mean at the current
    epoch), a run that shut down counting 0 from its shutdown on; (right) the per-update
    ``p_stop`` at the current epoch, a run that shut down held at its last value (the
    frozen model's probability when it stopped). Both are means over runs of each run's
    mean per quarter-epoch bin. Colour per horizon, line style per schedule (from the
    ``myopia_setup`` table; otherwise a colour per label); grey vertical lines in the
    schedule's style mark the turn epochs (listed in the legend). None when the task has
    no reward traces."""
    tr = tables.get("traces")
    if tr is None:
        return None
    tr = tr[(tr["task"] == task) & tr["metric"].astype(str).isin(["reward", "p_stop"])]
    if tr.empty or not (tr["metric"].astype(str) == "reward").any():
        return None
    tr = tr.assign(method=tr["method"].astype(str), metric=tr["metric"].astype(str))
    labels = list(dict.fromkeys(tr.loc[tr["metric"] == "reward", "method"]))
    parts = _parts(tables, task, labels)
    labels = _ordered(labels, parts)
    facts = _facts(tables, task, labels)
    if parts is not None:
        heads = sorted(dict.fromkeys(p[0] for p in parts.values()))
        schedules = _schedules(p[1] for p in parts.values())
        pal = dict(zip(heads, sns.color_palette("colorblind", len(heads)), strict=True))
        color = {lab: pal[parts[lab][0]] for lab in labels}
        style = {lab: SCHEDULE_STYLES[schedules.index(parts[lab][1]) % len(SCHEDULE_STYLES)] for lab in labels}
        sched_of = {lab: parts[lab][1] for lab in labels}
    else:
        color = dict(zip(labels, sns.color_palette("colorblind", len(labels)), strict=True))
        style = dict.fromkeys(labels, "solid")
        schedules, sched_of = [], dict.fromkeys(labels, "")
    fig = Figure(figsize=(10.5, 4.4), dpi=DPI, layout="constrained")
    fig.suptitle(f"{task}: reward and shutdown probability over training (mean over runs, 1/4-epoch bins)",
                 x=0.01, ha="left", fontweight="bold")
    ax, bx = fig.subplots(1, 2)
    for lab in labels:
        el = facts.loc[lab, "epoch_len"]
        if not np.isfinite(el):
            el = float(tr["step"].max()) / 10
        sub = tr[tr["method"] == lab]
        rw = _run_matrix(sub[sub["metric"] == "reward"])
        if not rw.empty:
            rw = rw.mask(_stopped(rw), 0.0)
            cur = _binned(rw, el)
            ax.plot(cur.index, cur.to_numpy(), color=color[lab], ls=style[lab], lw=1.6, label=lab)
        ps = _run_matrix(sub[sub["metric"] == "p_stop"])
        if not ps.empty:
            ps = ps.where(~_stopped(ps), ps.ffill())
            cur = _binned(ps, el)
            bx.plot(cur.index, cur.to_numpy(), color=color[lab], ls=style[lab], lw=1.6, label=lab)
    # turn epochs, one line per distinct (turn, schedule)
    turns = facts["turn"].groupby([sched_of[lab] for lab in facts.index]).agg(lambda v: sorted(set(v.dropna())))
    turn_handles = []
    for sched in [*schedules, *[k for k in turns.index if k not in schedules]]:
        values = turns.get(sched, [])
        ls = SCHEDULE_STYLES[schedules.index(sched) % len(SCHEDULE_STYLES)] if sched in schedules else "solid"
        for v in values:
            for a in (ax, bx):
                a.axvline(v, color=TURN_GREY, ls=ls, lw=1.0, zorder=0)
        if values:
            when = ", ".join(f"{v:g}" for v in values)
            turn_handles.append(Line2D([], [], color=TURN_GREY, ls=ls, lw=1.0,
                                       label=f"{sched + ': ' if sched else ''}reward turns (epoch {when})"))
    ax.axhline(0, color="#999999", lw=0.8, zorder=0)
    ax.set_title("reward per update (0 after shutdown)", loc="left", fontsize=9.5)
    ax.set_xlabel("training time (epochs)")
    ax.set_ylabel("reward (batch mean)")
    bx.set_title("P(shutdown) at the current epoch (last value held after shutdown)", loc="left", fontsize=9.5)
    bx.set_xlabel("training time (epochs)")
    bx.set_ylabel("P(shutdown) (batch mean)")
    bx.set_ylim(-0.02, 1.02)
    for a in (ax, bx):
        a.xaxis.set_major_locator(_int_locator())
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    handles = [lines[lab] for lab in labels if lab in lines]
    nrows = len(schedules)
    if nrows and len(handles) % nrows == 0 and len(turn_handles) == nrows:
        # one schedule per legend row (labels are schedule-major), its turn epoch last;
        # a legend fills column by column
        ncols = len(handles) // nrows + 1
        rows = [[*handles[r * (ncols - 1):(r + 1) * (ncols - 1)], turn_handles[r]] for r in range(nrows)]
        handles = [rows[r][c] for c in range(ncols) for r in range(nrows)]
    else:
        handles = handles + turn_handles
        ncols = min(len(handles), 5)
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize=8, frameon=False)
    return fig
