"""Loss plateaus: stalls the loss later escapes, a run stuck at the end, and bumps.

What a researcher means by a plateau is a *stall that training escapes*: the loss sits
at a level for a while, then drops to a clearly lower one, faster than it moved while
it sat. The flat tail of a run that has converged is not a plateau, and neither is
the slow end of a steady decay. This module reads one curve (`read_curve`):

* **stalls** (`Plateau`, ``ended=True``): escaped plateaus, in time order;
* **the final stretch** (`Final`): where the run ends, whether it has *converged* (its
  level is within ``zero_tol`` of the loss the run could reach, ``zero``) or is *stuck
  at the end* (flat, clearly above that level, for at least ``stuck_frac`` of the run);
* **bumps** (`Bump`): stretches where the loss rises more than ``bump`` (a fraction)
  above its running minimum and comes back.

`plateaus` returns the stalls, plus the final stretch as an ``ended=False`` plateau when
the run is stuck at the end; `testbed.analyses.plateaus.tables` applies it to stacks of
curves, histories and suites.

How a curve is read. Only point indices and *ratios* of step differences are used, so
the result is unchanged when the step axis is rescaled or shifted (``t -> a t + b``:
times scale with it), and unchanged when converged steps are appended (nothing reads
the run's length except ``stuck_frac``, which only applies to runs that have not
converged):

1. Non-finite losses are dropped. With ``L0`` the median of the first ``smooth``
   losses above ``zero``, the *floor* is ``zero_tol * L0``, and the curve read is
   ``y = log(max(loss - zero, floor))``: everything within ``zero_tol`` of zero is one
   level (converged), so float noise at 1e-14 cannot make stalls.
2. ``z``: a running median of ``y`` over ``smooth`` points (index order), which
   removes isolated spikes and the noise of per-update losses. ``g``: the least-squares
   non-increasing fit of ``z`` (isotonic regression, pool-adjacent-violators), which
   averages noise on flat stretches and absorbs bumps.
3. Bands of log-loss ``[l - h, l]``, sliding down by ``h / 4`` from the first value of
   ``g`` to its last (or the floor), with ``h = max(resolution, 2.5 s_z)``: ``s_z`` is
   the median noise of ``z`` (``1.25 sigma / sqrt(smooth)``, ``sigma`` the robust SD of
   first differences of ``y`` over 41 points, / sqrt 2). Each band's *dwell* is the time
   ``g`` takes to cross it (first passages, interpolated), taken as the largest over
   its neighbours within ``h / 2``. How fast the loss *drops* there is the time it takes
   to cross ``max(h, min_drop)`` of log-loss from the band down (after a stall) or up
   to it (before one), scaled to a band of ``h``: a drop that counts, not one thin band
   crossed between two noisy samples.
4. A stall is a band whose dwell is at least ``contrast`` (8) times the fastest drop
   between it and the next band at least as slow (a one-sided prominence), and
   likewise before it unless nothing before it is as slow (the run starts on it, or
   falls fast into it). It extends over the neighbouring bands within a factor
   3 of its dwell, lasts at least ``smooth`` points, does not bounce (its smoothed loss
   never rises more than ``max(min_drop, 2h)`` above its median), and the loss later
   falls ``min_drop`` below its level and stays there (it is escaped). Stalls closer in level
   than ``min_drop`` are one stall. A steady exponential decay (a straight line in log
   space) has the same dwell in every band and a power law a rising one: neither stalls.
5. Each stall's ``level`` is the mean raw loss on it; its ``drop`` is its median ``z``
   minus the next stall's (or the final stretch's); ``drop_step`` is when the smoothed
   loss has covered half the drop in linear scale.
6. The final stretch: after the last escape, the points whose fit is within
   ``max(h / 2, s_z)`` of the level the run ends at. Converged when that level is at
   the floor; stuck when not converged and it lasts at least ``stuck_frac`` of the run.
7. Bumps: on a wider running median (``4 smooth + 1`` points) of the log-loss floored at
   1e-6 of the initial loss (not the zero-loss floor: an optimizer's spikes after
   convergence count), an excursion above its running minimum by more than
   ``log(1 + bump)`` (plus the noise the running minimum of a noisy curve drifts by)
   that comes back below half of that.

Measured (20 seeds of 3 sigmoid drops of 1-2 log units in log space): the count is right
in every case for log-space noise SD up to 0.2 on 200 linear steps and up to 0.1 on 200
log-spaced ones (0.2: 16 of 20); per-update curves of 4,000 points with SD 0.3 need
``smooth=15`` (then 20 of 20). Two-layer linear networks (`testbed.tasks.deep_linear.
two_layer_descent`, 8 seeds each, singular values 2^k, 2 to 5 modes, init 1e-3): one
stall per mode, in order, for full-batch losses and per-update minibatch (128) losses,
drop times within 12% of the closed form of Saxe et al. 2014; 200 log-spaced evaluations
of minibatch runs miss the short stall between the two strongest modes in 1-2 of 8 runs
(400 evaluations: none). Limits: a steady decay sampled so coarsely that noise per
sample exceeds the fall per sample can show a false stall; a stall needs at least
``max(smooth, 3)`` samples; in per-update curves, the rebounds of an oscillating early
descent (Adam overshooting in its first tens of updates) can pass for short stalls:
`testbed.analyses.plateaus.figures.run_curves` shows every run with its stalls.
tests/test_plateaus.py checks these and the properties above (hypothesis);
`python benchmarks/studies/plateau_accuracy.py [log_points]` reprints the counts (7 s).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from testbed.core.columns import COMPONENTS, SWEPT
from testbed.core.errors import is_count

CONFIG_COLUMNS = (*COMPONENTS, *SWEPT)
PLATEAU_COLUMNS = ["plateau", "start", "end", "duration", "level", "drop", "ended", "drop_step"]
CONTRAST = 8.0  # a stall is this many times slower (per unit of log-loss) than the drop that ends it
EXTENT = 3.0  # a stall covers the bands whose dwell is within this factor of its slowest band
NOISE_WINDOW = 41
BUMP_WINDOW = 4  # bumps are read on a running median of BUMP_WINDOW * smooth + 1 samples
BUMP_FLOOR = 1e-6  # ... of the loss above zero, floored at this fraction of the initial loss  # points over which the local noise of the log-loss is estimated


class Plateau(NamedTuple):
    """One plateau of a loss curve (times in steps).

    Attributes:
        start: first step of the plateau.
        end: last step of the plateau (the drop that follows starts after it).
        duration: ``end - start``.
        level: mean loss (linear scale, raw finite values) over ``start..end``.
        drop: log-loss decrease after the plateau: its median smoothed log-loss minus
            the next stall's or the final stretch's (0 for a stuck final stretch).
        ended: True for a stall the loss escaped; False for the stretch a run is
            stuck on at the end.
        drop_step: when the loss has covered half of the drop *in linear scale*: the
            first step after ``end`` where the smoothed loss reaches
            ``(L_this + L_next) / 2``, linearly interpolated; NaN when not ended. In a
            two-layer linear network each drop is one singular mode being learned,
            with loss ``(s - u)^2 + rest``; this midpoint is ``u = (1 - 1/sqrt 2) s``.
    """

    start: float
    end: float
    duration: float
    level: float
    drop: float
    ended: bool
    drop_step: float


class Final(NamedTuple):
    """Where a run ends: its last flat stretch.

    Attributes:
        start: first step of the final stretch (the last step when the run ends falling).
        level: mean loss on it (raw, linear scale).
        converged: its level is within the zero-loss tolerance of ``zero``.
        stuck: not converged, flat, and lasting at least ``stuck_frac`` of the run.
    """

    start: float
    level: float
    converged: bool
    stuck: bool


class Bump(NamedTuple):
    """A stretch where the loss rose above its running minimum and came back.

    Attributes:
        start, end: steps where the smoothed loss left and came back to its running minimum band.
        height: the largest rise, as a fraction of the running minimum (0.5: 50% above it).
    """

    start: float
    end: float
    height: float


class Curve(NamedTuple):
    """Everything `read_curve` finds in one loss curve."""

    stalls: list[Plateau]
    final: Final | None
    bumps: list[Bump]
    final_step: float = math.nan  # the run's last finite step

    def plateaus(self) -> list[Plateau]:
        """The stalls, plus the final stretch (``ended=False``) when the run is stuck on it."""
        if self.final is None or not self.final.stuck:
            return list(self.stalls)
        return [*self.stalls, Plateau(self.final.start, self.final_step, self.final_step - self.final.start,
                                      self.final.level, 0.0, False, math.nan)]


def read_curve(steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray, *,
               min_drop: float = 0.3, contrast: float = CONTRAST, resolution: float = 0.1, smooth: int = 5,
               zero: float = 0.0, zero_tol: float = 1e-3, stuck_frac: float = 0.1,
               bump: float = 0.5) -> Curve:
    """Read one loss curve: its escaped stalls, its final stretch and its bumps.

    See the module docstring for the method.

    Args:
        steps: [T] increasing step numbers (linear, log-spaced or irregular).
        losses: [T] loss values; non-finite entries (a diverged run's NaN tail) are ignored.
        min_drop: smallest log-loss drop that ends a stall (0.3: the loss falls by 26%).
        contrast: how many times slower than the drop that ends it (per unit of
            log-loss) a stall is at least.
        resolution: the narrowest band of log-loss (widened for noisy curves).
        smooth: running-median window in points (odd; 1 disables).
        zero: the loss the run could reach (0 for every built-in method: CE is reported
            as a KL divergence).
        zero_tol: losses within ``zero_tol`` times the initial loss of ``zero`` count as
            zero (converged).
        stuck_frac: a final stretch above zero counts as stuck when it lasts at least
            this fraction of the run.
        bump: a bump is a rise above the running minimum by more than this fraction.

    Raises:
        ValueError: mismatched lengths, steps not finite and strictly increasing, or a
            parameter out of range (named in the message).
    """
    t_all = np.asarray(steps, np.float64).ravel()
    loss = np.asarray(losses, np.float64).ravel()
    if t_all.shape != loss.shape:
        raise ValueError(f"steps and losses must have the same length, got {t_all.shape} and {loss.shape}")
    for name, v, low in (("min_drop", min_drop, 0), ("resolution", resolution, 0), ("zero_tol", zero_tol, 0),
                         ("stuck_frac", stuck_frac, 0), ("bump", bump, 0), ("contrast", contrast, 1)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v > low):
            raise ValueError(f"{name} must be a finite number > {low}, got {v!r}")
    if not math.isfinite(zero):
        raise ValueError(f"zero must be finite, got {zero!r}")
    if isinstance(smooth, np.integer):
        smooth = int(smooth)
    if not is_count(smooth):
        raise ValueError(f"smooth must be a whole number of points >= 1, got {smooth!r}")
    if len(t_all) and (not np.all(np.isfinite(t_all)) or np.any(np.diff(t_all) <= 0)):
        raise ValueError("steps must be finite and strictly increasing")
    ok = np.isfinite(loss)
    t, raw = t_all[ok], loss[ok]
    if len(t) < 4:
        return Curve([], None, [])
    above = raw - zero
    l0 = float(np.median(above[:smooth]))
    if not l0 > 0:
        return Curve([], Final(float(t[0]), float(raw.mean()), True, False), [], float(t[-1]))
    floor = zero_tol * l0
    floor_log = math.log(floor)
    y = np.log(np.maximum(above, floor))
    z = _running_median(y, smooth)
    g = _isotonic_decreasing(z)
    sig_z = 1.25 * _local_noise(y) / math.sqrt(smooth)
    n = len(t)
    unclipped = y > floor_log
    h = max(resolution, 2.5 * float(np.median(sig_z[unclipped])) if unclipped.any() else 0.0)
    # The level the run ends at: the floor when it ends there (clipped), else the median of its
    # last points (the end of an isotonic fit overshoots down: its last value is the smallest
    # mean of a suffix, which would pass for a drop).
    end = floor_log if float(z[-1]) <= floor_log + 1e-12 else max(float(np.median(z[-(2 * smooth + 1):])),
                                                                  floor_log)
    found = _stalls(t, g, z, h, contrast, min_drop, floor_log, max(end, float(g[-1])), max(smooth, 3))
    eps = max(h / 2.0, float(sig_z[-1]))

    # The final stretch: after the last escape, the points whose fit is within eps of `end`.
    after = min(found[-1][3] if found else 0, n - 1)
    f0 = int(np.searchsorted(-g, -(end + eps), side="left"))
    f0 = min(max(f0, after), n - 1)
    z_final = float(np.median(z[f0:]))
    converged = bool(z_final <= floor_log + eps)
    span = float(t[-1] - t_all[0])
    stuck = bool(not converged and span > 0 and t[-1] - t[f0] >= stuck_frac * span)
    final = Final(float(t[f0]), float(raw[f0:].mean()), converged, stuck)

    stalls = []
    for p, (a, b, lv, _) in enumerate(found):
        nxt = found[p + 1][2] if p + 1 < len(found) else z_final
        target = math.log((math.exp(lv) + math.exp(nxt)) / 2.0)
        stalls.append(Plateau(start=float(t[a]), end=float(t[b]), duration=float(t[b] - t[a]),
                              level=float(raw[a:b + 1].mean()), drop=float(lv - nxt), ended=True,
                              drop_step=_first_crossing(t[b:], z[b:], target)))
    # Bumps on a wider running median: a rise that lasts, not the spikes of heavy-tailed batch noise.
    # They are read below the zero-loss floor too (down to BUMP_FLOOR of the initial loss): an
    # optimizer's spikes after convergence are bumps, float noise further down is not.
    wide_window = BUMP_WINDOW * smooth + 1
    yb = np.log(np.maximum(above, BUMP_FLOOR * l0))
    zb = _running_median(yb, wide_window)
    sig_b = 1.25 * _local_noise(yb) / math.sqrt(wide_window)
    rise = math.log1p(bump) + sig_b * (np.sqrt(2.0 * np.log(np.arange(n) + 2.0)) + 2.0)
    return Curve(stalls, final, _bumps(t, zb, rise), float(t[-1]))


def plateaus(steps: Sequence[float] | np.ndarray, losses: Sequence[float] | np.ndarray,
             **kwargs) -> list[Plateau]:
    """The plateaus of one loss curve: its escaped stalls (``ended=True``) and, when the run
    is stuck at the end, its final stretch (``ended=False``). A converged tail is never a
    plateau. Keyword arguments: as `read_curve`."""
    return read_curve(steps, losses, **kwargs).plateaus()


# -- internals -------------------------------------------------------------------

def _first_passage(t: np.ndarray, g: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """For a non-increasing ``g``: the first time it reaches each level (linearly interpolated
    between points; ``t[0]`` for levels above ``g[0]``, inf for levels it never reaches)."""
    k = np.searchsorted(-g, -levels, side="left")
    out = np.full(len(levels), np.inf)
    hit = k < len(g)
    kk = k[hit]
    prev = np.maximum(kk - 1, 0)
    gap = g[prev] - g[kk]
    frac = np.where(gap > 0, (g[prev] - levels[hit]) / np.where(gap > 0, gap, 1.0), 1.0)
    out[hit] = np.where(kk == 0, t[0], t[prev] + np.clip(frac, 0.0, 1.0) * (t[kk] - t[prev]))
    return out


def _stalls(t, g, z, h, contrast, min_drop, floor_log, bottom, min_points) -> list[tuple[int, int, float, int]]:
    """Stalls as (first point, last point, median z, point where the escape is complete).

    Steps 3 and 4 of the module docstring: dwell times in log-loss bands of width ``h``
    between the fit's first value and ``bottom`` (the level the run ends at), and one-sided
    prominences against the drops on either side.
    """
    neg = -g  # non-decreasing: searchsorted works on it
    step = h / 4.0
    top = float(g[0])
    m_count = int(math.floor((top - bottom - h) / step)) + 1
    if m_count < 3:
        return []
    hi = top - step * np.arange(m_count)  # band m covers [hi[m] - h, hi[m]]
    t_hi, t_lo = _first_passage(t, g, hi), _first_passage(t, g, hi - h)
    dwell = t_lo - t_hi
    # Drops are timed over a coarser band (min_drop of log-loss): how fast the loss covers a
    # drop that counts, not how fast it crosses one thin band between two noisy samples.
    wide = max(h, min_drop)
    # (Bands after a stall reach down from their top; bands before it reach up from their bottom.)
    down = np.maximum(hi - wide, bottom)  # near the ends of the curve a drop is timed over less
    up = np.minimum(hi - h + wide, top)
    fast = _first_passage(t, g, down) - t_hi
    fast_up = t_lo - _first_passage(t, g, up)
    ok = np.isfinite(dwell)
    hi, dwell, fast, fast_up = hi[ok], dwell[ok], fast[ok], fast_up[ok]
    width_down, width_up = (hi - down[ok]), (up[ok] - hi + h)
    if len(dwell) < 3:
        return []
    tiny = 1e-9 * float(t[1] - t[0])  # a dwell of zero, in log space (scales with the steps)
    # Log dwell per band, as the largest over 5 neighbouring bands (h / 2 either side): a band
    # crossed between two samples of a noisy curve must not pass for a fast drop.
    q = np.log(np.maximum(dwell, tiny))
    q = np.lib.stride_tricks.sliding_window_view(np.pad(q, 2, mode="edge"), 5).max(axis=1)
    # Drops compared per unit of log-loss (a steady decay has the same rate in every band).
    qf = np.log(np.maximum(fast, tiny) * h / np.maximum(width_down, 1e-12))
    qu = np.log(np.maximum(fast_up, tiny) * h / np.maximum(width_up, 1e-12))
    lc = math.log(contrast)
    lx = math.log(EXTENT)
    m_n = len(q)
    claimed = np.zeros(m_n, bool)
    ranges = []
    for m in np.argsort(-q, kind="stable"):
        if claimed[m]:
            continue
        # One-sided prominences: the fastest band between m and the next band at least as slow.
        r = m + 1
        while r < m_n and q[r] <= q[m]:
            r += 1
        if r == m + 1 or q[m] - qf[m + 1:r].min() < lc:
            continue  # not clearly slower than the drop after it
        left = m - 1
        while left >= 0 and q[left] < q[m]:
            left -= 1
        if left >= 0 and (left == m - 1 or q[m] - qu[left + 1:m].min() < lc):
            continue  # as slow a stretch just before it, not separated by a clear drop: part of that
        a = m  # the stall: the bands around m where the loss is still at least EXTENT times slower
        while a > 0 and q[a - 1] >= q[m] - lx and not claimed[a - 1]:
            a -= 1
        b = m
        while b + 1 < m_n and q[b + 1] >= q[m] - lx and not claimed[b + 1]:
            b += 1
        claimed[a:b + 1] = True
        ranges.append((a, b))
    stalls = []
    mid = _first_passage(t, g, hi - h / 2.0)  # when the fit crosses each band's centre
    for a, b in sorted(ranges):
        i0 = 0 if a == 0 else int(np.searchsorted(t, mid[a], side="left"))
        i1 = max(int(np.searchsorted(t, mid[b], side="right")) - 1, i0)
        if i1 - i0 + 1 < min_points:
            continue  # too few points to tell a stall from the spacing of the samples
        lv = float(np.median(z[i0:i1 + 1]))
        if float(np.max(z[i0:i1 + 1])) - lv > max(min_drop, 2.0 * h):
            continue  # the loss bounces up and down here (an oscillating descent), it does not sit still
        k = int(np.searchsorted(neg, -(lv - min_drop), side="left"))
        # Escaped only when the loss clearly stays below: the fit's end can dip by noise alone.
        # (Fewer points than that after the drop are enough when they are at the floor.)
        if k >= len(g) or np.median(z[k:k + min_points]) > lv - min_drop / 2.0 or (
                k + min_points > len(g) and z[k:].max() > floor_log + h):
            continue
        if stalls and stalls[-1][2] - lv < min_drop:  # the same level as the previous stall: one stall
            p0 = stalls[-1][0]
            lv = float(np.median(z[p0:i1 + 1]))
            stalls[-1] = (p0, i1, lv, k)
            continue
        stalls.append((i0, i1, lv, k))
    return stalls


def _running_median(y: np.ndarray, window: int) -> np.ndarray:
    window = int(window)
    if window <= 1 or len(y) < 3:
        return y.copy()
    window = min(window | 1, (len(y) - 1) | 1)  # odd, at most the length
    half = window // 2
    padded = np.pad(y, half, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)


def _local_noise(y: np.ndarray, window: int = NOISE_WINDOW) -> np.ndarray:
    """Per point: robust SD of the first differences of ``y`` around it (MAD over ``window``
    differences, trend removed), / sqrt 2: the noise of one point."""
    d = np.diff(y)
    if len(d) < 2:
        return np.zeros(len(y))
    w = min(window, len(d))
    win = np.lib.stride_tricks.sliding_window_view(d, w)  # full windows only: no padding at the edges
    mad = np.median(np.abs(win - np.median(win, axis=1, keepdims=True)), axis=1)
    at = np.clip(np.arange(len(d)) - w // 2, 0, len(win) - 1)  # the full window nearest each point
    noise = 1.4826 * mad[at] / math.sqrt(2.0)
    return np.r_[noise, noise[-1]]


def _isotonic_decreasing(z: np.ndarray) -> np.ndarray:
    """Least-squares non-increasing fit of ``z`` (pool adjacent violators, O(n))."""
    vals: list[float] = []
    counts: list[int] = []
    for v in (-z).tolist():  # non-decreasing fit of -z
        vals.append(v)
        counts.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            c = counts[-2] + counts[-1]
            vals[-2] = (vals[-2] * counts[-2] + vals[-1] * counts[-1]) / c
            counts[-2] = c
            vals.pop()
            counts.pop()
    return -np.repeat(np.asarray(vals), counts)


def _bumps(t: np.ndarray, z: np.ndarray, rise: np.ndarray) -> list[Bump]:
    """Excursions of ``z`` above its baseline by more than ``rise`` (per point) that come back
    below ``baseline + rise / 2``. The baseline is the running minimum of the curve's
    non-increasing least-squares fit: the level training had reached, not the deepest dip
    of its noise."""
    m = np.minimum.accumulate(_isotonic_decreasing(z))
    out, start = [], None
    for i in range(len(z)):
        gap = z[i] - m[i]
        if start is None:
            if gap > rise[i]:
                start = i
        elif gap <= rise[start] / 2.0:
            begin = start
            while begin > 0 and z[begin - 1] - m[begin - 1] > rise[start] / 2.0:
                begin -= 1
            # height: the peak over the lowest loss reached before the bump
            before = float(np.min(z[:begin + 1]))
            out.append(Bump(float(t[begin]), float(t[i]), float(math.expm1(float(np.max(z[begin:i + 1])) - before))))
            start = None
    return out


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
