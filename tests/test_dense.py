"""testbed.models.dense: same values and derivatives as the plain products, fast form where claimed."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from testbed.models.dense import MIN_COLUMNS, Linear, dense, matmul


def plain(x, w, b):
    return x @ w + b.reshape((1,) * (x.ndim - 1) + b.shape)

# (x shape, w shape): fast form (n >= MIN_COLUMNS), thin heads, a single input, extra batch axes.
SHAPES = [((7, 5), (5, 16)), ((3, 4, 5), (5, 24)), ((9, 1), (1, 32)), ((6, 20), (20, 1)), ((5,), (5, 16))]


def _inputs(xs, ws):
    k = jax.random.split(jax.random.key(0), 3)
    return (jax.random.normal(k[0], xs), jax.random.normal(k[1], ws), jax.random.normal(k[2], ws[1:]))


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("xs,ws", SHAPES)
@pytest.mark.parametrize("derivative", ["value", "grad", "jacfwd", "hessian"])
def test_dense_matches_plain(xs, ws, derivative):
    x, w, b = _inputs(xs, ws)
    ours = lambda x, w, b: jnp.sum(jnp.tanh(dense(x, w, b)) ** 2)  # noqa: E731
    ref = lambda x, w, b: jnp.sum(jnp.tanh(plain(x, w, b)) ** 2)  # noqa: E731
    if derivative == "value":
        _close(dense(x, w, b), plain(x, w, b))
        return
    op = {"grad": jax.grad, "jacfwd": jax.jacfwd, "hessian": jax.hessian}[derivative]
    both = jax.jit(lambda *a: [(op(ours, argnums=i)(*a), op(ref, argnums=i)(*a)) for i in range(3)])
    for got, want in both(x, w, b):  # one program per case: eager dispatch is the slow part
        _close(got, want)


@pytest.mark.parametrize("xs,ws", SHAPES)
def test_matmul_matches_plain(xs, ws):
    x, w, _ = _inputs(xs, ws)
    ours = lambda x, w: jnp.sum(jnp.sin(matmul(x, w)))  # noqa: E731
    ref = lambda x, w: jnp.sum(jnp.sin(x @ w))  # noqa: E731
    _close(matmul(x, w), x @ w)
    both = jax.jit(lambda *a: [(op(ours, argnums=i)(*a), op(ref, argnums=i)(*a))
                               for op in (jax.grad, jax.jacfwd) for i in range(2)])
    for got, want in both(x, w):
        _close(got, want)


@pytest.mark.parametrize("stopped", [0, 1, 2])
def test_partial_derivatives_under_vmap(stopped):
    """Seeds vmapped, one argument held fixed (stop_gradient): gradients match the plain form."""
    x, w, b = _inputs((4, 8, 6), (6, 16))
    ws, bs = jnp.stack([w, 2 * w, -w, w]), jnp.stack([b, b, 0 * b, -b])

    def held(f):
        def loss(*args):
            args = [jax.lax.stop_gradient(a) if i == stopped else a for i, a in enumerate(args)]
            return jnp.sum(f(*args) ** 3)
        return jax.vmap(jax.grad(loss, argnums=(0, 1, 2)))

    got, want = held(dense)(x, ws, bs), held(plain)(x, ws, bs)
    for a, c in zip(got, want, strict=True):
        _close(a, c)
    assert not np.any(np.asarray(got[stopped]))


def _has_barrier(f, *args) -> bool:
    return "optimization_barrier" in str(jax.make_jaxpr(f)(*args))


@pytest.mark.parametrize("n,fast", [(MIN_COLUMNS, True), (64, True), (MIN_COLUMNS - 1, False), (1, False)])
def test_fast_form_only_where_it_pays(n, fast):
    """The transposed copy is made for products with at least MIN_COLUMNS outputs, on CPU."""
    x, w, b = _inputs((8, 12), (12, n))
    loss = lambda w, b: jnp.sum(dense(x, w, b) ** 2)  # noqa: E731
    assert _has_barrier(jax.grad(loss, argnums=(0, 1)), w, b) == (fast and jax.default_backend() == "cpu")
    assert not _has_barrier(lambda w, b: dense(x, w, b), w, b)  # the forward pass is untouched


def test_linear_is_nnx_linear():
    """Same parameters and init as nnx.Linear, same outputs and parameter gradients."""
    ours, ref = Linear(6, 32, rngs=nnx.Rngs(3)), nnx.Linear(6, 32, rngs=nnx.Rngs(3))
    assert jax.tree.structure(nnx.state(ours)) == jax.tree.structure(nnx.state(ref))
    _close(ours.kernel[...], ref.kernel[...])
    x = jax.random.normal(jax.random.key(1), (10, 6))

    def grads(m):
        g, s = nnx.split(m)
        return jax.jit(jax.grad(lambda s: jnp.sum(jnp.tanh(nnx.merge(g, s)(x)) ** 2)))(s)

    _close(ours(x), ref(x))
    for a, c in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(ref)), strict=True):
        _close(a, c)


def test_linear_options_fall_back():
    """No bias, an explicit precision, or bfloat16 compute still computes the plain product."""
    x = jax.random.normal(jax.random.key(1), (10, 6))
    assert not _has_barrier(jax.grad(lambda w: jnp.sum(dense(x.astype(jnp.bfloat16), w, w[0]) ** 2)),
                            jnp.ones((6, 32), jnp.bfloat16))
    for kw in ({"use_bias": False}, {"precision": jax.lax.Precision.HIGHEST}, {"dtype": jnp.bfloat16}):
        ours, ref = Linear(6, 32, rngs=nnx.Rngs(3), **kw), nnx.Linear(6, 32, rngs=nnx.Rngs(3), **kw)
        _close(ours(x), ref(x))


def test_wider_bias_promotes_like_the_plain_form():
    """A float64 bias on float32 x and w (x64 on) gives float64 outputs and gradients, as x @ w + b does."""
    with jax.enable_x64(True):
        x, w = jnp.ones((8, 5), jnp.float32), jnp.ones((5, 16), jnp.float32)
        b = jnp.zeros(16, jnp.float64)
        for i in range(3):
            got = jax.grad(lambda *a: jnp.sum(dense(*a) ** 2), argnums=i)(x, w, b)
            want = jax.grad(lambda *a: jnp.sum(plain(*a) ** 2), argnums=i)(x, w, b)
            assert got.dtype == want.dtype
            _close(got, want)
