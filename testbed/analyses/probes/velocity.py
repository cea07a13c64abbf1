"""Probe velocity: how fast the model's predictions at the probe inputs move over training.

Between consecutive evaluations ``k-1, k`` of one run, the velocity of a group of probes
(a split, a piece, or all of them) is the root-mean-square change of their predictions
per training step::

    v_k = sqrt(mean over probes p, outputs o of (pred_k[p, o] - pred_{k-1}[p, o])^2) / (t_k - t_{k-1})

For distribution and class targets the predictions are logits, compared after
``log_softmax`` (so the shift a softmax ignores does not count as movement). Plotted
under the loss curve, a jump of the velocity at a plateau's escape says the function
itself changed when the loss dropped (`testbed.analyses.probes.figures.velocity_curves`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from testbed.analyses.probes.cube import Cube, _probe_table, log_softmax

VELOCITY_COLUMNS = ["step", "split", "piece", "velocity"]


def probe_velocity(probes: pd.DataFrame, *, by: Sequence[str] = (), target: str = "scalar") -> pd.DataFrame:
    """Velocity of the probe predictions between evaluations, per run and group of probes.

    Args:
        probes: a probes table (`testbed.training.tables.probe_table`; a suite's ``probes``),
            one or many runs.
        by: columns that identify a cell beside ``run`` and ``seed`` (e.g. ``("cell",)``);
            kept in the output.
        target: the task's target kind; ``distribution`` and ``class`` compare log-softmax.

    Returns:
        Columns: the ``by`` columns, run, seed, step (the later evaluation of each pair),
        split, piece and velocity. One row per group: each split with ``piece == "all"``,
        each piece with ``split == "all"`` (when the table has pieces), and ``all``/``all``.
    """
    p = _probe_table({"probes": probes}) if "y" in probes.columns else probes
    keys = [*by, "run", "seed"]
    missing = [c for c in [*keys, "step", "probe", "output", "pred", "split"] if c not in p.columns]
    if missing:
        raise ValueError(f"probe_velocity: the probes table lacks columns {missing}")
    rows = []
    for key, run in p.groupby(keys, observed=True, sort=True):
        if run["step"].nunique() < 2:
            continue
        cube = Cube(run.assign(target=run.get("target", np.nan)))
        pred = log_softmax(cube.pred) if target in ("distribution", "class") else cube.pred
        d = np.diff(pred, axis=0) / np.diff(cube.steps)[:, None, None]  # [E-1, P, K] per step
        groups = [("all", "all", np.ones(len(cube.split), bool))]
        groups += [(s, "all", cube.split == s) for s in dict.fromkeys(cube.split)]
        if "piece" in run.columns:
            piece = run.drop_duplicates("probe").set_index("probe").reindex(np.sort(run["probe"].unique()))
            piece = piece["piece"].astype(str).to_numpy()
            groups += [("all", pc, piece == pc) for pc in dict.fromkeys(piece) if pc != "none"]
        ident = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for split, piece_name, m in groups:
            v = np.sqrt(np.nanmean(d[:, m, :] ** 2, axis=(1, 2)))
            rows.append(pd.DataFrame({**ident, "step": cube.steps[1:], "split": split, "piece": piece_name,
                                      "velocity": v}))
    if not rows:
        return pd.DataFrame(columns=[*keys, *VELOCITY_COLUMNS])
    return pd.concat(rows, ignore_index=True)[[*keys, *VELOCITY_COLUMNS]]
