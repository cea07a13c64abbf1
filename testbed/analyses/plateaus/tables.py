"""Plateaus over many curves: a stack of arrays, a training history, a suite's per-update loss.

Every curve goes through `testbed.analyses.plateaus.detect.plateaus`; these functions
only select curves and lay the plateaus out as tables (one row per plateau, or per run).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from testbed.analyses.plateaus.detect import (
    CONFIG_COLUMNS,
    PLATEAU_COLUMNS,
    Plateau,
    plateaus,
    read_curve,
)


def detect_on_array(steps: np.ndarray | None, losses: np.ndarray, **detector_kwargs) -> list[list[Plateau]]:
    """`plateaus` on each row of a stack of curves.

    Args:
        steps: [T] steps shared by every row, or None for ``0..T-1`` (as for
            ``RunResult.batch_loss``, whose column t is the loss of update t).
        losses: [R, T] loss curves (e.g. ``RunResult.batch_loss``).
        **detector_kwargs: passed to `plateaus`.

    Returns:
        One list of plateaus per row.
    """
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 2:
        raise ValueError(f"losses must be [runs, steps], got shape {losses.shape}")
    steps = np.arange(losses.shape[1]) if steps is None else np.asarray(steps)
    return [plateaus(steps, row, **detector_kwargs) for row in losses]


def plateau_table(history: pd.DataFrame, *, metric: str = "loss", split: str = "train",
                  by: Sequence[str] | None = None, **detector_kwargs) -> pd.DataFrame:
    """One row per plateau of every (run, piece) curve of a training history.

    Curves are the ``metric`` values on ``split`` over ``step``, one per run and
    piece (piece ``"all"`` and each piece in the history). A curve is identified
    by the config columns present (task, method, model, optimizer, lr,
    weight_decay, init_scale), the ``by`` columns, run, seed and piece, so
    histories of several `testbed.train` calls can be concatenated (add a
    distinguishing column and pass it in ``by`` if configs coincide).

    Args:
        history: a tidy history (``RunResult.history``).
        metric: which metric's curve to read.
        split: which split's curve to read.
        by: extra columns that identify a curve (kept in the output).
        **detector_kwargs: passed to `plateaus`.

    Returns:
        Columns: the key columns, then plateau (0-based index within its curve),
        start, end, duration, level, drop, ended, drop_step (see `Plateau`): escaped
        stalls, and the final stretch of a curve stuck at the end (``ended`` false).
        Curves without plateaus contribute no rows (see `plateau_summary`).
    """
    keys, rows = [], []
    for key, curve in _curves(history, metric, split, by):
        keys = list(key)
        for i, p in enumerate(plateaus(curve["step"].to_numpy(), curve["value"].to_numpy(), **detector_kwargs)):
            rows.append({**key, "plateau": i, **p._asdict()})
    if not keys:
        keys = _key_columns(history, by)
    return pd.DataFrame(rows, columns=[*keys, *PLATEAU_COLUMNS])


def plateau_summary(history: pd.DataFrame, *, metric: str = "loss", split: str = "train",
                    by: Sequence[str] | None = None, **detector_kwargs) -> pd.DataFrame:
    """Plateau statistics per configuration and piece, across seeds.

    Args:
        history, metric, split, by, detector_kwargs: as in `plateau_table`.

    Returns:
        One row per (config columns, ``by`` columns, piece) with columns:
        ``curves`` (runs: seeds), ``count_mean`` and ``count_median`` (plateaus per
        curve: escaped stalls, plus the final stretch of a curve stuck at the end),
        ``ended_mean`` (escaped stalls per curve), ``count_dist`` (``"count:curves"`` pairs, e.g.
        ``"2:1,3:7"``), ``duration_median`` (over all plateaus of the group, steps),
        ``plateau_time_mean`` (total plateau steps per curve, mean over curves) and
        ``first_end_median`` (when the first plateau ends: the escape time; NaN if
        fewer than half of the curves have a plateau).
    """
    per_curve, durations = [], []
    for key, curve in _curves(history, metric, split, by):
        ps = plateaus(curve["step"].to_numpy(), curve["value"].to_numpy(), **detector_kwargs)
        per_curve.append({**key, "count": len(ps), "ended": sum(p.ended for p in ps),
                          "time": float(sum(p.duration for p in ps)),
                          "first_end": ps[0].end if ps else math.nan})
        durations.append([p.duration for p in ps])
    group = [c for c in _key_columns(history, by) if c not in ("run", "seed")]
    cols = [*group, "curves", "count_mean", "count_median", "ended_mean", "count_dist",
            "duration_median", "plateau_time_mean", "first_end_median"]
    if not per_curve:
        return pd.DataFrame(columns=cols)
    df = pd.DataFrame(per_curve)
    df["_durations"] = durations
    out = []
    for key, g in df.groupby(group, observed=True, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        counts = g["count"].to_numpy()
        values, freq = np.unique(counts, return_counts=True)
        durs = [d for ds in g["_durations"] for d in ds]
        first = g["first_end"].to_numpy()
        out.append({**dict(zip(group, key, strict=True)), "curves": len(g),
                    "count_mean": float(counts.mean()), "count_median": float(np.median(counts)),
                    "ended_mean": float(g["ended"].mean()),
                    "count_dist": ",".join(f"{v}:{c}" for v, c in zip(values, freq, strict=True)),
                    "duration_median": float(np.median(durs)) if durs else math.nan,
                    "plateau_time_mean": float(g["time"].mean()),
                    "first_end_median": float(np.nanmedian(first)) if np.isfinite(first).mean() >= 0.5
                    else math.nan})
    return pd.DataFrame(out, columns=cols)


# -- internals -------------------------------------------------------------------

def _key_columns(history: pd.DataFrame, by: Sequence[str] | None) -> list[str]:
    by = list(by or [])
    missing = [c for c in [*by, "run", "step", "split", "piece", "metric", "value"] if c not in history.columns]
    if missing:
        raise ValueError(f"history lacks columns {missing}")
    ids = ["run", "seed", "piece"] if "seed" in history.columns else ["run", "piece"]
    return [c for c in CONFIG_COLUMNS if c in history.columns and c not in by] + by + ids


def _curves(history: pd.DataFrame, metric: str, split: str, by: Sequence[str] | None):
    """Yield (key dict, curve frame sorted by step) per curve."""
    keys = _key_columns(history, by)
    h = history[(history["metric"] == metric) & (history["split"] == split)]
    for key, curve in h.groupby(keys, observed=True, sort=True, dropna=False):
        curve = curve.sort_values("step")
        yield dict(zip(keys, key, strict=True)), curve


def run_plateaus(batch_loss: pd.DataFrame, *, by: Sequence[str] = ("cell",), zero: float | dict | None = None,
                 zero_by: str = "method", **detector_kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Plateaus of every run's per-update training loss: one row per plateau, and per run.

    Args:
        batch_loss: long table with ``by`` columns, run, seed, step, value (a suite's
            ``batch_loss`` table, see docs/suite_tables.md).
        by: columns that identify a cell; kept in the output.
        zero: the loss a perfect fit reaches: a number, or ``{value: number}`` read with
            the ``zero_by`` column (default ``method``; a suite's derive gives one per
            ``cell``; missing values: 0); default 0.
        **detector_kwargs: passed to `read_curve`.

    Returns:
        (rows, per_run): ``rows`` one row per plateau (escaped stalls, and the final stretch
        of a run stuck at the end with ``ended=False``): the ``by`` columns, run, seed, then
        `PLATEAU_COLUMNS`. ``per_run`` one row per run: the ``by`` columns, run, seed,
        ``stalls`` (escaped plateaus), ``stuck`` (1 when the run ends stuck clearly above
        zero), ``converged`` (1 when it ends at zero), ``bumps`` (rises above the running
        minimum that came back), ``stall_time`` (steps on stalls), ``stall_frac`` (that over
        the run's length) and ``median_duration`` (of its stalls; NaN without one).
    """
    keys = [*by, "run", "seed"]
    rows, per_run = [], []
    for key, curve in batch_loss.groupby(keys, observed=True, sort=True, dropna=False):
        curve = curve.sort_values("step")
        ident = dict(zip(keys, key, strict=True))
        z = _zero_for(zero, ident.get(zero_by, curve[zero_by].iloc[0] if zero_by in curve else None))
        t, v = curve["step"].to_numpy(np.float64), curve["value"].to_numpy(np.float64)
        c = read_curve(t, v, zero=z, **detector_kwargs)
        for i, p in enumerate(c.plateaus()):
            rows.append({**ident, "plateau": i, **p._asdict()})
        durations = [p.duration for p in c.stalls]
        span = max(float(t[-1] - t[0]), 1.0) if len(t) else 1.0
        per_run.append({**ident, "stalls": len(c.stalls), "stuck": int(bool(c.final and c.final.stuck)),
                        "converged": int(bool(c.final and c.final.converged)), "bumps": len(c.bumps),
                        "stall_time": float(sum(durations)), "stall_frac": float(sum(durations)) / span,
                        "median_duration": float(np.median(durations)) if durations else math.nan})
    cols = [*keys, "stalls", "stuck", "converged", "bumps", "stall_time", "stall_frac", "median_duration"]
    return pd.DataFrame(rows, columns=[*keys, *PLATEAU_COLUMNS]), pd.DataFrame(per_run, columns=cols)


