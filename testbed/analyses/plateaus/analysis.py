"""``plateaus``: stalls, runs stuck at the end, the zero-loss rate and bumps of every run.

Derived when a results folder is read (from ``batch_loss``, the per-update training loss,
so folders written before this analysis existed get it too): ``plateau_rows`` (one row
per escaped stall, and per final stretch of a run stuck at the end) and ``plateaus`` (per
run: stalls, stuck, converged, bumps, time on stalls, final train loss, whether it reached
the zero-loss level). See `testbed.analyses.plateaus.detect` for what each means.

Comparison: ``stalls`` (escaped plateaus per run), ``stuck`` (fraction of runs stuck at
the end, clearly above zero), ``zero_loss`` (fraction of runs that reach the zero-loss
level), ``bumps`` (per run) and ``plateaus_long`` (all quantities); the headline table
gets the mean stall count, the time on stalls and the stuck and zero-loss rates. Figure:
per task, the loss curves with the stalls and stuck stretches marked.
"""

from __future__ import annotations

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis
from testbed.core.columns import CELL, SWEPT, ZERO_LOSS

QUANTITIES = ("stalls", "stall_frac", "median_duration", "stuck", "reached_zero", "bumps", "final_loss")
TABLES = {  # comparison table: (quantity, title, what a cell shows)
    "stalls": ("stalls", "Stalls per run: plateaus the loss escaped (per-update training loss)",
               "escaped plateaus per run"),
    "stuck": ("stuck", "Runs stuck at the end: flat, clearly above the zero-loss level",
              "fraction of runs"),
    "zero_loss": ("reached_zero", "Rate of reaching the zero-loss solution",
                  "fraction of runs whose final train loss is within 1e-3 of its initial loss above zero"),
    "bumps": ("bumps", "Bumps per run: rises of the loss above its running minimum that came back",
              "bumps per run (a rise of more than 50%)"),
}


def zero_levels(methods) -> dict[str, float]:
    """The loss a perfect fit reaches, per method (``Extras.zero_loss``; 0 for methods that
    are not registered here or cannot be built without arguments)."""
    methods = list(dict.fromkeys(methods))
    if not methods:
        return {}
    from testbed.core.errors import ConfigError
    from testbed.methods.base import METHODS, make_method

    out = {}
    for m in methods:
        try:
            out[m] = float(make_method(m).extras.zero_loss) if m in METHODS else 0.0
        except (ConfigError, TypeError, ValueError):
            out[m] = 0.0
    return out


def _derive(tables: dict) -> dict[str, pd.DataFrame]:
    from testbed.analyses.plateaus.tables import run_plateaus, with_final_loss

    if "batch_loss" not in tables:
        return {}
    bl = tables["batch_loss"]
    zero, by = _zero_losses(bl)
    rows, per_run = run_plateaus(bl, by=[*CELL, *SWEPT], zero=zero, zero_by=by)
    return {"plateau_rows": rows, "plateaus": with_final_loss(per_run, tables["history"], zero=zero, zero_by=by)}


def _zero_losses(bl: pd.DataFrame) -> tuple[dict | None, str]:
    """Each cell's zero loss, as it recorded it (`testbed.load_tables` puts the cells' facts in
    ``batch_loss.attrs``), else the registry's for its method label (older folders, tables
    put together by hand); and the column that keys them."""
    if "method" not in bl.columns:
        return None, "method"
    if "cell" not in bl.columns:
        return zero_levels(bl["method"].astype(str).unique()), "method"
    recorded = bl.attrs.get(ZERO_LOSS, {})
    cells = bl[["cell", "method"]].drop_duplicates()
    cells = list(zip(cells["cell"].astype(str), cells["method"].astype(str), strict=True))
    by_label = zero_levels(m for c, m in cells if c not in recorded)  # imports the registry only for these
    return {c: recorded.get(c, by_label.get(m, 0.0)) for c, m in cells}, "cell"


