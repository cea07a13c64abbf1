"""Summary statistics over seeds: means with percentile-bootstrap confidence intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

N_BOOT = 2000  # bootstrap resamples; seeded, so intervals are reproducible


def bootstrap_ci(values, level: float = 0.95, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap CI of the mean of ``values`` (NaNs dropped).

    Returns (mean, low, high); NaNs when no finite value is given; (v, v, v) for one value.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return (np.nan, np.nan, np.nan)
    if x.size == 1:
        return (float(x[0]),) * 3
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(x.mean()), float(lo), float(hi)


STATS = ["mean", "ci_low", "ci_high", "n"]  # the columns `summarize` adds


def summarize(df: pd.DataFrame, by: list[str], value: str = "value", level: float = 0.95) -> pd.DataFrame:
    """Group ``df`` by ``by`` (groups in order of appearance) and give the mean, the
    percentile-bootstrap CI (`bootstrap_ci`) and n (finite values) of ``value``."""
    rows = []
    for key, g in df.groupby(by, sort=False, observed=True):
        mean, lo, hi = bootstrap_ci(g[value].to_numpy(dtype=np.float64), level=level)
        key = key if isinstance(key, tuple) else (key,)
        rows.append((*key, mean, lo, hi, int(np.isfinite(g[value].to_numpy(dtype=float)).sum())))
    return pd.DataFrame(rows, columns=[*by, *STATS])