def _zero_for(zero: float | dict | None, method) -> float:
    if zero is None:
        return 0.0
    if isinstance(zero, dict):
        return float(zero.get(method, 0.0))
    return float(zero)


def with_final_loss(per_run: pd.DataFrame, history: pd.DataFrame, *, by: Sequence[str] = ("cell",),
                    zero: float | dict | None = None, zero_tol: float = 1e-3, zero_by: str = "method") -> pd.DataFrame:
    """Add each run's final train loss (the method's objective, from the evaluations) and
    ``reached_zero``: 1 when it ends within ``zero_tol`` of its initial loss above the
    zero-loss level (``zero``, as in `run_plateaus`), the detector's definition of converged,
    read from the evaluated (not per-batch) train loss."""
    h = history[(history["split"] == "train") & (history["piece"] == "all") & (history["metric"] == "loss")]
    g = h.groupby([*by, "run"], observed=True)
    first = h[h["step"] == g["step"].transform("min")][[*by, "run", "value"]].rename(columns={"value": "first_loss"})
    fin = h[h["step"] == g["step"].transform("max")][[*by, "run", "value"]].rename(columns={"value": "final_loss"})
    out = per_run.merge(fin, on=[*by, "run"], how="left").merge(first, on=[*by, "run"], how="left")
    keys = out[zero_by] if zero_by in out.columns else pd.Series([None] * len(out), index=out.index)
    z = np.array([_zero_for(zero, m) for m in keys], np.float64)
    above0 = out["first_loss"].to_numpy(np.float64) - z
    reached = (out["final_loss"].to_numpy(np.float64) - z) <= zero_tol * np.maximum(above0, 0.0)
    out["reached_zero"] = np.where(out["final_loss"].notna(), reached.astype(float), np.nan)
    return out.drop(columns="first_loss")
