"""``mse``: plain regression of the model outputs onto the targets.

Scalar and vector targets: squared error (mean over output dims). Distribution
targets: squared error on the target logits. Class targets: squared error on the
one-hot label.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from testbed.methods.base import Method, register_method
from testbed.tasks.task import Batch, Task


@register_method("mse")
def mse() -> Method:
    """Plain regression (mean squared error)."""

    def loss(task: Task, out: jax.Array, batch: Batch) -> jax.Array:
        if task.target == "scalar":
            return (out[:, 0] - batch.y) ** 2
        target = jax.nn.one_hot(batch.y, task.out_dim) if task.target == "class" else batch.y
        return jnp.mean((out - target) ** 2, axis=-1)

    def predict(task: Task, out: jax.Array) -> jax.Array:
        return out[:, 0] if task.target == "scalar" else out

    return Method("mse", head_dim=lambda task: task.out_dim, loss=loss, predict=predict)
