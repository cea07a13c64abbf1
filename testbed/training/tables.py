"""Long tables from a `RunResult`, beside its ``history``: what a suite stores per cell.

* `batch_loss_table`: the training-batch loss at every update of every run.
* `traces_table`: the method's other per-update values (`RunResult.traces`).
* `probe_table`: the predictions at the probe inputs at every evaluation (first seed).

Each row carries the run's columns (`testbed.core.columns.RUN`), so tables join.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.core.columns import RUN


def probe_table(task, result) -> pd.DataFrame:
    """Predictions at the probes over training, for the first seed of each grid point (long form)."""
    runs = result.runs
    first = runs[runs["seed"] == runs["seed"].iloc[0]]
    x = np.asarray(task.domain.decode(result.probe.x))
    n_probe = x.shape[0]
    preds = result.predictions[first["run"].to_numpy()]  # [R1, E, Pn(, K)]
    preds = preds.reshape(preds.shape[:3] + (-1,))
    y = np.asarray(result.probe.y)
    if task.target == "class":
        y = np.eye(task.out_dim, dtype=np.float32)[np.clip(y, 0, task.out_dim - 1)]
    y = y.reshape(n_probe, -1)
    r1, n_e, _, n_out = preds.shape
    ri, ei, pi, oi = (a.ravel() for a in np.meshgrid(np.arange(r1), np.arange(n_e), np.arange(n_probe),
                                                      np.arange(n_out), indexing="ij"))
    split_names = np.array(list(task.splits) + ["none"])
    piece_names = np.array(list(task.pieces) + ["none"])
    piece = np.asarray(result.probe.piece)
    per_probe = {"kind": np.where(np.arange(n_probe) < result.probe_grid, "grid", "ood"),
                 "split": split_names[result.probe_split], "piece": piece_names[np.where(piece >= 0, piece, -1)]}
    return pd.DataFrame({
        **{c: first[c].to_numpy()[ri] for c in RUN}, "step": result.eval_steps[ei], "probe": pi,
        **{c: _expand(v, pi) for c, v in per_probe.items()},
        "x0": x[pi, 0], "x1": x[pi, 1] if x.shape[1] > 1 else np.nan,
        "output": oi, "y": y[pi, oi], "pred": preds[ri, ei, pi, oi],
    })


def _expand(labels: np.ndarray, index: np.ndarray) -> pd.Categorical:
    """``labels[index]`` as the categorical ``astype("category")`` makes of it (the values present,
    sorted), built from the few labels' codes: making the strings of every row first took
    ~0.2 s a cell of a 23-class task."""
    present = np.zeros(len(labels), bool)
    present[index] = True
    small = pd.Series(labels[present]).astype("category")
    codes = np.full(len(labels), -1, np.int64)
    codes[present] = small.cat.codes.to_numpy()
    return pd.Categorical.from_codes(codes[index], dtype=small.dtype)


def batch_loss_table(result) -> pd.DataFrame:
    """The per-update training loss of every run, long form."""
    return _per_update(result, result.batch_loss)


def traces_table(result) -> pd.DataFrame:
    """The method's other per-update values (`RunResult.traces`), long form with a metric column."""
    parts = [_per_update(result, v).assign(metric=k) for k, v in result.traces.items()]
    df = pd.concat(parts, ignore_index=True)
    df["metric"] = df["metric"].astype("category")
    return df[[*RUN, "step", "metric", "value"]]


def _per_update(result, values: np.ndarray) -> pd.DataFrame:
    runs = result.runs
    n_runs, steps = values.shape
    r, s = (a.ravel() for a in np.meshgrid(np.arange(n_runs), np.arange(steps), indexing="ij"))
    return pd.DataFrame({**{c: runs[c].to_numpy()[r] for c in RUN}, "step": s + 1,
                         "value": values.ravel().astype(np.float64)})
