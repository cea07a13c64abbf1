"""Prompt tasks: in-context learning of a function class (Garg, Tsipras, Liang & Valiant 2022).

Each example is a *prompt*: ``K`` pairs ``(x_j, f(x_j))`` with a fresh ``f`` drawn from a
function class, and a query ``x_q`` whose ``f(x_q)`` a model must predict from the prompt
alone. `PromptTask.sample` draws them (unlimited, seeded, in JAX); named OOD *shifts*
change how the inputs, the query or the labels are drawn, as in the paper.

Function classes (`register_function_class`; `list_function_classes`):

* ``linear``: ``f(x) = w . x``, ``w ~ N(0, I_d)``.
* ``sparse_linear``: the same with only ``sparsity`` random coordinates of ``w`` nonzero.
* ``relu2``: a two-layer ReLU net, ``sqrt(2 / h) sum_i a_i relu(v_i . x)``, ``v_i ~ N(0, I_d)``,
  ``a_i ~ N(0, 1)`` (so ``E f^2 = d``, as for ``linear``).
* ``tree``: a depth-``depth`` decision tree on the signs of random coordinates, leaf values
  ``N(0, 1)``.
* ``piecewise_linear``: the testbed's piecewise idea inside one prompt: one linear map for
  ``x_0 < 0`` and another for ``x_0 >= 0`` (pieces ``negative``, ``positive``).

Shifts (`SHIFTS`): ``none``; ``scale_<c>`` (every input times c: 0.33, 0.5, 2, 3);
``skewed`` (inputs from ``N(0, S)``, eigenvalues of ``S`` proportional to ``1/i^2``,
trace d, a random rotation per prompt); ``orthogonal`` (the prompt's inputs in a random
``d/2``-dimensional subspace, the query in its orthogonal complement); ``half_space``
(the prompt from one side of a random hyperplane through 0, the query from the other);
``noisy_y`` (labels plus ``N(0, 1)`` noise); ``more_points`` (twice the training
number of in-context examples).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from testbed.core.errors import ConfigError, is_count
from testbed.core.registry import Registry

SHIFTS = ("none", "scale_0.33", "scale_0.5", "scale_2", "scale_3", "skewed", "orthogonal", "half_space",
          "noisy_y", "more_points")
NOISY_Y_STD = 1.0


class Prompts(NamedTuple):
    """A batch of prompts.

    Attributes:
        x: [n, K, d] in-context inputs. y: [n, K] their labels.
        xq: [n, d] the query. yq: [n] its label (noise-free under ``noisy_y``: the target).
        piece: [n, K + 1] index of the piece each input (then the query) falls in.
    """

    x: jax.Array
    y: jax.Array
    xq: jax.Array
    yq: jax.Array
    piece: jax.Array


@dataclass(frozen=True)
class FunctionClass:
    """A distribution over functions ``R^d -> R``.

    Attributes:
        name: registry name.
        sample: (key, n, d) -> params, a pytree of [n, ...] arrays (one function per prompt).
        apply: (params, x [n, m, d]) -> y [n, m].
        pieces: names of the regions a function is defined by piecewise (``("all",)`` if none).
        piece_of: (x [n, m, d]) -> [n, m] int piece index.
        description: one line.
        baselines: the baselines (`testbed.tasks.prompt_baselines`) fit for this class, beyond the
            common ones (least squares, averaging, one-step GD, k-NN), e.g. ``("lasso",)``.
    """

    name: str
    sample: Callable[[jax.Array, int, int], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    description: str = ""
    pieces: tuple[str, ...] = ("all",)
    piece_of: Callable[[jax.Array], jax.Array] | None = None
    baselines: tuple[str, ...] = ()


CLASSES: Registry[FunctionClass] = Registry("function class", FunctionClass)


def register_function_class(name: str):
    """Register a factory ``(**params) -> FunctionClass``; refuses a name already taken."""
    return CLASSES.register(name)


def list_function_classes() -> list[str]:
    """Names of the registered function classes."""
    return CLASSES.names()


@register_function_class("linear")
def linear() -> FunctionClass:
    return FunctionClass("linear", lambda key, n, d: jax.random.normal(key, (n, d)),
                         lambda w, x: jnp.einsum("nmd,nd->nm", x, w), "f(x) = w . x, w ~ N(0, I)")


@register_function_class("sparse_linear")
def sparse_linear(sparsity: int = 3) -> FunctionClass:
    if not is_count(sparsity):
        raise ConfigError(f"sparse_linear: sparsity={sparsity!r} must be a positive integer")

    def sample(key, n, d):
        if sparsity > d:
            raise ConfigError(f"sparse_linear: sparsity={sparsity} exceeds the dimension d={d}")
        kw, kp = jax.random.split(key)
        w = jax.random.normal(kw, (n, d))
        keep = jnp.argsort(jax.random.uniform(kp, (n, d)), axis=1) < sparsity  # a random subset per prompt
        return w * keep

    return FunctionClass("sparse_linear", sample, lambda w, x: jnp.einsum("nmd,nd->nm", x, w),
                         f"f(x) = w . x with {sparsity} nonzero coordinates", baselines=("lasso",))


@register_function_class("relu2")
def relu2(hidden: int = 100) -> FunctionClass:
    if not is_count(hidden):
        raise ConfigError(f"relu2: hidden={hidden!r} must be a positive integer")

    def sample(key, n, d):
        kv, ka = jax.random.split(key)
        return jax.random.normal(kv, (n, hidden, d)), jax.random.normal(ka, (n, hidden))

    def apply(p, x):
        v, a = p
        return math.sqrt(2.0 / hidden) * jnp.einsum("nmh,nh->nm", jax.nn.relu(jnp.einsum("nmd,nhd->nmh", x, v)), a)

    return FunctionClass("relu2", sample, apply, f"two-layer ReLU net, {hidden} hidden units",
                         baselines=("two_layer_net",))


@register_function_class("tree")
def tree(depth: int = 4) -> FunctionClass:
    if not is_count(depth) or depth > 10:
        raise ConfigError(f"tree: depth={depth!r} must be an integer in 1..10")

    def sample(key, n, d):
        kf, kl = jax.random.split(key)
        return jax.random.randint(kf, (n, 2 ** depth - 1), 0, d), jax.random.normal(kl, (n, 2 ** depth))

    def apply(p, x):
        feature, leaf = p
        node = jnp.zeros(x.shape[:2], jnp.int32)  # heap order: children of i are 2i+1, 2i+2
        for _ in range(depth):
            f = jnp.take_along_axis(feature, node, axis=1)  # [n, m]
            go_right = jnp.take_along_axis(x, f[..., None], axis=2)[..., 0] > 0
            node = 2 * node + 1 + go_right.astype(jnp.int32)
        return jnp.take_along_axis(leaf, node - (2 ** depth - 1), axis=1)

    return FunctionClass("tree", sample, apply, f"depth-{depth} decision tree on coordinate signs",
                         baselines=("greedy_tree",))


@register_function_class("piecewise_linear")
def piecewise_linear() -> FunctionClass:
    def piece_of(x):
        return (x[..., 0] >= 0).astype(jnp.int32)

    def apply(w, x):
        neg, pos = w
        return jnp.where(piece_of(x) == 1, jnp.einsum("nmd,nd->nm", x, pos), jnp.einsum("nmd,nd->nm", x, neg))

    def sample(key, n, d):
        a, b = jax.random.split(key)
        return jax.random.normal(a, (n, d)), jax.random.normal(b, (n, d))

    return FunctionClass("piecewise_linear", sample, apply, "one linear map for x_0 < 0, another for x_0 >= 0",
                         pieces=("negative", "positive"), piece_of=piece_of, baselines=("two_layer_net",))


@dataclass(frozen=True)
class PromptTask:
    """Prompts of ``points`` in-context examples in ``d`` dimensions from a function class.

    Attributes:
        cls: the function class. d: input dimension. points: in-context examples in training.
        noise: SD of Gaussian noise on the labels in training (0: none).
    """

    cls: FunctionClass
    d: int = 5
    points: int = 20
    noise: float = 0.0

    def __post_init__(self):
        for name in ("d", "points"):
            v = getattr(self, name)
            if not is_count(v):
                raise ConfigError(f"prompt task: {name}={v!r} must be a positive integer")
        if not (isinstance(self.noise, int | float) and math.isfinite(self.noise) and self.noise >= 0):
            raise ConfigError(f"prompt task: noise={self.noise!r} must be a number >= 0")

    @property
    def name(self) -> str:
        return f"icl_{self.cls.name}"

    def points_for(self, shift: str) -> int:
        return 2 * self.points if shift == "more_points" else self.points

    def sample(self, key: jax.Array, n: int, shift: str = "none", active: jax.Array | int | None = None) -> Prompts:
        """``n`` prompts (and their queries) under a named shift (`SHIFTS`). ``active``: only the
        first ``active`` input coordinates are drawn, the rest are 0 (a curriculum's early stages;
        may be traced)."""
        if shift not in SHIFTS:
            raise ConfigError(f"prompt shift {shift!r} is unknown; accepted: {', '.join(SHIFTS)}")
        d, k = self.d, self.points_for(shift)
        kf, kx, kq, ks, kn = jax.random.split(key, 5)
        params = self.cls.sample(kf, n, d)
        z = jax.random.normal(kx, (n, k + 1, d))
        if shift.startswith("scale_"):
            z = z * float(shift.split("_", 1)[1])
        elif shift == "skewed":
            eig = 1.0 / jnp.arange(1, d + 1) ** 2
            rot = jnp.linalg.qr(jax.random.normal(ks, (n, d, d)))[0]
            z = jnp.einsum("nkd,d,ned->nke", z, jnp.sqrt(eig * d / eig.sum()), rot)
        elif shift == "orthogonal":
            if d < 2:
                raise ConfigError("prompt shift 'orthogonal' needs d >= 2")
            basis = jnp.linalg.qr(jax.random.normal(ks, (n, d, d)))[0]  # columns: an orthonormal basis
            half = d // 2
            ctx = jnp.einsum("nkh,ndh->nkd", z[:, :k, :half], basis[:, :, :half])
            q = jnp.einsum("nh,ndh->nd", z[:, k, half:], basis[:, :, half:])
            z = jnp.concatenate([ctx, q[:, None]], axis=1)
        elif shift == "half_space":
            u = jax.random.normal(ks, (n, d))
            side = jnp.sign(jnp.einsum("nkd,nd->nk", z, u))
            want = jnp.concatenate([jnp.ones((n, k)), -jnp.ones((n, 1))], axis=1)  # prompt: +, query: -
            z = z * jnp.where(side == 0, 1.0, side * want)[..., None]
        if active is not None:
            z = z * (jnp.arange(d) < active).astype(z.dtype)[None, None, :]
        y = self.cls.apply(params, z)
        noise = NOISY_Y_STD if shift == "noisy_y" else self.noise
        y_ctx = y[:, :k] + (noise * jax.random.normal(kn, (n, k)) if noise else 0.0)
        piece = self.cls.piece_of(z) if self.cls.piece_of is not None else jnp.zeros((n, k + 1), jnp.int32)
        return Prompts(z[:, :k], y_ctx, z[:, k], y[:, k], piece)


def make_prompt_task(cls: str | FunctionClass = "linear", *, d: int = 5, points: int = 20, noise: float = 0.0,
                     **class_params) -> PromptTask:
    """A prompt task over a registered function class (its parameters as keywords)."""
    fc = cls if isinstance(cls, FunctionClass) else CLASSES.make(cls, **class_params)
    return PromptTask(fc, d=d, points=points, noise=noise)


PREFIX = "icl_"  # a prompt task's name: the prefix and its class's name (`PromptTask.name`)


def list_prompt_tasks() -> list[str]:
    """Names of the prompt tasks suites can name: ``icl_<class>`` for every registered class."""
    return [PREFIX + c for c in list_function_classes()]


def prompt_task(name: str, **params) -> PromptTask:
    """The prompt task named ``icl_<class>`` (`list_prompt_tasks`), with d, points, noise and the
    class's parameters as keywords."""
    if not name.startswith(PREFIX) or name[len(PREFIX):] not in CLASSES:
        raise ConfigError(f"unknown prompt task {name!r}; known: {', '.join(list_prompt_tasks())}")
    return make_prompt_task(name[len(PREFIX):], **params)
