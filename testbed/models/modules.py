"""Small Flax NNX models, described by frozen configs and built per seed inside the engine.

A model config is static and hashable (it decides shapes and code paths); the
engine calls ``config.build(in_dim, out_dim, rngs=...)`` inside the traced
function, ``nnx.split``s the module once, and trains the parameter pytree.

Every module's ``__call__(x, *, masks=None, ablate=None, return_hidden=False)``
takes optional per-hidden-layer arrays: ``masks[i]`` ([n, width] in [0, 1]) routes
gradients (forward unchanged, ``m * h + (1 - m) * stop_gradient(h)``; Cloud et al.
2024) and ``ablate[i]`` ([width]) multiplies the hidden units (1 keeps, 0 ablates);
a ``None`` entry leaves that layer alone.

Either may instead be a callable ``(layer_index, h) -> array | None``, called once
per hidden layer with that layer's activations ``h`` ([n, width]), so a caller can
build per-layer arrays without knowing the widths in advance: ``masks(i, h)``
returns the routing mask for layer i, ``ablate(i, h)`` returns the layer's *new
values* (an intervention, e.g. mean ablation); ``None`` leaves the layer alone.
Routing is applied before ablation. ``return_hidden=True`` also returns the list of
hidden activations (after routing and ablation).

``module.outgoing(i)`` is the parameter whose axis 0 reads the units of hidden
layer i (the next layer's or the head's kernel): zeroing its rows ablates those
units in the parameters themselves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from testbed.core.errors import ConfigError, is_count
from testbed.models.activations import ACTIVATIONS
from testbed.models.dense import Linear, matmul
from testbed.models.registry import register_model


def route(h: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Gradient routing: same values as ``h``, gradient only where ``mask`` is 1.

    Cloud et al. 2024, "Gradient Routing" (arXiv 2410.04332): ``m*h + (1-m)*sg(h)``.
    """
    if mask is None:
        return h
    return mask * h + (1.0 - mask) * jax.lax.stop_gradient(h)


def _hidden(h: jax.Array, i: int, masks, ablate) -> jax.Array:
    """Apply layer i's routing mask, then its ablation (arrays or callables, see module doc)."""
    if masks is not None:
        h = route(h, masks(i, h) if callable(masks) else masks[i])
    if callable(ablate):
        new = ablate(i, h)
        h = h if new is None else new
    elif ablate is not None and ablate[i] is not None:
        h = h * jnp.broadcast_to(ablate[i], h.shape)  # [width] -> [n, width], explicitly
    return h


class MLPModule(nnx.Module):
    """Multi-layer perceptron: ``depth`` hidden layers of ``width`` units, linear head."""

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, activation: str, *, rngs: nnx.Rngs):
        dims = [in_dim] + [width] * depth
        self.layers = nnx.List([Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)])
        self.head = Linear(dims[-1], out_dim, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array, *, masks: Sequence | None = None, ablate: Sequence | None = None,
                 return_hidden: bool = False):
        act = ACTIVATIONS[self.activation]
        hidden = []
        h = x
        for i, layer in enumerate(self.layers):
            h = _hidden(act(layer(h)), i, masks, ablate)
            hidden.append(h)
        out = self.head(h)
        return (out, hidden) if return_hidden else out

    def outgoing(self, i: int) -> nnx.Variable:
        """The kernel whose rows read hidden layer i's units."""
        if not 0 <= i < len(self.layers):
            raise IndexError(f"mlp has {len(self.layers)} hidden layers, got layer {i}")
        return self.layers[i + 1].kernel if i + 1 < len(self.layers) else self.head.kernel


