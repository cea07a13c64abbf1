"""The Task: a piecewise function over a domain, with named splits, as a pure sampler.

A task maps inputs to targets piece by piece. Every point of the domain belongs to
exactly one piece (a region predicate plus a function). Named splits say where data
comes from: ``train`` and one or more out-of-distribution (OOD) splits (held-out
regions inside the domain, an extrapolation shell, a band around piece boundaries).

Two kinds of domain:

* ``box``: a box in R^d. Points are their own model inputs.
* ``integers``: the integer points of a box (``low`` inclusive, ``high`` exclusive),
  for tasks over sets of numbers. The model sees them through an encoding:
  ``scalar`` (value / scale), ``binary`` (bits, most significant first) or
  ``onehot`` (one block per coordinate).

Everything the user calls works on *model inputs* ``x: [n, in_dim]``; region
predicates and piece functions work on *raw points* ``[n, dim]`` (for box domains
the two coincide). ``task.sample`` is pure and jit/vmap-able; ``n`` and ``split``
are static.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from testbed.core.errors import ConfigError

TARGET_KINDS = ("scalar", "vector", "distribution", "class")
ENCODINGS = ("scalar", "binary", "onehot")
MIN_RATE = 1e-3  # below this acceptance rate a split is refused as "too small to sample"
MAX_INT_POINTS = 1 << 22  # integer domains are enumerated; beyond this they are refused

Fn = Callable[[jax.Array], jax.Array]


class Batch(NamedTuple):
    """A batch of examples.

    Attributes:
        x: [n, in_dim] float32 model inputs.
        y: targets: [n] float32 (scalar), [n, k] float32 (vector; distribution
            target logits), or [n] int32 class labels (class).
        piece: [n] int32 index of the piece each point belongs to (-1: none).
    """

    x: jax.Array
    y: jax.Array
    piece: jax.Array


@dataclass(frozen=True, eq=False)
class Piece:
    """One piece: where it applies and what it computes, both on raw points ``[n, dim]``."""

    name: str
    where: Fn  # raw [n, dim] -> bool [n]
    f: Fn  # raw [n, dim] -> [n] or [n, k]


@dataclass(frozen=True, eq=False)
class Split:
    """A named region to sample from.

    For box domains points are drawn uniformly from the box ``low..high`` and kept
    where ``where`` holds (rejection sampling with a static oversampling factor
    computed from ``rate``). For integer domains ``points`` lists every raw point
    of the split and sampling is exact.
    """

    name: str
    where: Fn  # raw [n, dim] -> bool [n]
    low: tuple[float, ...]  # sampling box (box domains)
    high: tuple[float, ...]
    rate: float  # estimated fraction of the sampling box inside the split
    points: np.ndarray | None = None  # integer domains: [m, dim] int32 raw points


@dataclass(frozen=True, eq=False)
class Domain:
    """Where the task is defined: a box, or the integer points of a box."""

    kind: str  # "box" | "integers"
    low: tuple[float, ...]  # box: inclusive bounds; integers: inclusive
    high: tuple[float, ...]  # box: inclusive bounds; integers: exclusive
    encoding: str = "scalar"  # integers only: scalar | binary | onehot
    scale: float = 1.0  # integers with scalar encoding: model input = value / scale

    @property
    def dim(self) -> int:
        return len(self.low)

    @property
    def bits(self) -> int:
        """Bits per coordinate for the binary encoding."""
        return max(1, math.ceil(math.log2(max(self.high))))

    @property
    def in_dim(self) -> int:
        """Width of the model input."""
        if self.kind == "box" or self.encoding == "scalar":
            return self.dim
        if self.encoding == "binary":
            return self.dim * self.bits
        return int(sum(h - lo for lo, h in zip(self.low, self.high, strict=True)))

    def encode(self, raw: jax.Array) -> jax.Array:
        """Raw points [n, dim] -> model inputs [n, in_dim] float32."""
        raw = jnp.asarray(raw)
        if self.kind == "box":
            return raw.astype(jnp.float32)
        if self.encoding == "scalar":
            return raw.astype(jnp.float32) / self.scale
        ints = jnp.round(raw).astype(jnp.int32)
        if self.encoding == "binary":
            shifts = jnp.arange(self.bits - 1, -1, -1, dtype=jnp.int32)
            bits = (ints[..., :, None] >> shifts[None, None, :]) & 1
            return bits.reshape(*ints.shape[:-1], -1).astype(jnp.float32)
        blocks = [jax.nn.one_hot(ints[..., i] - int(lo), int(h - lo), dtype=jnp.float32)
                  for i, (lo, h) in enumerate(zip(self.low, self.high, strict=True))]
        return jnp.concatenate(blocks, axis=-1)

    def decode(self, x: jax.Array) -> jax.Array:
        """Model inputs [n, in_dim] -> raw points [n, dim] (float32)."""
        x = jnp.asarray(x, jnp.float32)
        if self.kind == "box":
            return x
        if self.encoding == "scalar":
            return jnp.round(x * self.scale)
        if self.encoding == "binary":
            weights = 2.0 ** jnp.arange(self.bits - 1, -1, -1, dtype=jnp.float32)
            bits = x.reshape(*x.shape[:-1], self.dim, self.bits)
            return jnp.round(bits) @ weights
        cols, start = [], 0
        for lo, h in zip(self.low, self.high, strict=True):
            width = int(h - lo)
            cols.append(jnp.argmax(x[..., start:start + width], axis=-1) + lo)
            start += width
        return jnp.stack(cols, axis=-1).astype(jnp.float32)

    def all_points(self) -> np.ndarray:
        """Every raw point of an integer domain, [m, dim] int32 (row-major order)."""
        axes = [np.arange(int(lo), int(h)) for lo, h in zip(self.low, self.high, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.int32)


@dataclass(frozen=True, eq=False)
class Task:
    """A piecewise function task with named splits. Build with `make_task` or `load_task`.

    Tasks are immutable and hashed by identity, so a task object can be closed
    over by a compiled program; `make_task` returns the same object for the same
    name and overrides.
    """

    name: str
    description: str
    domain: Domain
    piece_specs: tuple[Piece, ...]
    split_specs: tuple[Split, ...]
    target: str  # scalar | vector | distribution | class
    out_dim: int  # 1 for scalar; k for vector, distribution and class targets
    candidate_fns: tuple[tuple[str, Fn], ...] = ()  # named alternative behaviours
    params: Mapping[str, float] = field(default_factory=dict)  # the spec's constants
    source: str = "python"  # spec file path, or "python"

    # -- names -----------------------------------------------------------------
    @property
    def pieces(self) -> tuple[str, ...]:
        """Piece names, in order (index = ``Batch.piece``)."""
        return tuple(p.name for p in self.piece_specs)

    @property
    def splits(self) -> tuple[str, ...]:
        """Split names; ``train`` first, then the OOD splits."""
        return tuple(s.name for s in self.split_specs)

    @property
    def ood_splits(self) -> tuple[str, ...]:
        return tuple(s for s in self.splits if s != "train")

    @property
    def candidates(self) -> tuple[str, ...]:
        """Names of the candidate functions (e.g. a proxy) for OOD attribution."""
        return tuple(n for n, _ in self.candidate_fns)

    @property
    def dim(self) -> int:
        """Dimension of raw points."""
        return self.domain.dim

    @property
    def in_dim(self) -> int:
        """Width of the model input."""
        return self.domain.in_dim

    def split(self, name: str) -> Split:
        for s in self.split_specs:
            if s.name == name:
                return s
        raise ConfigError(f"task {self.name!r} has no split {name!r}; splits: {', '.join(self.splits)}")

    # -- ground truth ----------------------------------------------------------
    def piece_of_raw(self, raw: jax.Array) -> jax.Array:
        """Index of the first piece whose region holds each raw point, [n] int32 (-1: none)."""
        masks = jnp.stack([p.where(raw) for p in self.piece_specs], axis=0)
        first = jnp.argmax(masks, axis=0).astype(jnp.int32)
        return jnp.where(masks.any(axis=0), first, -1)

    def target_of_raw(self, raw: jax.Array, piece: jax.Array | None = None) -> jax.Array:
        """Targets at raw points (NaN, or class -1, where no piece applies)."""
        piece = self.piece_of_raw(raw) if piece is None else piece
        outs = [p.f(raw) for p in self.piece_specs]
        outs = jnp.stack([jnp.broadcast_to(o, outs[0].shape) for o in outs], axis=0)
        idx = jnp.clip(piece, 0, len(self.piece_specs) - 1)
        picked = jnp.take_along_axis(outs, idx.reshape((1, -1) + (1,) * (outs.ndim - 2)), axis=0)[0]
        if self.target == "class":
            return jnp.where(piece >= 0, jnp.round(picked).astype(jnp.int32), -1)
        valid = (piece >= 0).reshape((-1,) + (1,) * (picked.ndim - 1))
        return jnp.where(valid, picked.astype(jnp.float32), jnp.nan)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Ground truth at model inputs ``x: [n, in_dim]``, inside or outside the training region."""
        return self.target_of_raw(self.domain.decode(x))

    def piece_of(self, x: jax.Array) -> jax.Array:
        """Piece index [n] of model inputs ``x: [n, in_dim]``."""
        return self.piece_of_raw(self.domain.decode(x))

    def candidate(self, name: str, x: jax.Array) -> jax.Array:
        """A named candidate behaviour evaluated at model inputs ``x: [n, in_dim]``."""
        for n, fn in self.candidate_fns:
            if n == name:
                return fn(self.domain.decode(x))
        raise ConfigError(f"task {self.name!r} has no candidate {name!r}; candidates: {self.candidates}")

    # -- sampling --------------------------------------------------------------
    def sample(self, key: jax.Array, n: int, split: str = "train") -> Batch:
        """Draw ``n`` points uniformly from a split, with their targets and pieces.

        Pure and deterministic per key; ``n`` and ``split`` must be static under jit.

        Args:
            key: a PRNG key.
            n: number of points.
            split: split name (see ``task.splits``).

        Returns:
            Batch(x: [n, in_dim], y: [n] or [n, k], piece: [n]).
        """
        self.split(split)  # a clear error for unknown names, before tracing
        return self._jitted[0](key, n, split)

    def sample_raw(self, key: jax.Array, n: int, split: str = "train") -> jax.Array:
        """Raw points [n, dim] drawn uniformly from a split."""
        self.split(split)
        return self._jitted[1](key, n, split)

    @functools.cached_property
    def _jitted(self):
        # One compiled program per (n, split) instead of dozens of eager op
        # dispatches; inside an outer jit these calls are simply inlined.
        return (jax.jit(self._sample, static_argnums=(1, 2)), jax.jit(self._sample_raw, static_argnums=(1, 2)))

    def _sample(self, key: jax.Array, n: int, split: str) -> Batch:
        raw = self._sample_raw(key, n, split)
        piece = self.piece_of_raw(raw)
        return Batch(self.domain.encode(raw), self.target_of_raw(raw, piece), piece)

    def _sample_raw(self, key: jax.Array, n: int, split: str) -> jax.Array:
        s = self.split(split)
        if s.points is not None:
            return jnp.asarray(s.points, jnp.float32)[draw_indices(key, n, s.points.shape[0])]
        # q floor 3/20000 (rule of three on the check sample): a rate estimated as 1 may be 0.9998
        m = candidates_needed(n, s.rate, rate_floor=1.5e-4)
        low, high = jnp.asarray(s.low, jnp.float32), jnp.asarray(s.high, jnp.float32)
        cand = jax.random.uniform(key, (m, self.dim), jnp.float32, low[None, :], high[None, :])
        ok = s.where(cand)
        out, count = first_accepted(cand, ok, n)
        # Reuse accepted points in the (astronomically rare, see candidates_needed)
        # case of a shortfall, so a batch never holds a point outside its split. With
        # none accepted at all there is no such point: the first candidates (inside the
        # sampling box) stand in rather than the buffer's zeros.
        j = jnp.arange(n)
        reused = jnp.where(count > 0, out[j % jnp.maximum(count, 1)], cand[j % m])
        return jnp.where((j < count)[:, None], out, reused)

    def grid(self, points: int = 4096) -> jax.Array:
        """A fixed set of about ``points`` model inputs spread over the domain [m, in_dim].

        A regular grid for 1-D and 2-D boxes, every point of small integer domains
        (else an even stride through them), fixed quasi-random points otherwise.
        Used as the probe set for prediction trajectories and for checks.
        """
        return self.domain.encode(jnp.asarray(raw_grid(self.domain, points), jnp.float32))


