"""Method-independent errors of predictions against targets, per example.

Methods have their own losses (MSE, cross-entropy, rewards); these metrics make
methods comparable: the same yardstick for every method on a task.

* scalar and vector targets: ``mse`` (squared error, mean over output dims);
* distribution targets: ``kl`` = KL(target || softmax(predicted logits));
* class targets: ``error`` (argmax wrong) and ``xent`` (cross-entropy of the label).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from testbed.core.columns import METRICS
from testbed.tasks.task import Task


def metric_names(task: Task) -> tuple[str, ...]:
    """The task metrics recorded for a task, by target kind."""
    return METRICS[task.target]


def task_metrics(task: Task, pred: jax.Array, y: jax.Array) -> dict[str, jax.Array]:
    """Per-example metrics [n] of predictions (see `Method.predict`) against targets."""
    if task.target == "scalar":
        return {"mse": (pred - y) ** 2}
    if task.target == "vector":
        return {"mse": jnp.mean((pred - y) ** 2, axis=-1)}
    if task.target == "distribution":
        return {"kl": kl_from_logits(y, pred)}
    logp = jax.nn.log_softmax(pred, axis=-1)
    label = jnp.clip(y, 0, pred.shape[-1] - 1)
    return {"error": (jnp.argmax(pred, axis=-1) != y).astype(jnp.float32),
            "xent": -jnp.take_along_axis(logp, label[:, None], axis=-1)[:, 0]}


def kl_from_logits(target_logits: jax.Array, logits: jax.Array) -> jax.Array:
    """KL(softmax(target) || softmax(logits)) per row: cross-entropy minus target entropy,
    so a perfect fit is exactly zero. [n, K] x [n, K] -> [n]."""
    logp_t = jax.nn.log_softmax(target_logits, axis=-1)
    logp = jax.nn.log_softmax(logits, axis=-1)
    # KL >= 0; rounding can make a perfect fit read -1e-9, which breaks log axes and ratios.
    return jnp.maximum(jnp.sum(jnp.exp(logp_t) * (logp_t - logp), axis=-1), 0.0)
