"""testbed.models.activations: relu equals jax.nn.relu in values and derivatives, without a select."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testbed.models.activations import ACTIVATIONS, relu

# Zeros (the kink, both signs) and values on either side.
X = jnp.array([[-2.0, -0.0, 0.0, 1e-30, 3.0], [0.5, -1e-30, -4.0, 2.0, -0.25]])


def _loss(act):
    return lambda x: jnp.sum(jnp.sin(3.0 * act(x)) * x)


@pytest.mark.parametrize("op", ["value", "grad", "jacfwd", "jacrev", "hessian"])
def test_relu_matches_jax_nn_relu(op):
    if op == "value":
        np.testing.assert_array_equal(np.asarray(relu(X)), np.asarray(jax.nn.relu(X)))
        return
    f = {"grad": jax.grad, "jacfwd": jax.jacfwd, "jacrev": jax.jacrev, "hessian": jax.hessian}[op]
    np.testing.assert_allclose(np.asarray(f(_loss(relu))(X)), np.asarray(f(_loss(jax.nn.relu))(X)), atol=1e-6)


def test_relu_matches_under_vmap_and_jit():
    xs = jax.random.normal(jax.random.key(0), (4, 16, 8))
    g = jax.jit(jax.vmap(jax.grad(_loss(relu))))(xs)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.vmap(jax.grad(_loss(jax.nn.relu)))(xs)), atol=1e-6)


def test_relu_backward_has_no_compare_and_select():
    """The point of the custom rule: XLA:CPU gets a multiply, not a boolean mask and a select."""
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(relu(x) ** 2)))(X))
    assert "select_n" not in jaxpr and " gt " not in jaxpr and "sign" in jaxpr
    ref = str(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(jax.nn.relu(x) ** 2)))(X))
    assert "select_n" in ref  # what it replaces (if jax.nn.relu changes, this test says so)


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_every_activation_is_differentiable_elementwise(name):
    act = ACTIVATIONS[name]
    x = jnp.linspace(-2, 2, 9)
    d = jax.vmap(jax.grad(act))(x)
    eps = 1e-3
    fd = (act(x + eps) - act(x - eps)) / (2 * eps)
    mask = np.abs(np.asarray(x)) > 2 * eps  # away from relu's kink
    np.testing.assert_allclose(np.asarray(d)[mask], np.asarray(fd)[mask], atol=2e-3)
