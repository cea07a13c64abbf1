"""Baselines for prompt tasks, computed on the very same prompts: each predicts the query's
label from the first N in-context examples, for every N = 0..K at once, vectorized over
prompts in JAX.

* ``least_squares``: the minimum-norm least-squares fit (exact: zero error on noise-free
  linear prompts once N >= d).
* ``ridge``: ``(X^T X + lam I)^-1 X^T y`` (``lam`` 0.1).
* ``knn``: the mean label of the ``k`` = 3 nearest examples (fewer while N < 3; 0 at N = 0).
* ``averaging``: ``w = mean_j y_j x_j``; normalized error ``(d + 1) / N`` on linear prompts.
* ``one_step_gd``: one step of gradient descent from 0 with the best step size
  ``1 / (N + d + 1)``, the optimum of one linear self-attention layer (von Oswald et al.
  2023); normalized error ``(d + 1) / (N + d + 1)`` on linear prompts.
* ``lasso``: L1-regularized least squares (``lam`` 0.1, 300 ISTA steps), for sparse prompts.
* ``two_layer_net``: a two-layer ReLU net (32 hidden units) fitted to the N examples by 300
  steps of Adam (lr 0.02) from a fixed small initialization, for ``relu2`` prompts.
* ``greedy_tree``: a depth-4 tree on coordinate signs grown greedily (each node splits on the
  coordinate that lowers the squared error most; leaves predict their mean, an empty leaf its
  parent's), for ``tree`` prompts.

`baseline_predictions` gives ``{name: [n, K + 1]}``; `normalized_error` the squared error
divided by d, as in Garg et al.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from testbed.tasks.prompts import Prompts

RIDGE = 0.1
LASSO = 0.1
LASSO_STEPS = 300
KNN = 3


def _masks(k: int) -> jax.Array:
    """[K + 1, K]: row N keeps the first N examples."""
    return (jnp.arange(k)[None, :] < jnp.arange(k + 1)[:, None]).astype(jnp.float32)


def _per_n(predict: Callable, p: Prompts) -> jax.Array:
    """[n, K + 1]: ``predict(x [K, d], y [K], m [K], xq [d]) -> scalar`` for every prompt and
    every N, ``m`` keeping the first N examples."""
    masks = _masks(p.x.shape[1])
    return jax.vmap(lambda x, y, xq: jax.vmap(lambda m: predict(x, y, m, xq))(masks))(p.x, p.y, p.xq)


def _linear(fit: Callable, p: Prompts) -> jax.Array:
    """`_per_n` of a linear fit ``fit(X, y, m) -> w [d]`` on the examples kept (others zeroed)."""
    return _per_n(lambda x, y, m, xq: fit(x * m[:, None], y * m, m) @ xq, p)


def least_squares(p: Prompts) -> jax.Array:
    return _linear(lambda x, y, m: jnp.linalg.pinv(x) @ y, p)


def ridge(p: Prompts, lam: float = RIDGE) -> jax.Array:
    d = p.x.shape[2]
    return _linear(lambda x, y, m: jnp.linalg.solve(x.T @ x + lam * jnp.eye(d), x.T @ y), p)


def averaging(p: Prompts) -> jax.Array:
    return _linear(lambda x, y, m: x.T @ y / jnp.maximum(m.sum(), 1.0), p)


def one_step_gd(p: Prompts) -> jax.Array:
    d = p.x.shape[2]
    return _linear(lambda x, y, m: x.T @ y / (m.sum() + d + 1.0), p)


def lasso(p: Prompts, lam: float = LASSO, steps: int = LASSO_STEPS) -> jax.Array:
    def fit(x, y, m):
        n = jnp.maximum(m.sum(), 1.0)
        step = 1.0 / jnp.maximum(jnp.linalg.norm(x, ord=2) ** 2 / n, 1e-6)  # 1 / Lipschitz constant

        def ista(w, _):
            w = w - step * x.T @ (x @ w - y) / n
            return jnp.sign(w) * jnp.maximum(jnp.abs(w) - step * lam, 0.0), None

        return jax.lax.scan(ista, jnp.zeros(x.shape[1]), None, length=steps)[0]

    return _linear(fit, p)


def two_layer_net(p: Prompts, hidden: int = 32, steps: int = 300, lr: float = 0.02) -> jax.Array:
    import optax

    d = p.x.shape[2]
    kv, ka = jax.random.split(jax.random.key(0))
    init = (jax.random.normal(kv, (hidden, d)) / jnp.sqrt(d), jax.random.normal(ka, (hidden,)) * 0.1)
    tx = optax.adam(lr)

    def net(params, x):
        v, a = params
        return jax.nn.relu(x @ v.T) @ a * jnp.sqrt(2.0 / hidden)

    def predict(x, y, m, xq):
        def loss(params):
            return jnp.sum(m * (net(params, x) - y) ** 2) / jnp.maximum(m.sum(), 1.0)

        def step(c, _):
            params, state = c
            upd, state = tx.update(jax.grad(loss)(params), state, params)
            return (optax.apply_updates(params, upd), state), None

        params = jax.lax.scan(step, (init, tx.init(init)), None, length=steps)[0][0]
        return jnp.where(m.sum() > 0, net(params, xq[None, :])[0], 0.0)

    return _per_n(predict, p)


def greedy_tree(p: Prompts, depth: int = 4) -> jax.Array:
    def predict(x, y, m, xq):
        right = (x > 0).astype(jnp.float32)  # [K, d]: which side of each coordinate's split
        node = m  # weights of the examples in the query's node, root first
        pred = jnp.where(m.sum() > 0, jnp.sum(m * y) / jnp.maximum(m.sum(), 1.0), 0.0)
        for _ in range(depth):
            w_r = node[:, None] * right  # [K, d]
            w_l = node[:, None] * (1.0 - right)
            mu_r = (w_r * y[:, None]).sum(0) / jnp.maximum(w_r.sum(0), 1.0)
            mu_l = (w_l * y[:, None]).sum(0) / jnp.maximum(w_l.sum(0), 1.0)
            sse = ((w_r * (y[:, None] - mu_r[None, :]) ** 2).sum(0)
                   + (w_l * (y[:, None] - mu_l[None, :]) ** 2).sum(0))
            f = jnp.argmin(sse)  # the best coordinate to split this node on
            go = xq[f] > 0
            child = node * jnp.where(go, right[:, f], 1.0 - right[:, f])
            pred = jnp.where(child.sum() > 0, jnp.where(go, mu_r[f], mu_l[f]), pred)  # empty: the parent's mean
            node = jnp.where(child.sum() > 0, child, node)
        return pred

    return _per_n(predict, p)


def knn(p: Prompts, k: int = KNN) -> jax.Array:
    def predict(x, y, m, xq):
        dd = jnp.where(m > 0, jnp.sum((x - xq[None, :]) ** 2, axis=1), jnp.inf)
        idx = jnp.argsort(dd)[:k]
        ok = jnp.isfinite(dd[idx])
        return jnp.where(ok.any(), jnp.sum(jnp.where(ok, y[idx], 0.0)) / jnp.maximum(ok.sum(), 1), 0.0)

    return _per_n(predict, p)


BASELINES: dict[str, Callable[[Prompts], jax.Array]] = {
    "least_squares": least_squares, "ridge": ridge, "knn": knn, "averaging": averaging,
    "one_step_gd": one_step_gd, "lasso": lasso, "two_layer_net": two_layer_net, "greedy_tree": greedy_tree,
}


COMMON = ("least_squares", "averaging", "one_step_gd", "knn")  # computed on every class's prompts


def baselines_for(task) -> tuple[str, ...]:
    """The baselines a prompt task is measured against: the common ones and its class's own."""
    return COMMON + tuple(b for b in task.cls.baselines if b not in COMMON)


def baseline_predictions(p: Prompts, names: tuple[str, ...] | None = None) -> dict[str, jax.Array]:
    """``{baseline: [n, K + 1] predictions of the query from the first N examples}``."""
    names = tuple(BASELINES) if names is None else names
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise KeyError(f"unknown baselines {unknown}; accepted: {', '.join(BASELINES)}")
    return {n: jax.jit(BASELINES[n])(p) for n in names}


def normalized_error(pred: jax.Array, p: Prompts) -> jax.Array:
    """[n, K + 1] squared error of predictions of the query, divided by d (Garg et al.)."""
    return (pred - p.yq[:, None]) ** 2 / p.x.shape[2]
