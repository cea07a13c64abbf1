"""``deep_linear``: a linear target map with chosen singular values, for deep linear networks.

The setting of Saxe, McClelland and Ganguli 2014 ("Exact solutions to the nonlinear
dynamics of learning in deep linear neural networks", arXiv 1312.6120): whitened
inputs, a target ``y = A x`` with ``A = U diag(s) V^T``. A two-layer linear network
``y = W2 W1 x`` trained by gradient descent from small initialization learns the
singular modes one at a time, the strongest first, each along a sigmoid.

The closed form, in this library's conventions. Let the loss be
``c * E||y - W2 W1 x||^2`` with ``E[x x^T] = I`` and plain gradient descent with
learning rate ``lr``. The paper's equations,
``tau dW1/dt = W2^T (Sigma_yx - W2 W1 Sigma_xx)`` and
``tau dW2/dt = (Sigma_yx - W2 W1 Sigma_xx) W1^T``, are gradient descent on
``1/2 E||.||^2`` (c = 1/2) with ``tau = 1 / lr`` in units of steps. With loss
scale ``c`` the gradient is ``2c`` times larger, so ``tau = 1 / (2 c lr)``.
`testbed.train` with ``method="mse"`` on a vector target uses the *mean* over the
``dim_out`` output dims, ``c = 1 / dim_out``, hence::

    tau = dim_out / (2 lr).

For a mode of strength ``s`` whose network strength ``u = a . b`` starts at ``u0``
(``a = W1 v``, ``b = W2^T u_out`` the mode's input and output vectors seen in the
hidden layer; balanced and aligned after a short transient)::

    tau du/dt = 2 u (s - u),   u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0),

so the mode is half learned (u = s/2) at ``t_half = tau/(2s) ln(s/u0 - 1)``
(about ``tau/(2s) ln(s/u0)``: time scales as ``1/s``) and reaches a fraction
``f`` of ``s`` at ``t_half + tau/(2s) ln(f/(1-f))``. From a small random
initialization the early (linear) dynamics grow ``(a + b)/2`` as ``e^{st/tau}`` and
shrink ``(a - b)/2``, so the effective ``u0 = |a0 + b0|^2 / 4``. For
`testbed.DeepLinear` of width ``h`` with ``init_scale`` ``g`` (it computes
``x @ weights[0] @ weights[1]``, so ``W1 = weights[0].T`` and ``W2 = weights[1].T``;
entries of ``W1`` have variance ``g^2/dim_in``, of ``W2`` ``g^2/h``) its mean is
``g^2 (h/dim_in + 1) / 4`` (see `saxe_u0`).

Checked numerically (tests/test_plateaus.py: 8 -> 16 -> 8, s = (4, 2, 1), SGD lr
0.04, init 1e-3, batch 128): the logit of ``u/s`` grows at ``2s/tau`` within 4%
with ``tau = dim_out / (2 lr)`` (the paper's ``tau = 1/lr`` would be off by a
factor ``dim_out / 2``), and half-learned times match ``t_half`` within 3% given
each run's measured ``u0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from testbed.core.errors import ConfigError, is_count
from testbed.tasks.build import build_task
from testbed.tasks.registry import register_task
from testbed.tasks.task import Domain, Piece, Task

SQRT3 = math.sqrt(3.0)


def deep_linear_target(dim_in: int = 8, dim_out: int = 8, singular_values: Sequence[float] = (3.0, 2.0, 1.0),
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The target's factors ``U [dim_out, k]``, ``s [k]``, ``V [dim_in, k]`` (``A = U diag(s) V^T``).

    ``U`` and ``V`` have orthonormal columns drawn from the seed (QR of Gaussian
    matrices); ``s`` is ``singular_values`` as given (float64).
    """
    s = np.asarray(tuple(singular_values), np.float64)
    k = len(s)
    if s.ndim != 1 or k < 1 or not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ConfigError(f"deep_linear: singular_values must be a non-empty tuple of numbers >= 0, "
                          f"got {singular_values!r}")
    for name, v in (("dim_in", dim_in), ("dim_out", dim_out)):
        if not is_count(v):
            raise ConfigError(f"deep_linear: {name}={v!r} must be a positive integer")
    if k > min(dim_in, dim_out):
        raise ConfigError(f"deep_linear: {k} singular values need min(dim_in, dim_out) >= {k}, "
                          f"got dim_in={dim_in}, dim_out={dim_out}")
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(dim_out, k)))
    v, _ = np.linalg.qr(rng.normal(size=(dim_in, k)))
    return u, s, v


def saxe_tau(lr: float, dim_out: int) -> float:
    """Time constant in steps for `testbed.train`'s ``mse`` on a vector target: ``dim_out / (2 lr)``."""
    return dim_out / (2.0 * lr)


def saxe_u0(init_scale: float, width: int, dim_in: int) -> float:
    """Mean effective initial mode strength ``E|a0 + b0|^2 / 4 = g^2 (width/dim_in + 1) / 4``
    of a two-layer `testbed.DeepLinear` (``g`` = ``init_scale``)."""
    return init_scale ** 2 * (width / dim_in + 1.0) / 4.0


def saxe_strength(t: np.ndarray | float, s: float, u0: float, tau: float) -> np.ndarray:
    """Mode strength ``u(t) = s e^{2st/tau} / (e^{2st/tau} - 1 + s/u0)`` (t in steps)."""
    e = np.exp(2.0 * s * np.asarray(t, np.float64) / tau)
    return s * e / (e - 1.0 + s / u0)