def _long(v: kit.View) -> pd.DataFrame | None:
    plat = v.tables.get("plateaus")
    if plat is None or plat.empty or "stalls" not in plat.columns:
        return None
    p = v.with_label(plat)
    longs = [v.summary(p, ["label", "task"], col).assign(quantity=col) for col in QUANTITIES if col in p.columns]
    return kit.sort_by(pd.concat(longs, ignore_index=True), {"label": v.order, "task": v.tasks})


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    plong = _long(v)
    if plong is None:
        return {}
    ci = f"mean [{v.level:.0%} bootstrap CI] over runs"
    out = {}
    for name, (quantity, title, what) in TABLES.items():
        if quantity in set(plong["quantity"]):
            out[name] = v.wide(plong[plong["quantity"] == quantity].assign(metric=quantity))
            out[name].attrs.update(title=title, note=f"Cells: {what}, {ci}.")
    out["plateaus_long"] = plong
    plong.attrs.update(title="Stalls, stuck runs, zero loss and bumps (numeric)", note=(
        "quantity: stalls (escaped plateaus per run), stall_frac (fraction of training on stalls), "
        "median_duration (of a run's stalls, steps), stuck (1: the run ends flat clearly above zero), "
        "reached_zero (1: the final train loss is within 1e-3 of the initial loss above zero), "
        "bumps (per run), final_loss (the method's train loss)."))
    return out


def _headline(v: kit.View) -> pd.DataFrame | None:
    plong = _long(v)
    if plong is None:
        return None
    means = plong.groupby(["label", "quantity"])["mean"].mean().unstack()

    def pct(col):
        if col not in means:
            return [kit.MISSING] * len(means)
        return means[col].map(lambda x: f"{x:.0%}" if pd.notna(x) else kit.MISSING).to_numpy()

    return pd.DataFrame({"label": means.index, "stalls": means["stalls"].round(2).to_numpy(),
                         "stall time": pct("stall_frac"), "stuck": pct("stuck"), "zero loss": pct("reached_zero")})


def _findings(v: kit.View, compared: dict[str, pd.DataFrame]) -> list[str]:
    """Where training stalled most, and where runs ended stuck."""
    plong = compared.get("plateaus_long")
    if plong is None or plong.empty:
        return []

    def at(quantity, label, task):
        m = plong[(plong["quantity"] == quantity) & (plong["label"] == label) & (plong["task"] == task)]["mean"]
        return float(m.iloc[0]) if len(m) else float("nan")

    out = []
    frac = plong[(plong["quantity"] == "stall_frac") & plong["mean"].notna()]
    if frac.empty or frac["mean"].max() <= 0:
        out.append("No stalls: no run's loss sat on a plateau it later escaped.")
    else:
        w = frac.sort_values("mean", ascending=False, kind="stable").iloc[0]
        out.append(f"Stalls: most time on escaped plateaus for {w['label']} on {w['task']} "
                   f"({at('stalls', w['label'], w['task']):.1f} stalls per run, {w['mean']:.0%} of training); "
                   "see the stalls table.")
    stuck = plong[(plong["quantity"] == "stuck") & (plong["mean"] > 0)]
    if len(stuck):
        w = stuck.sort_values("mean", ascending=False, kind="stable").iloc[0]
        out.append(f"Stuck: {w['mean']:.0%} of {w['label']} runs on {w['task']} end flat above zero loss "
                   f"(zero-loss rate {at('reached_zero', w['label'], w['task']):.0%}); see the stuck table.")
    return out


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.figkit import method_labels, task_facts
    from testbed.analyses.plateaus import figures

    out = []
    for task in dict.fromkeys(method_labels(tables)["task"]):
        try:
            fig = figures.loss_curves(tables, task, plateaus=tables.get("plateau_rows"))
        except ValueError:
            continue
        primary = task_facts(tables, task)["primary"]
        out.append(Figure("loss_curves", figures.CAPTION.format(task=task, primary=primary), fig, task))
        try:
            out.append(Figure("run_curves", figures.RUNS_CAPTION.format(task=task), figures.run_curves(tables, task),
                              task))
        except ValueError:
            pass
    return out


@register_analysis("plateaus")
def plateaus() -> Analysis:
    """Stalls, stuck runs, zero loss and bumps of the per-update training loss (every cell,
    derived when read)."""
    return Analysis("plateaus", default=True, derive=_derive, compare=_compare, headline=_headline,
                    printed=("stalls", "stuck", "zero_loss", "bumps"), findings=_findings, figures=_figures)
