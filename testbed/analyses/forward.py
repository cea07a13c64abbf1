"""A trained run's forward pass with its hidden activations and an intervention, for the
analyses that look inside a model (routing's ablations, steering, capacity).

`forward` goes through the method's own forward (so methods that add inputs, e.g. the
myopic epoch index, work), with the models' hidden-layer hook (`testbed.models.modules`):
``intervene(i, h) -> new h | None`` is called on hidden layer i's activations after its
nonlinearity; ``hidden`` holds every layer's activations before the intervention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from testbed.core.errors import ConfigError
from testbed.methods.base import Ctx, Method
from testbed.tasks.task import Task


def forward(task: Task, judge: Method, graphdef, params, batch, ctx: Ctx, intervene=None):
    """(outputs, hidden activations per layer) of one run."""
    hidden: list = []

    def hook(i, h):
        hidden.append(h)
        return intervene(i, h) if intervene is not None else None

    def apply(p, x, **kw):
        return nnx.merge(graphdef, p)(x, ablate=hook, **kw)

    return judge.outputs(task, apply, params, batch, ctx), hidden


def final_ctx(result_or_steps) -> Ctx:
    """The context of a run's final evaluation (its step count), from a RunResult or an int."""
    steps = result_or_steps if isinstance(result_or_steps, int) else int(result_or_steps.config.get("steps", 1))
    return Ctx(jnp.int32(steps), steps)


def piece_inputs(task: Task, piece: int, n: int, key: int = 3):
    """``n`` train-split inputs of one piece (drawn with rejection from the train split), as a Batch."""
    got, draws, k = [], 0, jax.random.key(key)
    need = n
    while need > 0:
        b = task.sample(jax.random.fold_in(k, draws), max(4 * n, 256), "train")
        keep = np.flatnonzero(np.asarray(b.piece) == piece)[:need]
        got.append(jax.tree.map(lambda a, keep=keep: np.asarray(a)[keep], b))
        need -= len(keep)
        draws += 1
        if draws > 50:
            raise ConfigError(f"piece {task.pieces[piece]!r} of {task.name!r} is too rare in the train split")
    return jax.tree.map(lambda *a: jnp.asarray(np.concatenate(a)), *got)
