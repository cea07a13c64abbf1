"""Built-in tasks that the spec language cannot say (random matrices), as Python factories.

Each factory takes keyword overrides and returns a checked Task via `build_task`.

* `lowrank_logits`: one softmax per row (one-hot row in, a distribution over classes out).
* `lowrank_global`: the seed experiment as first described: one softmax over *all* entries
  of an ``n x n`` target logits matrix, fitted by a whole-matrix model (`testbed.Matrix`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from testbed.core.errors import ConfigError
from testbed.tasks.build import build_task
from testbed.tasks.registry import register_task
from testbed.tasks.task import Domain, Piece, Task


def _always(raw):
    return jnp.ones(raw.shape[0], bool)


@register_task
def lowrank_logits(rows: int = 32, classes: int = 16, rank: int = 2, scale: float = 4.0,
                   holdout_every: int = 8, seed: int = 0) -> Task:
    """A target logits matrix of chosen rank over a set of rows (input: one-hot row).

    Row i's target is a distribution over ``classes`` with logits ``L[i]``, where
    ``L = U diag(s) V^T`` has ``rank`` singular values spaced from ``scale`` down to
    ``scale / rank``. Every ``holdout_every``-th row is held out as the OOD split.
    """
    if not (1 <= rank <= min(rows, classes)):
        raise ConfigError(f"lowrank_logits: rank={rank} must be in 1..min(rows, classes)={min(rows, classes)}")
    if holdout_every < 2:
        raise ConfigError(f"lowrank_logits: holdout_every={holdout_every} must be >= 2")
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(rows, rank)))
    v, _ = np.linalg.qr(rng.normal(size=(classes, rank)))
    s = np.linspace(scale, scale / rank, rank)
    logits = jnp.asarray((u * s * np.sqrt(rows)) @ v.T, jnp.float32)  # entries O(scale)

    def f(raw):
        return logits[raw[:, 0].astype(jnp.int32)]

    def held(raw):
        return jnp.mod(raw[:, 0], holdout_every) == holdout_every - 1

    return build_task(
        name="lowrank_logits",
        description=f"Rank-{rank} target logits over {rows} rows x {classes} classes: "
                    "how many plateaus does a low-rank model go through, under CE vs MSE?",
        domain=Domain("integers", (0.0,), (float(rows),), "onehot"),
        pieces=[Piece("logits", _always, f)],
        splits={"train": (lambda raw: ~held(raw), None, None), "heldout_rows": (held, None, None)},
        target="distribution",
        params=dict(rows=rows, classes=classes, rank=rank, scale=scale, holdout_every=holdout_every, seed=seed),
    )


def global_target(n: int = 16, singular_values: Sequence[float] = (16.0, 8.0), seed: int = 0) -> np.ndarray:
    """The target logits ``C = U diag(s) V^T`` ([n, n], float64), ``U, V`` with orthonormal
    columns from ``seed`` (QR of Gaussian matrices)."""
    s = np.asarray(tuple(singular_values), np.float64)
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"lowrank_global: n={n!r} must be a whole number >= 2")
    if s.ndim != 1 or not 1 <= len(s) <= n or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ConfigError(f"lowrank_global: singular_values={singular_values!r} must be 1 to n={n} numbers > 0")
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(n, len(s))))
    v, _ = np.linalg.qr(rng.normal(size=(n, len(s))))
    return (u * s) @ v.T


@register_task
def lowrank_global(n: int = 16, singular_values: Sequence[float] = (16.0, 8.0), seed: int = 0) -> Task:
    """One softmax over all ``n^2`` entries of a target logits matrix of chosen spectrum.

    The target is ``p = softmax(vec C)`` with ``C = U diag(s) V^T`` (`global_target`; its
    rank is the number of singular values; entries have RMS ``|s| / n``). Every example
    is the whole matrix: the input is a scalar ``x``, the target logits ``x vec(C)``, so
    with `testbed.Matrix` (output ``x vec(Z)``, ``Z`` of rank r) ``ce`` minimizes
    ``KL(softmax(vec C) || softmax(vec Z))`` (cross-entropy minus the entropy of p: zero at
    a perfect fit) and ``mse`` the squared error on the logits. ``train``: ``x = 1``.
    OOD ``sharper``: ``x = 2``, the same logits at inverse temperature 2, where a fit that
    matches the probabilities but not the logits (up to the shift softmax ignores) shows.
    Every batch is the same example, so a batch of 1 is full-batch gradient descent.

    Args:
        n: rows and columns of the matrix.
        singular_values: the target's singular values (its rank is their number).
        seed: seed of the singular vectors.
    """
    c = global_target(n, singular_values, seed)
    vec = jnp.asarray(c.reshape(-1), jnp.float32)

    def f(raw):
        return raw[:, :1] * vec[None, :]

    values = ", ".join(f"{x:g}" for x in singular_values)
    return build_task(
        name="lowrank_global",
        description=f"One softmax over all {n}x{n} entries of target logits with singular values ({values}): "
                    "plateaus, zero loss and bumps of a rank-r fit under CE vs MSE.",
        domain=Domain("integers", (1.0,), (3.0,), "scalar"),
        pieces=[Piece("logits", _always, f)],
        splits={"train": (lambda raw: raw[:, 0] == 1, None, None),
                "sharper": (lambda raw: raw[:, 0] == 2, None, None)},
        target="distribution",
        params=dict(n=n, rank=len(tuple(singular_values)), seed=seed,
                    **{f"s{i + 1}": float(x) for i, x in enumerate(singular_values)},
                    entry_rms=float(math.sqrt(float(np.sum(np.square(singular_values)))) / n)),
    )
