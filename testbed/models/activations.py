"""Hidden-layer activations, by name (a model config's ``activation``).

``relu`` is ``jax.nn.relu`` with its derivative written as arithmetic: the upstream
gradient times ``sign(relu(x))`` (1 where x > 0, else 0) instead of
``select(x > 0, g, 0)``. XLA:CPU runs an elementwise loop that builds a boolean
mask and selects about 3x slower than one that multiplies (for a [32, 256, 64]
array on one core: 273 us against 82 us, ``benchmarks/perf/relu_backward.py``;
``benchmarks/perf/profile_step.py`` shows it in a training step), and the backward
pass of every ReLU layer is one such loop.
Values, derivatives and higher derivatives equal ``jax.nn.relu``'s wherever the
inputs and gradients are finite; where they are not (a run that has already
diverged), a dead unit may pass NaN where ``jax.nn.relu`` passes 0.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp


@jax.custom_jvp
def relu(x: jax.Array) -> jax.Array:
    """``max(x, 0)``, with a derivative that needs no comparison (see the module doc)."""
    return jnp.maximum(x, 0)


@relu.defjvp
def _relu_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = relu(x)  # not jnp.maximum: its derivative at the kink is 1/2, relu's is 0 (higher orders)
    return y, dx * jnp.sign(y).astype(dx.dtype)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "square": jnp.square,  # Gromov 2023's analytic modular-addition network
}