class LowRankModule(nnx.Module):
    """Rank-r factorized linear map ``x @ U @ V``: a logits matrix of rank at most r.

    With one-hot row inputs this is exactly a learned ``[rows, classes]`` matrix of
    limited rank (the distributional-targets experiments).
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, *, rngs: nnx.Rngs):
        init = nnx.initializers.normal(stddev=1.0)
        self.u = nnx.Param(init(rngs.params(), (in_dim, rank)) / jnp.sqrt(rank))
        self.v = nnx.Param(init(rngs.params(), (rank, out_dim)) / jnp.sqrt(rank))

    def __call__(self, x: jax.Array, *, masks: Sequence | None = None, ablate: Sequence | None = None,
                 return_hidden: bool = False):
        h = _hidden(matmul(x, self.u[...]), 0, masks, ablate)
        out = matmul(h, self.v[...])
        return (out, [h]) if return_hidden else out

    def outgoing(self, i: int) -> nnx.Variable:
        """The factor whose rows read the rank units (``v``)."""
        if i != 0:
            raise IndexError(f"lowrank has one hidden layer, got layer {i}")
        return self.v


class MatrixModule(nnx.Module):
    """A learned ``rows x cols`` logits matrix ``Z = A B`` of rank at most r, output whole.

    Every example's output is ``x[:, 0] * vec(Z)``: the input is a scalar that scales
    the logits (an inverse temperature; 1 on the training split of `lowrank_global`), so
    one output row holds all ``rows * cols`` entries and a softmax over it is one softmax
    over the whole matrix. No hidden layer: nothing depends on the input but a scale, so
    there are no units to route, ablate or probe (``hidden_sizes() == ()``).
    """

    def __init__(self, in_dim: int, out_dim: int, rank: int, rows: int | None, *, rngs: nnx.Rngs):
        rows = rows or max(d for d in range(1, math.isqrt(out_dim) + 1) if out_dim % d == 0)
        if out_dim % rows:
            raise ConfigError(f"model.rows: {rows} rows do not divide the task's {out_dim} outputs")
        init = nnx.initializers.normal(stddev=1.0)
        self.a = nnx.Param(init(rngs.params(), (rows, rank)) / jnp.sqrt(rank))
        self.b = nnx.Param(init(rngs.params(), (rank, out_dim // rows)))

    def __call__(self, x: jax.Array, *, masks: Sequence | None = None, ablate: Sequence | None = None,
                 return_hidden: bool = False):
        out = x[:, :1] * matmul(self.a[...], self.b[...]).reshape(1, -1)
        return (out, []) if return_hidden else out

    def outgoing(self, i: int) -> nnx.Variable:
        raise IndexError(f"matrix has no hidden layer, got layer {i}")


class DeepLinearModule(nnx.Module):
    """Deep linear network: ``depth`` weight matrices, no biases, no nonlinearity.

    Saxe, McClelland and Ganguli 2014 (arXiv 1312.6120): from small init each
    singular mode of the target is learned along its own sigmoid.
    """

    def __init__(self, in_dim: int, out_dim: int, width: int, depth: int, *, rngs: nnx.Rngs):
        dims = [in_dim] + [width] * (depth - 1) + [out_dim]
        init = nnx.initializers.normal(stddev=1.0)
        self.weights = nnx.List([nnx.Param(init(rngs.params(), (a, b)) / jnp.sqrt(a))
                                 for a, b in zip(dims[:-1], dims[1:], strict=True)])

    def __call__(self, x: jax.Array, *, masks: Sequence | None = None, ablate: Sequence | None = None,
                 return_hidden: bool = False):
        hidden = []
        h = x
        for i, w in enumerate(self.weights):
            h = matmul(h, w[...])
            if i < len(self.weights) - 1:
                h = _hidden(h, i, masks, ablate)
                hidden.append(h)
        return (h, hidden) if return_hidden else h

    def outgoing(self, i: int) -> nnx.Variable:
        """The weight matrix whose rows read hidden layer i's units."""
        if not 0 <= i < len(self.weights) - 1:
            raise IndexError(f"deep_linear has {len(self.weights) - 1} hidden layers, got layer {i}")
        return self.weights[i + 1]


@register_model("mlp")
@dataclass(frozen=True, kw_only=True)
class MLP:
    """An MLP config."""

    width: int = 64  # hidden units per layer
    depth: int = 2  # number of hidden layers
    activation: str = "relu"  # relu | tanh | gelu | square

    def __post_init__(self):
        positive_fields(self, "width", "depth")
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"model.activation: unknown {self.activation!r}; accepted: {', '.join(ACTIVATIONS)}")

    name = "mlp"

    def build(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return MLPModule(in_dim, out_dim, self.width, self.depth, self.activation, rngs=rngs)

    def hidden_sizes(self) -> tuple[int, ...]:
        return (self.width,) * self.depth


@register_model("lowrank")
@dataclass(frozen=True, kw_only=True)
class LowRank:
    """A rank-r factorized linear model config."""

    rank: int = 2  # inner dimension r (the rank limit of the learned matrix)

    def __post_init__(self):
        positive_fields(self, "rank")

    name = "lowrank"

    def build(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return LowRankModule(in_dim, out_dim, self.rank, rngs=rngs)

    def hidden_sizes(self) -> tuple[int, ...]:
        return (self.rank,)


@register_model("matrix")
@dataclass(frozen=True, kw_only=True)
class Matrix:
    """A rank-r factorized logits matrix, output whole (for `lowrank_global`)."""

    rank: int = 2  # inner dimension r (the rank limit of the learned matrix)
    rows: int | None = None  # rows of the matrix; None: the most square shape the outputs allow

    def __post_init__(self):
        positive_fields(self, "rank")
        if self.rows is not None:
            positive_fields(self, "rows")

    name = "matrix"

    def build(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return MatrixModule(in_dim, out_dim, self.rank, self.rows, rngs=rngs)

    def hidden_sizes(self) -> tuple[int, ...]:
        return ()


@register_model("deep_linear")
@dataclass(frozen=True, kw_only=True)
class DeepLinear:
    """A deep linear network config."""

    width: int = 32  # hidden width
    depth: int = 2  # number of weight matrices (2 = one hidden layer)

    def __post_init__(self):
        positive_fields(self, "width", "depth")

    name = "deep_linear"

    def build(self, in_dim: int, out_dim: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return DeepLinearModule(in_dim, out_dim, self.width, self.depth, rngs=rngs)

    def hidden_sizes(self) -> tuple[int, ...]:
        return (self.width,) * (self.depth - 1)


def positive_fields(cfg, *names: str) -> None:
    """Raise ConfigError naming ``model.<field>`` unless each named field is a positive integer."""
    for n in names:
        v = getattr(cfg, n)
        if not is_count(v):
            raise ConfigError(f"model.{n}: expected a positive integer, got {v!r}")
