"""Loss plateaus: find the stretches where training stalls, and the drops that end them.

A *plateau* is a stretch of a loss curve on which the log-loss changes slowly
compared with the curve's overall scale, that lasts a while and is followed by a
drop. This module finds them in one curve (`plateaus`); `testbed.analyses.plateaus.tables`
applies it to a stack of curves (`detect_on_array`, e.g. ``RunResult.batch_loss``), a
training history (`plateau_table`, `plateau_summary`) and a suite (`run_plateaus`).

How a curve is read (`plateaus`), with ``T`` the run's span in steps
(``steps[-1] - steps[0]``, a NaN tail included):

1. Non-finite losses (NaN, inf: a diverged run's tail, empty groups) are dropped;
   losses are clipped at ``floor`` and logged: ``y = log(max(loss, floor))``.
2. Smoothing: ``y`` is passed through a running median over ``smooth`` points (in
   index order; edges padded with the end values), which removes outliers and
   keeps the edges of sharp drops in place. Curves longer than 256 points are then
   binned into 256 equal bins of *steps* (value: the bin's median; weight: its
   number of points), so a per-update curve costs as little as an evaluation curve.
   Call the result ``z_i`` at steps ``t_i`` with weights ``w_i``.
3. Segmentation: ``z`` is fitted by a piecewise-linear function with independent
   (possibly discontinuous) segments of at least two points, by dynamic
   programming. With ``K`` segments the fit minimizes the weighted squared error
   ``SSE_K = sum_i w_i (z_i - a_k - b_k t_i)^2``, and ``K`` minimizes the BIC-like
   ``SSE_K / s^2 + 3 K ln(n)`` (slope, intercept and breakpoint per segment; ``n``
   the number of finite points), where ``s = max(sigma, 0.02)``: ``sigma`` is the
   noise of ``y``, ``1.4826 MAD(diff y) / sqrt 2``, and 0.02 (log units) is the
   resolution below which a noise-free curve counts as fitted.
4. Flatness: a segment of slope ``b`` (log-loss per step) is *flat* when its
   normalized slope is not significantly above ``flat_tol``::

       (|b| - 2 se(b)) * T / R <= flat_tol,   R = max(range of the fit, min_drop / flat_tol),

   with ``se(b) = sigma / sqrt(sum_i w_i (t_i - tbar)^2)``. A curve falling at a
   constant rate from its first to its last value has normalized slope 1, so a
   plain exponential decay has no flat segment; the floor on ``R`` makes a stretch
   that would lose less than ``min_drop`` over the whole run at its rate always flat.
5. Stretches: consecutive flat segments are merged (absorbing what lies between)
   when the fit changes by less than ``min_drop`` from the end of one to the start
   of the next; stretches shorter than ``min_duration * T`` are dropped; surviving
   neighbours whose levels differ by less than ``min_drop`` are merged again.
6. Levels and drops: a stretch's *log level* ``l_k`` is the median of ``z`` on it;
   its ``drop`` is ``l_k - l_{k+1}`` (the next plateau), or for the last one
   ``l_k`` minus the fit at the last finite point (0 when the run ends on it).
   ``ended = drop >= min_drop``: the plateau is left through a drop. Otherwise it
   is the final plateau the run ends on (a stuck run, an asymptote, a
   clipped-at-``floor`` tail) or, rarely, a stretch followed by a rise. Only ended
   plateaus satisfy "followed by a drop"; count those when comparing with theory.
7. Edges: next to a drop, a plateau is extended (its end later, the next one's
   start earlier) for as long as the smoothed curve stays within
   ``delta = max(min(0.05 drop, min_drop / 3), 2 noise)`` of the fitted level at its
   edge (``noise``: robust SD of its fit residuals). So a plateau ends where the
   loss has measurably left it; for a sigmoid drop in log space
   ``D / (1 + exp(-(t - c) / w))`` that is about ``c - 3 w``.

Times are in steps (linear time) whatever the spacing of ``steps``: log-spaced
evaluations locate late boundaries only to within their spacing. On synthetic
curves (1 to 3 sigmoid drops of 0.7 to 2.5 log units, 200 points) the count is
right in 98-100% of cases for log-space noise SD up to 0.1 (linear steps) or 0.05
(log-spaced steps), and edges are within 1.5% of the run (95th percentile).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from testbed.core.columns import COMPONENTS, SWEPT

CONFIG_COLUMNS = (*COMPONENTS, *SWEPT)
MAX_BINS = 256  # longer curves are binned into this many equal step bins
MAX_SEGMENTS = 32  # most segments the piecewise-linear fit may use
RESOLUTION = 0.02  # log units: fit residuals below this count as exact
PLATEAU_COLUMNS = ["plateau", "start", "end", "duration", "level", "drop", "ended", "drop_step"]


class Plateau(NamedTuple):
    """One plateau of a loss curve (times in steps).

    Attributes:
        start: first step of the plateau.
        end: last step of the plateau (the drop that follows starts after it).
        duration: ``end - start``.
        level: mean loss (linear scale, raw finite values) over ``start..end``.
        drop: log-loss decrease after the plateau: its median log-loss minus the
            next plateau's, or minus the fitted log-loss at the last finite point
            (0 when the run ends on this plateau).
        ended: ``drop >= min_drop``: the plateau was left through a drop. False for
            a final plateau that the run ends on.
        drop_step: when the loss has covered half of the drop *in linear scale*,
            i.e. the first step after ``end`` where the smoothed loss reaches
            ``(L_this + L_next) / 2`` (``L = exp(log level)``), linearly
            interpolated; NaN when not ended. In a two-layer linear network each
            drop is one singular mode being learned, with loss
            ``(s - u)^2 + rest``; this midpoint is ``u = (1 - 1/sqrt 2) s`` for
            every mode.
    """

    start: float
    end: float
    duration: float
    level: float
    drop: float
    ended: bool
    drop_step: float


def plateaus(steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray, *,
             min_duration: float = 0.05, flat_tol: float = 0.25, min_drop: float = 0.3,
             smooth: int = 5, floor: float = 1e-12) -> list[Plateau]:
    """Find the plateaus of one loss curve.

    See the module docstring for the method. In short: with ``y = log(max(L, floor))``
    smoothed and fitted piecewise-linearly, a plateau is a maximal stretch of
    segments with ``|dy/dt| * T / R <= flat_tol`` (``T``: the run's span in steps,
    ``R``: the fitted log-loss range), lasting ``>= min_duration * T`` steps,
    followed by a log-loss drop ``>= min_drop`` (``ended=True``), or the stretch the
    run ends on (``ended=False``).

    Args:
        steps: [T] increasing step numbers (linear, log-spaced or irregular).
        losses: [T] loss values; non-finite entries (e.g. a diverged run's NaN tail)
            are ignored.
        min_duration: shortest plateau, as a fraction of the run's span
            ``steps[-1] - steps[0]`` (default 5%).
        flat_tol: largest normalized slope ``|dy/dt| * T / R`` of a flat stretch
            (1 is the mean slope of a curve falling steadily over the whole run).
        min_drop: smallest log-loss drop that ends a plateau (0.3: the loss falls
            by 26%); also the smallest level change that separates two plateaus.
        smooth: running-median window in points applied to the log-loss (odd;
            1 disables). It removes isolated spikes and noise of batch losses.
        floor: losses are clipped at this value before taking logs.

    Returns:
        Plateaus in time order.

    Raises:
        ValueError: mismatched lengths, steps not finite and strictly increasing,
            or a non-positive ``min_duration``, ``flat_tol``, ``min_drop`` or ``floor``.
    """
    t_all = np.asarray(steps, np.float64).ravel()
    loss = np.asarray(losses, np.float64).ravel()
    if t_all.shape != loss.shape:
        raise ValueError(f"steps and losses must have the same length, got {t_all.shape} and {loss.shape}")
    for name, v in (("min_duration", min_duration), ("flat_tol", flat_tol), ("min_drop", min_drop),
                    ("floor", floor)):
        if not v > 0:
            raise ValueError(f"{name} must be > 0, got {v!r}")
    if len(t_all) < 2:
        return []
    if not np.all(np.isfinite(t_all)) or np.any(np.diff(t_all) <= 0):
        raise ValueError("steps must be finite and strictly increasing")
    span = float(t_all[-1] - t_all[0])
    ok = np.isfinite(loss)
    t, raw = t_all[ok], loss[ok]
    if len(t) < 4:
        return []
    y = np.log(np.maximum(raw, floor))
    z = _running_median(y, smooth)
    sigma = _noise(y)
    tb, zb, wb, lo_idx, hi_idx = _bin(t, z, MAX_BINS)
    n = len(tb)
    if n < 4:
        return []

    bounds, coef = _segment(tb, zb, wb, max(sigma, RESOLUTION), n_total=float(wb.sum()))
    fitted = np.concatenate([coef[k, 0] + coef[k, 1] * tb[i:j + 1] for k, (i, j) in enumerate(bounds)])
    r_eff = max(float(fitted.max() - fitted.min()), min_drop / flat_tol)
    # Flat unless significantly (2 standard errors) steeper than the threshold.
    se = []
    for i, j in bounds:
        tt, ww = tb[i:j + 1], wb[i:j + 1]
        se.append(sigma / math.sqrt(max(float(np.sum(ww * (tt - np.average(tt, weights=ww)) ** 2)), 1e-300)))
    flat = [(abs(b) - 2.0 * e) * span / r_eff <= flat_tol for (_, b), e in zip(coef, se, strict=True)]

    def f_at(k: int, i: int) -> float:  # fitted value of segment k at point i
        return float(coef[k, 0] + coef[k, 1] * tb[i])

    # Step 5: merge flat segments into stretches (lists of segment indices).
    stretches: list[list[int]] = []
    for k in range(len(bounds)):
        if not flat[k]:
            continue
        if stretches:
            last = stretches[-1][-1]
            if abs(f_at(last, bounds[last][1]) - f_at(k, bounds[k][0])) < min_drop:
                stretches[-1].append(k)
                continue
        stretches.append([k])
    # As point-index ranges [first, last] of the binned curve.
    ranges = [(bounds[s[0]][0], bounds[s[-1]][1]) for s in stretches]
    t_start = lambda i: float(t[lo_idx[i]])  # noqa: E731  first raw step in bin i
    t_end = lambda i: float(t[hi_idx[i]])  # noqa: E731  last raw step in bin i
    ranges = [r for r in ranges if t_end(r[1]) - t_start(r[0]) >= min_duration * span]
    log_level = [float(np.median(zb[a:b + 1])) for a, b in ranges]
    merged: list[tuple[int, int]] = []
    levels: list[float] = []
    for r, lv in zip(ranges, log_level, strict=True):
        if merged and abs(levels[-1] - lv) < min_drop:
            merged[-1] = (merged[-1][0], r[1])
            levels[-1] = float(np.median(zb[merged[-1][0]:r[1] + 1]))
        else:
            merged.append(r)
            levels.append(lv)

    final_log = f_at(len(bounds) - 1, n - 1)
    drops = []
    for p, ((_, b), lv) in enumerate(zip(merged, levels, strict=True)):
        if p + 1 < len(merged):
            drops.append(lv - levels[p + 1])
        elif b < n - 1:
            drops.append(lv - final_log)
        else:  # the run ends on this plateau: nothing comes after it
            drops.append(0.0)

    # Step 7: refine the edges next to a drop. A plateau lasts until the smoothed curve
    # leaves its fitted level by delta = max(min(5% of the drop, min_drop / 3), 2 noise SDs
    # of its residuals).
    zs = _running_median(zb, 3)
    resid = zb - fitted
    refined = list(merged)
    for p, (a, b) in enumerate(merged):
        r = resid[a:b + 1]
        noise = 1.4826 * float(np.median(np.abs(r - np.median(r))))
        if drops[p] >= min_drop:
            delta = max(min(0.05 * drops[p], min_drop / 3.0), 2.0 * noise)
            limit = merged[p + 1][0] - 1 if p + 1 < len(merged) else n - 1
            j = b + 1
            while j <= limit and zs[j] >= fitted[b] - delta:
                j += 1
            refined[p] = (refined[p][0], j - 1)
        if p > 0 and drops[p - 1] >= min_drop:
            delta = max(min(0.05 * drops[p - 1], min_drop / 3.0), 2.0 * noise)
            lowest = refined[p - 1][1] + 1
            j = a - 1
            while j >= lowest and zs[j] <= fitted[a] + delta:
                j -= 1
            refined[p] = (j + 1, refined[p][1])

    out = []
    for (a, b), lv, drop in zip(refined, levels, drops, strict=True):
        ended = bool(drop >= min_drop)
        start, end = t_start(a), t_end(b)
        on = (t >= start) & (t <= end)
        drop_step = math.nan
        if ended:
            target = math.log((math.exp(lv) + math.exp(lv - drop)) / 2.0)
            drop_step = _first_crossing(tb[b:], zb[b:], target)
        out.append(Plateau(start=start, end=end, duration=end - start, level=float(raw[on].mean()),
                           drop=float(drop), ended=ended, drop_step=drop_step))
    return out


def _running_median(y: np.ndarray, window: int) -> np.ndarray:
    window = int(window)
    if window <= 1 or len(y) < 3:
        return y.copy()
    window = min(window | 1, (len(y) - 1) | 1)  # odd, at most the length
    half = window // 2
    padded = np.pad(y, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def _noise(y: np.ndarray) -> float:
    """Robust noise level of ``y``: MAD of first differences, trend removed, / sqrt 2."""
    d = np.diff(y)
    if len(d) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0))


def _bin(t: np.ndarray, z: np.ndarray, max_bins: int):
    """Bin points into at most ``max_bins`` equal step bins (kept as is when fewer points).

    Returns bin times (mean step), values (median), weights (counts), and the
    first and last raw index of each bin.
    """
    n = len(t)
    if n <= max_bins:
        idx = np.arange(n)
        return t.copy(), z.copy(), np.ones(n), idx, idx
    edges = np.linspace(t[0], t[-1], max_bins + 1)
    b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, max_bins - 1)
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], n] - 1
    tb = np.array([t[s:e + 1].mean() for s, e in zip(starts, ends, strict=True)])
    zb = np.array([np.median(z[s:e + 1]) for s, e in zip(starts, ends, strict=True)])
    return tb, zb, (ends - starts + 1).astype(np.float64), starts, ends


def _segment(t: np.ndarray, z: np.ndarray, w: np.ndarray, scale: float, n_total: float):
    """Optimal piecewise-linear segmentation (segments of >= 2 points) with a BIC choice of K.

    Returns:
        bounds: [(first, last)] point indices per segment; coef: [K, 2] (intercept, slope)
        of each segment's weighted least-squares line, in the units of ``t``.
    """
    n = len(t)
    t0, tscale = t[0], max(t[-1] - t[0], 1e-12)
    u = (t - t0) / tscale

    def csum(a):
        return np.concatenate([[0.0], np.cumsum(a)])

    S0, S1, S2 = csum(w), csum(w * u), csum(w * u * u)
    Z1, Z2, TZ = csum(w * z), csum(w * z * z), csum(w * u * z)
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]

    def seg(a, b):  # sums over points a..b inclusive (broadcasting)
        return [s[b + 1] - s[a] for s in (S0, S1, S2, Z1, Z2, TZ)]

    with np.errstate(invalid="ignore", divide="ignore"):
        s0, s1, s2, z1, z2, tz = seg(i, j)
        var_u = s2 - s1 * s1 / s0
        cov = tz - s1 * z1 / s0
        var_z = z2 - z1 * z1 / s0
        sse = np.where(var_u > 1e-15, var_z - cov * cov / var_u, var_z)
    cost = np.where(j >= i + 1, np.maximum(sse, 0.0), np.inf)  # cost[i, j]: points i..j

    k_max = max(1, min(MAX_SEGMENTS, n // 2))
    best = np.full((k_max, n), np.inf)
    back = np.zeros((k_max, n), np.int64)
    best[0] = cost[0]
    # shifted[i, j] = cost[i + 1, j]: a new segment starting right after point i.
    shifted = np.full((n, n), np.inf)
    shifted[:-1] = cost[1:]
    for k in range(1, k_max):
        tot = best[k - 1][:, None] + shifted
        back[k] = np.argmin(tot, axis=0)
        best[k] = tot[back[k], np.arange(n)]
    penalty = 3.0 * math.log(max(n_total, 2.0))
    crit = best[:, n - 1] / scale ** 2 + penalty * np.arange(1, k_max + 1)
    k_best = int(np.nanargmin(np.where(np.isfinite(crit), crit, np.nan)))

    bounds = []
    end = n - 1
    for k in range(k_best, -1, -1):
        start = int(back[k, end]) + 1 if k > 0 else 0
        bounds.append((start, end))
        end = start - 1
    bounds.reverse()
    coef = np.zeros((len(bounds), 2))
    for k, (a, b) in enumerate(bounds):
        ww, uu, zz = w[a:b + 1], u[a:b + 1], z[a:b + 1]
        um = np.average(uu, weights=ww)
        zm = np.average(zz, weights=ww)
        vu = np.sum(ww * (uu - um) ** 2)
        slope_u = np.sum(ww * (uu - um) * (zz - zm)) / vu if vu > 1e-15 else 0.0
        slope = slope_u / tscale
        coef[k] = (zm - slope * ((um * tscale) + t0), slope)
    return bounds, coef


def _first_crossing(t: np.ndarray, z: np.ndarray, target: float) -> float:
    """First t where the piecewise-linear curve (t, z) falls to ``target`` (NaN if never)."""
    below = np.flatnonzero(z <= target)
    if len(below) == 0:
        return math.nan
    k = int(below[0])
    if k == 0:
        return float(t[0])
    z0, z1 = z[k - 1], z[k]
    frac = (z0 - target) / (z0 - z1) if z0 != z1 else 1.0
    return float(t[k - 1] + frac * (t[k] - t[k - 1]))