def saxe_time(s: float, u0: float, tau: float, fraction: float = 0.5) -> float:
    """Steps until a mode of strength ``s`` reaches ``fraction * s`` from ``u0``:
    ``tau/(2s) [ln(s/u0 - 1) + ln(f/(1-f))]`` (f = 1/2: the half-learned time)."""
    return tau / (2.0 * s) * (math.log(s / u0 - 1.0) + math.log(fraction / (1.0 - fraction)))


def two_layer_descent(singular_values: Sequence[float], *, dim: int = 8, width: int = 16, lr: float | None = None,
                      init_scale: float = 1e-3, steps: int = 3000, batch: int = 0,
                      seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """A reference: gradient descent on a two-layer linear network in numpy (float64), in
    the conventions of `testbed.train` (``mse`` = mean over ``dim`` outputs, Gaussian
    whitened inputs), from a small random initialization like `testbed.DeepLinear`'s.

    Args:
        singular_values: the target's singular values (target from `deep_linear_target`, seed 0).
        dim, width: input/output dimension and hidden width.
        lr: learning rate; default ``0.1 dim / (4 max s)`` (stable: the fastest mode grows
            by 10% of its time constant per step).
        init_scale: ``g``: entries of ``W1`` have SD ``g / sqrt(dim)``, of ``W2`` ``g / sqrt(width)``.
        steps: updates.
        batch: 0 for the exact population loss and gradient; else minibatch SGD on fresh
            Gaussian inputs, recording each batch's loss (a per-update curve).
        seed: initialization (and batch) seed.

    Returns:
        (losses [steps], the closed-form drop time of each mode, `saxe_time` at
        ``u = (1 - 1/sqrt 2) s``: where the loss has covered half of the mode's drop).
    """
    rng = np.random.default_rng(seed)
    s_vals = tuple(float(x) for x in singular_values)
    u, s, v = deep_linear_target(dim, dim, s_vals, 0)
    a = (u * s) @ v.T
    lr = 0.1 * dim / (4.0 * max(s_vals)) if lr is None else float(lr)
    w1 = rng.normal(size=(width, dim)) * init_scale / math.sqrt(dim)
    w2 = rng.normal(size=(dim, width)) * init_scale / math.sqrt(width)
    losses = np.empty(steps)
    for k in range(steps):
        e = a - w2 @ w1
        if batch:
            x = rng.normal(size=(batch, dim))
            r = x @ e.T
            losses[k] = float((r ** 2).mean())
            e = r.T @ x / batch  # the error map seen through this batch's input covariance
        else:
            losses[k] = float((e ** 2).sum() / dim)
        w2, w1 = w2 + lr * (2.0 / dim) * e @ w1.T, w1 + lr * (2.0 / dim) * w2.T @ e
    tau, u0 = saxe_tau(lr, dim), saxe_u0(init_scale, width, dim)
    return losses, [saxe_time(x, u0, tau, 1.0 - 1.0 / math.sqrt(2.0)) for x in s_vals]


@register_task
def deep_linear(dim_in: int = 8, dim_out: int = 8, singular_values: Sequence[float] = (3.0, 2.0, 1.0),
                seed: int = 0) -> Task:
    """A linear map ``y = A x``, ``A = U diag(s) V^T``, on whitened inputs (Saxe et al. 2014).

    Inputs are uniform on the box ``[-sqrt 3, sqrt 3]^dim_in`` (the ``train``
    split), whose coordinates have mean 0 and variance 1, so ``E[x x^T] = I``
    (whitened) without leaving the box domains that tasks sample from (Gaussian
    inputs would need an unbounded domain). The domain is ``[-2 sqrt 3, 2 sqrt 3]``
    per coordinate and the OOD split ``extrapolate`` is the shell outside the
    training box (``max_i |x_i| > sqrt 3``), where a learned linear map should
    simply continue. ``U [dim_out, k]`` and ``V [dim_in, k]`` have orthonormal
    columns drawn from ``seed``; see `deep_linear_target`. The target is a
    ``vector`` of width ``dim_out``.

    Args:
        dim_in: input dimension.
        dim_out: output dimension.
        singular_values: the target's nonzero singular values ``s_1, s_2, ...``
            (a tuple, so that `testbed.make_task` can cache it; at most
            ``min(dim_in, dim_out)`` of them).
        seed: seed of the singular vectors.
    """
    u, s, v = deep_linear_target(dim_in, dim_out, singular_values, seed)
    a_t = jnp.asarray((u * s) @ v.T, jnp.float32).T  # [dim_in, dim_out]: y = x @ A^T

    def f(raw):
        return raw @ a_t

    def everywhere(raw):
        return jnp.ones(raw.shape[0], bool)

    def inside(raw):
        return jnp.all(jnp.abs(raw) <= SQRT3, axis=-1)

    def shell(raw):
        return ~inside(raw)

    inner = ((-SQRT3,) * dim_in, (SQRT3,) * dim_in)
    values = ", ".join(f"{x:g}" for x in s)
    return build_task(
        name="deep_linear",
        description=f"Linear map {dim_in}->{dim_out} with singular values ({values}) on whitened inputs: "
                    "a deep linear network learns one mode at a time (Saxe et al. 2014).",
        domain=Domain("box", (-2 * SQRT3,) * dim_in, (2 * SQRT3,) * dim_in),
        pieces=[Piece("linear", everywhere, f)],
        splits={"train": (inside, *inner), "extrapolate": (shell, None, None)},
        target="vector",
        params=dict(dim_in=dim_in, dim_out=dim_out, rank=len(s), seed=seed,
                    **{f"s{i + 1}": float(x) for i, x in enumerate(s)}),
    )
