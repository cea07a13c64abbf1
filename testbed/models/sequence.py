"""Sequence models for prompt tasks (`testbed.tasks.prompts`): a small decoder-only transformer
and one linear self-attention layer, in Flax NNX.

Both read a prompt as tokens and predict the label at every input position from the pairs
before it (causal: no position sees a later label):

* `Transformer` (Garg et al. 2022): tokens ``x_1, y_1, ..., x_K, y_K`` interleaved, each read in
  by one linear map (a label token is ``(y, 0, ..., 0)``), learned positional embeddings,
  ``depth`` pre-LayerNorm blocks of causal multi-head attention and a GELU MLP, a linear read-out
  at the input positions.
* `LinearAttention` (von Oswald et al. 2023): tokens ``z_j = (x_j, y_j)`` and the query
  ``(x_i, 0)``; the prediction at position i is the last coordinate of
  ``W_PV sum_{j<i} z_j z_j^T W_KQ (x_i, 0) / n``, with ``n`` the prompt length trained on. Its
  optimum on linear regression is one step of gradient descent, error ``(d + 1) / (n + d + 1)``.

``model(x [B, K, d], y [B, K]) -> [B, K]``: the prediction at each input position.

Configs are registered (`register_prompt_model`, `make_prompt_model`) so suites can name them;
``loss_at`` is where each is trained by default (`testbed.train_prompts`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from flax import nnx

from testbed.core.errors import ConfigError
from testbed.core.registry import Registry
from testbed.models.modules import positive_fields


class _Block(nnx.Module):
    def __init__(self, width: int, heads: int, *, rngs: nnx.Rngs):
        self.ln1, self.ln2 = nnx.LayerNorm(width, rngs=rngs), nnx.LayerNorm(width, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=width, qkv_features=width,
                                           decode=False, rngs=rngs)
        self.fc1, self.fc2 = nnx.Linear(width, 4 * width, rngs=rngs), nnx.Linear(4 * width, width, rngs=rngs)

    def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        h = h + self.attn(self.ln1(h), mask=mask)
        return h + self.fc2(jax.nn.gelu(self.fc1(self.ln2(h))))


class TransformerModule(nnx.Module):
    def __init__(self, d: int, max_points: int, width: int, depth: int, heads: int, *, rngs: nnx.Rngs):
        self.read_in = nnx.Linear(d, width, rngs=rngs)
        self.pos = nnx.Param(jax.random.normal(rngs.params(), (2 * max_points, width)) * 0.02)
        self.blocks = nnx.List([_Block(width, heads, rngs=rngs) for _ in range(depth)])
        self.ln = nnx.LayerNorm(width, rngs=rngs)
        self.read_out = nnx.Linear(width, 1, rngs=rngs)
        self.max_points = max_points

    def _tokens(self, x: jax.Array, y: jax.Array, extra: int = 0) -> jax.Array:
        b, k, d = x.shape
        if k + extra > self.max_points:
            raise ConfigError(f"transformer: prompts of {k + extra} examples exceed max_points={self.max_points}")
        ytok = jnp.concatenate([y[..., None], jnp.zeros((b, k, d - 1), x.dtype)], axis=-1)
        return jnp.stack([x, ytok], axis=2).reshape(b, 2 * k, d)  # x_1, y_1, x_2, y_2, ...

    def _blocks(self, h: jax.Array, mask: jax.Array) -> jax.Array:
        for blk in self.blocks:
            h = blk(h, mask)
        return self.read_out(self.ln(h))[..., 0]

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        b, k, _ = x.shape
        h = self.read_in(self._tokens(x, y)) + self.pos[: 2 * k][None]
        return self._blocks(h, nnx.make_causal_mask(jnp.ones((b, 2 * k))))[:, 0::2]  # at the x positions

    def queries(self, x: jax.Array, y: jax.Array, xq: jax.Array) -> jax.Array:
        """[B, K + 1]: the prediction of the query ``xq`` [B, d] from the first N examples, every
        N = 0..K, in one pass: what ``__call__`` gives at x position N with ``xq`` there (K + 1
        passes), computed on the 2K prompt tokens followed by K + 1 copies of the query, the
        N-th at position 2N, seeing the first 2N prompt tokens and itself (the prompt tokens see
        no query). The same numbers up to rounding (the sums run over other lengths)."""
        b, k, d = x.shape
        n = 2 * k + k + 1
        tokens = jnp.concatenate([self._tokens(x, y, extra=1), jnp.broadcast_to(xq[:, None], (b, k + 1, d))], axis=1)
        h = self.read_in(tokens) + jnp.concatenate([self.pos[: 2 * k], self.pos[0: 2 * k + 1: 2]])[None]
        i, j = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
        sees = jnp.where(i < 2 * k, j <= i, (j < 2 * (i - 2 * k)) | (j == i))
        return self._blocks(h, sees[None, None])[:, 2 * k:]


class LinearAttentionModule(nnx.Module):
    def __init__(self, d: int, max_points: int, *, rngs: nnx.Rngs):
        e = d + 1
        init = nnx.initializers.normal(stddev=0.1 / math.sqrt(e))
        self.w_kq = nnx.Param(init(rngs.params(), (e, e)))
        self.w_pv = nnx.Param(init(rngs.params(), (e, e)))
        self.n = float(max_points)

    def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
        z = jnp.concatenate([x, y[..., None]], axis=-1)  # [B, K, d+1]
        q = jnp.concatenate([x, jnp.zeros_like(y)[..., None]], axis=-1)
        scores = jnp.einsum("bje,ef,bif->bij", z, self.w_kq[...], q)  # [B, i, j]: z_j^T W_KQ q_i
        k = x.shape[1]
        causal = jnp.tril(jnp.ones((k, k)), k=-1)  # j < i
        out = jnp.einsum("bij,bje->bie", scores * causal[None], z) @ self.w_pv[...].T
        return out[..., -1] / self.n


@dataclass(frozen=True, kw_only=True)
class Transformer:
    """A decoder-only transformer config for prompts (Garg et al.: GPT-2 style, smaller)."""

    width: int = 64
    depth: int = 2
    heads: int = 4
    max_points: int = 40  # longest prompt (in-context examples) it has positions for

    name = "transformer"
    loss_at = "all"  # trained on every position (Garg et al.)

    @staticmethod
    def points_for(points: int, longest: int) -> int:
        """``max_points`` when none is given: positions for the longest prompt and its query."""
        return longest + 1

    def __post_init__(self):
        positive_fields(self, "width", "depth", "heads", "max_points")
        if self.width % self.heads:
            raise ConfigError(f"model.heads: {self.heads} heads do not divide width={self.width}")

    def build(self, d: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return TransformerModule(d, self.max_points, self.width, self.depth, self.heads, rngs=rngs)


@dataclass(frozen=True, kw_only=True)
class LinearAttention:
    """One linear self-attention layer (von Oswald et al. 2023)."""

    max_points: int = 40  # the prompt length its sum is normalized by (the training length)

    name = "linear_attention"
    loss_at = "last"  # trained on the query after all examples (von Oswald et al.)

    @staticmethod
    def points_for(points: int, longest: int) -> int:
        """``max_points`` when none is given: the training length it normalizes by."""
        return points

    def __post_init__(self):
        positive_fields(self, "max_points")

    def build(self, d: int, *, rngs: nnx.Rngs) -> nnx.Module:
        return LinearAttentionModule(d, self.max_points, rngs=rngs)


PROMPT_MODELS: Registry = Registry("prompt model", object)


def register_prompt_model(name: str):
    """Register a prompt-model config factory ``(**fields) -> config`` (with ``name``,
    ``loss_at`` and ``build(d, rngs=...)``); refuses a name already taken."""
    return PROMPT_MODELS.register(name)


def list_prompt_models() -> list[str]:
    return PROMPT_MODELS.ordered()


def make_prompt_model(name: str, **fields):
    """A registered prompt-model config by name."""
    return PROMPT_MODELS.make(name, **fields)


register_prompt_model("transformer")(Transformer)
register_prompt_model("linear_attention")(LinearAttention)
