"""Built-in tasks that the spec language cannot say (random matrices), as Python factories.

Each factory takes keyword overrides and returns a checked Task via `build_task`.
"""

from __future__ import annotations

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