def raw_grid(domain: Domain, points: int) -> np.ndarray:
    """Raw points [m, dim] spread over a domain (see `Task.grid`)."""
    if domain.kind == "integers":
        allp = domain.all_points()
        if len(allp) > points:
            allp = allp[np.linspace(0, len(allp) - 1, points).round().astype(int)]
        return allp.astype(np.float32)
    d = domain.dim
    low, high = np.asarray(domain.low), np.asarray(domain.high)
    if d <= 2:
        per = max(2, int(round(points ** (1 / d))))
        axes = [np.linspace(lo, h, per) for lo, h in zip(low, high, strict=True)]
        mesh = np.meshgrid(*axes, indexing="ij")
        return np.stack([m.ravel() for m in mesh], axis=-1).astype(np.float32)
    u = np.random.default_rng(0).random((points, d))
    return (low + u * (high - low)).astype(np.float32)


def draw_indices(key: jax.Array, n: int, m: int) -> jax.Array:
    """``jax.random.randint(key, (n,), 0, m)`` [n] int32, the same numbers, written so that
    XLA:CPU compiles a gather at them quickly.

    XLA:CPU fuses the code computing gather indices into the gather. With the random bits as
    straight-line code (`testbed.core.platform.unrolled_threefry`) and a power-of-two ``m``,
    its gather emitter then takes ~3 s: one draw of 128 of ``parity``'s 256 training points
    compiled in 2.5-3.1 s against 0.2-0.3 s for 255 or 257 points, and the task's CE target
    range took 4.5 s (`benchmarks/perf/gather_compile.py`). A reduction is not fused into a
    gather, so for those ``m`` the indices go through one (their maximum with zeros: the
    indices themselves); for the others it would only add work (0.2-0.3 s more to compile).
    """
    idx = jax.random.randint(key, (n,), 0, m)
    if m & (m - 1):  # not a power of two
        return idx
    return jnp.max(jnp.stack([idx, jnp.zeros_like(idx)]), axis=0)


