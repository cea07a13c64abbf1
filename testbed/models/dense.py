"""Dense products whose reverse pass XLA:CPU runs on its fast matmul path.

Autodiff of ``y = x @ w + b`` gives the weight gradient ``dw = x.T @ g``: a product
that contracts the batch axis, the *major* axis of both ``x`` and ``g``. XLA:CPU
hands matmuls whose left operand contracts its minor axis to its fast library
(YNNPACK); this one it leaves to a slower Eigen path, and the bias gradient
``db = sum(g)`` is one more pass over ``g``. In the speed benchmark's model (MLP
1-64-64-1, batch 256, 32 seeds per core) the slow product alone took as long as the
other two 64x64 products together.

``dense``/``matmul`` give the same values and derivatives with a JVP rule that
writes the parameter term as ``xa.T @ [dw; db]``, where ``xa = [x, 1].T`` is
materialized (an optimization barrier keeps XLA from folding the transpose back
into the product). Transposed for the reverse pass this is ``[dw; db] = xa @ g``:
one product whose left operand contracts its minor axis, bias gradient included.
The copy costs one pass over the activations; training the benchmark model runs
about 20% faster (``benchmarks/perf/xla_ceiling.py`` measures both forms).

A ``custom_jvp`` (not ``custom_vjp``), so forward mode (``jax.jvp``, ``jacfwd``,
Hessians) keeps working. Thin products (fewer than ``MIN_COLUMNS`` outputs, e.g. a
scalar head), other dtypes than float32, and other backends (GPU matmul libraries
take any layout) get the plain form. ``Linear`` is ``nnx.Linear`` computed this way (same parameters).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.custom_derivatives import SymbolicZero

# Below this many output columns the weight gradient is a thin, matrix-vector-like
# product and the copy costs more than it saves (measured for a 64->1 head: 0.78 ms
# of copy per step for 32 seeds against about 0.07 ms for the product itself).
MIN_COLUMNS = 16


def _rows_t(x: jax.Array, ones: bool) -> jax.Array:
    """``x`` [..., k] as a materialized [k (+1), rows] array: rows minor, an optional row of ones."""
    x2 = x.reshape(-1, x.shape[-1])
    if ones:
        x2 = jnp.concatenate([x2, jnp.ones((x2.shape[0], 1), x2.dtype)], axis=1)
    return jax.lax.optimization_barrier(x2.T)


def _t_dot(xt: jax.Array, d: jax.Array, shape) -> jax.Array:
    """``xt.T @ d`` reshaped to ``shape``."""
    return jax.lax.dot_general(xt, d, (((0,), (0,)), ((), ()))).reshape(shape)


def _add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    return y + b.reshape((1,) * (y.ndim - 1) + b.shape)  # explicit rank: no implicit promotion


@jax.custom_jvp
def _dense_t(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    return _add_bias(x @ w, b)


def _dense_t_jvp(primals, tangents):
    x, w, b = primals
    dx, dw, db = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    y = _add_bias(x @ w, b)
    dy = jnp.zeros_like(y) if dx is None else dx @ w
    if dw is not None:
        stacked = dw if db is None else jnp.concatenate([dw, db[None, :]], axis=0)
        dy = dy + _t_dot(_rows_t(x, ones=db is not None), stacked, y.shape)
    elif db is not None:
        dy = _add_bias(dy, db)
    return y, dy


_dense_t.defjvp(_dense_t_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _matmul_t(x: jax.Array, w: jax.Array) -> jax.Array:
    return x @ w


def _matmul_t_jvp(primals, tangents):
    x, w = primals
    dx, dw = (None if isinstance(t, SymbolicZero) else t for t in tangents)
    y = x @ w
    dy = jnp.zeros_like(y) if dx is None else dx @ w
    if dw is not None:
        dy = dy + _t_dot(_rows_t(x, ones=False), dw, y.shape)
    return y, dy


_matmul_t.defjvp(_matmul_t_jvp, symbolic_zeros=True)


def _fast(x: jax.Array, w: jax.Array) -> bool:
    """float32 products with enough output columns, on CPU (where it was measured; in
    bfloat16 the fused bias gradient would round differently from a plain sum)."""
    return (w.ndim == 2 and w.shape[1] >= MIN_COLUMNS and x.dtype == w.dtype == jnp.float32
            and jax.default_backend() == "cpu")


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for ``x`` [..., k] and a matrix ``w`` [k, n] (see the module doc)."""
    return _matmul_t(x, w) if _fast(x, w) else x @ w


def dense(x: jax.Array, w: jax.Array, b: jax.Array | None = None) -> jax.Array:
    """``x @ w + b`` for ``x`` [..., k], ``w`` [k, n], ``b`` [n] or None (see the module doc)."""
    if b is None:
        return matmul(x, w)
    fast = _fast(x, w) and b.shape == (w.shape[1],) and b.dtype == w.dtype  # a wider bias promotes y
    return _dense_t(x, w, b) if fast else _add_bias(x @ w, b)


class Linear(nnx.Linear):
    """``nnx.Linear`` (same parameters, same init) computed with ``dense``.

    Options that change the product itself (``dot_general``, ``precision``, a
    ``preferred_element_type``) keep ``nnx.Linear``'s own computation.
    """

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        custom = (self.dot_general is not jax.lax.dot_general or self.precision is not None
                  or self.preferred_element_type is not None or out_sharding is not None)
        if custom:
            return super().__call__(inputs, out_sharding=out_sharding)
        bias = self.bias[...] if self.bias is not None else None
        inputs, kernel, bias = self.promote_dtype((inputs, self.kernel[...], bias), dtype=self.dtype)
        return dense(inputs, kernel, bias)
