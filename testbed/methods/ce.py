"""``ce``: cross-entropy instead of squared error.

Regression targets (scalar, vector) become distributions over ``bins`` bins that
span the target range (Farebrother et al. 2024, "Stop Regressing", arXiv
2403.03950): HL-Gauss (a Gaussian of width ``sigma_ratio`` bin widths integrated
over each bin) or two-hot (linear interpolation between the two nearest bin
centres). The prediction is the expectation over bin centres.

Distribution targets: softmax cross-entropy against the target distribution;
class targets: cross-entropy on the label. The loss is reported as cross-entropy
minus the target's entropy (a KL divergence), so a perfect fit is zero loss; the
gradient is unchanged by the offset.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import erf

from testbed.core.errors import ConfigError
from testbed.methods.base import Method, register_method
from testbed.tasks.metrics import kl_from_logits
from testbed.tasks.registry import task_values
from testbed.tasks.task import Batch, Task

ENCODINGS = ("hl_gauss", "two_hot")


@functools.lru_cache(maxsize=256)
def target_range(task: Task, margin: float = 0.1) -> tuple[float, float]:
    """Range of the targets on a task's training split, widened by ``margin`` of its width.

    Computed once per task, eagerly, even when first called while tracing, and kept on disk
    (`testbed.tasks.registry.task_values`).
    """
    def compute() -> dict[str, np.ndarray]:
        with jax.ensure_compile_time_eval():
            y = np.asarray(task.sample(jax.random.key(0), 8192, "train").y)
        return {"range": np.array([np.nanmin(y), np.nanmax(y)], np.float64)}

    lo, hi = (float(v) for v in task_values(task, "target_range", compute)["range"])
    pad = margin * max(hi - lo, 1e-3)
    return lo - pad, hi + pad


def bin_edges(lo: float, hi: float, bins: int) -> jax.Array:
    """[bins + 1] equally spaced edges."""
    return jnp.linspace(lo, hi, bins + 1, dtype=jnp.float32)


def hl_gauss(y: jax.Array, edges: jax.Array, sigma: float) -> jax.Array:
    """HL-Gauss target probabilities: [...] -> [..., bins]; mass outside the range is
    renormalized onto the bins."""
    edges = edges.reshape((1,) * y.ndim + edges.shape)
    cdf = 0.5 * (1.0 + erf((edges - y[..., None]) / (np.sqrt(2.0) * sigma)))
    mass = cdf[..., 1:] - cdf[..., :-1]
    return mass / jnp.maximum(cdf[..., -1:] - cdf[..., :1], 1e-12)


def two_hot(y: jax.Array, edges: jax.Array) -> jax.Array:
    """Two-hot target probabilities over bin centres: [...] -> [..., bins]. Values
    outside the centres' range are clipped to the end bins."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    yc = jnp.clip(y, centres[0], centres[-1])
    pos = (yc - centres[0]) / (centres[1] - centres[0])
    lo = jnp.clip(jnp.floor(pos), 0, centres.shape[0] - 2)
    w_hi = pos - lo
    idx = jnp.arange(centres.shape[0]).reshape((1,) * y.ndim + centres.shape)
    return (jnp.where(idx == lo[..., None], 1.0 - w_hi[..., None], 0.0)
            + jnp.where(idx == lo[..., None] + 1, w_hi[..., None], 0.0))


def expectation(logits: jax.Array, edges: jax.Array) -> jax.Array:
    """Decode: expected bin centre under softmax(logits). [..., bins] -> [...]."""
    centres = 0.5 * (edges[1:] + edges[:-1])
    return jax.nn.softmax(logits, axis=-1) @ centres


@register_method("ce")
def ce(bins: int = 64, encoding: str = "hl_gauss", sigma_ratio: float = 0.75,
       low: float | None = None, high: float | None = None) -> Method:
    """Cross-entropy targets.

    Args:
        bins: bins per regression output.
        encoding: ``hl_gauss`` or ``two_hot``.
        sigma_ratio: HL-Gauss width in bin widths (0.75 as recommended by Farebrother et al.).
        low, high: target range covered by the bins; default: the training targets'
            range widened by 10%.
    """
    if encoding not in ENCODINGS:
        raise ConfigError(f"method ce: encoding {encoding!r} unknown; accepted: {', '.join(ENCODINGS)}")
    if not isinstance(bins, int) or bins < 2:
        raise ConfigError(f"method ce: bins must be an integer >= 2, got {bins!r}")
    if not sigma_ratio > 0:
        raise ConfigError(f"method ce: sigma_ratio must be > 0, got {sigma_ratio!r}")
    if (low is None) != (high is None) or (low is not None and not low < high):
        raise ConfigError(f"method ce: give both low < high or neither, got low={low!r} high={high!r}")

    def span(task: Task) -> tuple[float, float]:
        return (low, high) if low is not None else target_range(task)

    def edges_for(task: Task) -> jax.Array:
        return bin_edges(*span(task), bins)

    def regression(task: Task) -> bool:
        return task.target in ("scalar", "vector")

    def head_dim(task: Task) -> int:
        return task.out_dim * bins if regression(task) else task.out_dim

    def encode(task: Task, y: jax.Array) -> jax.Array:
        edges = edges_for(task)
        if encoding == "two_hot":
            return two_hot(y, edges)
        lo, hi = span(task)
        return hl_gauss(y, edges, sigma_ratio * (hi - lo) / bins)

    def loss(task: Task, out: jax.Array, batch: Batch) -> jax.Array:
        if task.target == "distribution":
            return kl_from_logits(batch.y, out)
        logp = jax.nn.log_softmax(out, axis=-1) if not regression(task) else None
        if task.target == "class":
            return -jnp.take_along_axis(logp, batch.y[:, None], axis=-1)[:, 0]
        y = batch.y.reshape(batch.y.shape[0], task.out_dim)
        logits = out.reshape(out.shape[0], task.out_dim, bins)
        p = encode(task, y)
        logq = jax.nn.log_softmax(logits, axis=-1)
        ent = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0), axis=-1)
        return jnp.sum(-jnp.sum(p * logq, axis=-1) - ent, axis=-1)

    def predict(task: Task, out: jax.Array) -> jax.Array:
        if not regression(task):
            return out
        y = expectation(out.reshape(out.shape[0], task.out_dim, bins), edges_for(task))
        return y[:, 0] if task.target == "scalar" else y

    return Method("ce", head_dim=head_dim, loss=loss, predict=predict,
                  hparams=(("bins", bins), ("encoding", encoding), ("sigma_ratio", sigma_ratio),
                           ("low", low), ("high", high)))
