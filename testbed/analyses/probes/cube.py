"""One run's probe predictions as arrays (`Cube`), without the drawing code: what the probe
figures (`testbed.analyses.probes.runs`) and the derived velocity table
(`testbed.analyses.probes.velocity`) both read. Kept apart so a suite that derives the
velocity table and copies its figures (`testbed.report.figure_cache`) does not import
seaborn and matplotlib (~2.5 s).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["Cube", "log_softmax"]


def _probe_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The probes table with the true target value renamed ``target`` for the plotting code.

    docs/suite_tables.md names the value ``y`` (``target`` is the cell's target kind).
    """
    p = tables["probes"]
    if "y" in p.columns:
        p = p.drop(columns=[c for c in p.columns if c == "target"]).rename(columns={"y": "target"})
    return p


class Cube:
    """One run's probe predictions as arrays: steps [E], x0/x1/split [P], pred [E, P, K], target [P, K]."""

    def __init__(self, df: pd.DataFrame):
        self.steps = np.sort(df["step"].unique()).astype(np.float64)
        probes = np.sort(df["probe"].unique())
        outputs = np.sort(df["output"].unique())
        e = np.searchsorted(self.steps, df["step"].to_numpy(np.float64))
        p = np.searchsorted(probes, df["probe"].to_numpy())
        k = np.searchsorted(outputs, df["output"].to_numpy())
        self.pred = np.full((len(self.steps), len(probes), len(outputs)), np.nan)
        self.pred[e, p, k] = df["pred"].to_numpy(np.float64)
        self.target = np.full((len(probes), len(outputs)), np.nan)
        self.target[p, k] = df["target"].to_numpy(np.float64)
        first = df.drop_duplicates("probe").set_index("probe").reindex(probes)
        self.x0 = first["x0"].to_numpy(np.float64)
        self.x1 = first["x1"].to_numpy(np.float64) if "x1" in first else np.full(len(probes), np.nan)
        self.split = first["split"].astype(str).to_numpy()
        self.K = len(outputs)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - np.nanmax(z, axis=-1, keepdims=True)
    return z - np.log(np.nansum(np.exp(z), axis=-1, keepdims=True))