SEARCH_FROM = 1024  # candidates from which `first_accepted` searches instead of scattering


def first_accepted(cand: jax.Array, ok: jax.Array, n: int, how: str | None = None) -> tuple[jax.Array, jax.Array]:
    """The first ``n`` rows of ``cand`` [m, d] where ``ok`` [m] holds, in order, and how many
    rows hold (rows past that count are not defined); ``how``: ``scatter`` or ``search``,
    by default chosen by m (`SEARCH_FROM`). Both give the same rows: ranks are exact
    integer counts.

    ``scatter``: a running count ranks the accepted rows and one scatter places each at
    its rank (the rest are dropped). A running count and one scatter are about 1.6x faster
    on XLA:CPU than jnp.nonzero plus a gather (benchmarks/perf/sample_speed.py); jnp.cumsum
    (one reduce-window) compiles 0.2-0.3 s faster per draw than an associative scan (same
    benchmark), which took ~10% off compiling the default suite's training programs.
    ``search``: a binary search of the running count finds the row of each rank, then one
    gather of n rows. XLA:CPU's scatter loops over all m rows, so for a split that keeps
    ~10% of its box (m ~2,600 for n = 128) the search draws a batch ~45% faster (567 ms
    against 309 ms for 2 x 2,000 draws of proxy_correlated's training split on this
    machine, 2026-12-02), and ~2x slower for m of a few hundred.
    """
    m = cand.shape[0]
    how = how or ("search" if m >= SEARCH_FROM else "scatter")
    if how == "scatter":
        rank = jnp.cumsum(ok.astype(jnp.int32)) - 1
        slot = jnp.where(ok & (rank < n), rank, n)
        return jnp.zeros((n, cand.shape[1]), cand.dtype).at[slot].set(cand, mode="drop"), rank[-1] + 1
    if how != "search":
        raise ValueError(f"first_accepted: unknown how {how!r}; accepted: scatter, search")
    held = jnp.cumsum(ok.astype(jnp.int32))  # rows held up to and including each row
    row = jnp.searchsorted(held, jnp.arange(1, n + 1, dtype=jnp.int32), side="left", method="scan")
    return cand[jnp.minimum(row, m - 1)], held[-1]


def candidates_needed(n: int, rate: float, rate_floor: float = 0.0) -> int:
    """Candidates to draw so that fewer than ``n`` land in a split of acceptance ``rate``
    with negligible probability: the smallest m with ``m p - 7 sqrt(m p q) >= n`` (a
    7-sigma margin on the binomial count), ``q = max(1 - p, rate_floor)``.

    For a split that fills its sampling box (p near 1) this is barely more than n.
    """
    p = rate
    q = max(1.0 - p, rate_floor)
    root = (7.0 * math.sqrt(p * q) + math.sqrt(49.0 * p * q + 4.0 * p * n)) / (2.0 * p)
    return int(math.ceil(root * root)) + 8
