"""``myopia``: where a model that sees its epoch index shuts itself down, and what it earns.

Asked for by the ``myopic`` and ``nonmyopic`` methods (`testbed.Extras.analyses`). It reads
what those methods record in every cell: their per-run metrics in the history, the
``profile`` (shutdown probability at every epoch index) and the ``traces``. Comparison:
``myopia`` (task x label: shutdown epoch, reward, shutdown rates) and ``myopia_long``.
Figures: per task, the shutdown heatmap and the reward curves.
"""

from __future__ import annotations

import math
import re

import pandas as pd

from testbed.analyses import kit
from testbed.analyses.base import Analysis, Figure, register_analysis
from testbed.core.columns import RUN

MYOPIA_COLUMNS = {  # quantity -> display column
    "shutdown_epoch": "shutdown epoch", "turn_epoch": "reward turns", "shut_down": "shut down",
    "reward_total": "reward", "operating_loss": "task loss", "rate_unseen": "shutdown, unseen epochs",
    "rate_train": "shutdown, train inputs", "rate_ood": "shutdown, OOD inputs",
}


def myopia_per_run(final: pd.DataFrame, profile: pd.DataFrame | None) -> pd.DataFrame:
    """Per-run myopia quantities (long: kit.UNIT, quantity, value) from labelled final history
    rows (the myopic methods' per-run metrics and final ``shutdown_rate`` per split) and the
    labelled ``profile`` table (shutdown rate at epoch indices >= the run's epoch count)."""
    f = final[final["piece"] == "all"]
    runs = f[f["metric"] == "epochs"][[*kit.UNIT, "value"]].rename(columns={"value": "epochs"})
    if runs.empty:
        return pd.DataFrame(columns=[*kit.UNIT, "quantity", "value"])
    parts = [f[f["metric"].isin(["shutdown_epoch", "turn_epoch", "shut_down", "reward_total", "operating_loss"])]
             [[*kit.UNIT, "metric", "value"]].rename(columns={"metric": "quantity"})]
    rate = f[f["metric"] == "shutdown_rate"]
    parts.append(rate[~rate["ood"]][[*kit.UNIT, "value"]].assign(quantity="rate_train"))
    ood = rate[rate["ood"]].groupby(kit.UNIT, sort=False)["value"].mean().reset_index()
    parts.append(ood.assign(quantity="rate_ood"))
    if profile is not None and not profile.empty:
        pr = profile[(profile["metric"] == "shutdown_rate") & (profile["split"] == "train")]
        pr = pr[pr["step"] == pr.groupby("cell")["step"].transform("max")].merge(runs, on=kit.UNIT)
        unseen = pr[pr["epoch"] >= pr["epochs"]].groupby(kit.UNIT, sort=False)["value"].mean().reset_index()
        parts.append(unseen.assign(quantity="rate_unseen"))
    return pd.concat(parts, ignore_index=True)


def _natural(text: str) -> list:
    """Sort key with digit runs compared as numbers."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def _compare(v: kit.View) -> dict[str, pd.DataFrame]:
    """Myopia tables: one row per task x label with a column per quantity."""
    prof = v.tables.get("profile")
    per_run = myopia_per_run(v.final, None if prof is None else v.with_label(prof))
    if per_run.empty:
        return {}
    long = v.summary(per_run, ["task", "label", "quantity"])
    order = sorted(set(long["label"]), key=_natural)  # H1 < H4 < H16
    long = kit.sort_by(long, {"task": v.tasks, "label": order, "quantity": list(MYOPIA_COLUMNS)})
    wide = long.assign(text=[
        kit.MISSING if not math.isfinite(m) else kit.fmt_ci(m, lo, hi, v.digits) if q != "turn_epoch" else kit.num(m)
        for m, lo, hi, q in zip(long["mean"], long["ci_low"], long["ci_high"], long["quantity"], strict=True)])
    wide = wide.pivot(index=["task", "label"], columns="quantity", values="text")
    wide = wide[[q for q in MYOPIA_COLUMNS if q in wide.columns]].rename(columns=MYOPIA_COLUMNS).reset_index()
    wide.columns.name = None
    wide = kit.sort_by(wide, {"task": v.tasks, "label": order}).fillna(kit.MISSING)
    ci = f"mean [{v.level:.0%} bootstrap CI] over runs"
    wide.attrs.update(title="Myopia and shutdown (methods that can shut down)", note=(
        f"Cells: {ci}. shutdown epoch: the epoch where the run's batch shutdown probability first "
        "exceeded the threshold (runs that shut down; n in myopia_long); reward turns: the first "
        "epoch with a negative bonus; shut down: fraction of runs; reward: reward collected, in "
        "per-epoch units; task loss: mean training-batch task loss while operating; shutdown rates: "
        "fraction of inputs with shutdown probability above the threshold for the final model, at "
        "epoch indices never reached in training (>= the run's epochs; train inputs), and at the "
        "last epoch on train and OOD inputs."))
    long.attrs.update(title="Myopia (numeric)", note=(
        "quantity: shutdown_epoch, turn_epoch, shut_down, reward_total, operating_loss, rate_unseen, "
        "rate_train, rate_ood; mean, CI and n over runs."))
    return {"myopia": wide, "myopia_long": long}


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.myopia import figures

    prof = tables.get("profile")
    if prof is None or "p_stop" not in set(prof["metric"].astype(str)):
        return []
    out = []
    for task in dict.fromkeys(prof["task"].astype(str)):
        for name, draw in (("shutdown_heatmap", figures.shutdown_heatmap), ("reward_curves", figures.reward_curves)):
            fig = draw(tables, task)
            if fig is not None:
                out.append(Figure(name, f"{task}: {figures.CAPTIONS[name]}", fig, task))
    return out


def _measure(task, method, result) -> dict[str, pd.DataFrame]:
    """``myopia_setup``: each run's horizon (0 for the myopic objective: the current epoch
    only) and reward schedule, from the method's own hyperparameters; the figures lay their
    panels out by these."""
    hp = dict(method.hparams)
    runs = result.runs[[*RUN]]
    return {"myopia_setup": runs.assign(horizon=float(hp.get("horizon", 0)), schedule=str(hp.get("schedule", "")))}


@register_analysis("myopia")
def myopia() -> Analysis:
    """Shutdown and reward of methods that see their epoch index (asked for by those methods).

    Its comparison and figures read what those methods record in every cell (history
    metrics, ``profile``, ``traces``), so folders written before ``myopia_setup`` existed
    still compare; ``myopia_setup`` only lays out the figures."""
    return Analysis("myopia", measure=_measure, compare=_compare, printed=("myopia",), figures=_figures)
