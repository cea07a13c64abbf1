"""Steering by activation injection, with a coefficient scan (activation addition, Turner et al.
2023; contrastive activation addition, Rimsky et al. 2024).

A direction ``v`` at hidden layer l is added to the layer's activations *after its
nonlinearity* (the models' hidden-layer hook), ``h_l <- h_l + alpha v``, on the inputs of the
source piece, for every coefficient of a scan and every run in one compiled call. Directions
(per run and layer, from ``eval_size`` train inputs of each piece):

* ``mean_diff``: ``mean h_l(target piece) - mean h_l(source piece)`` (Rimsky et al.'s vector);
* ``probe``: a least-squares linear probe's weight (hidden state -> 1 on the target piece, 0 on
  the source), scaled to ``mean_diff``'s norm and signed to agree with it;
* ``random``: a Gaussian direction of ``mean_diff``'s norm (the control);
* a vector the caller gives (``vector=``, one per layer or one for the layer named).

``patch`` is interpolated patching instead: ``h_l <- (1 - alpha) h_l(x) + alpha h_l(x')``, each
source input x paired with the nearest target input x' (on ``context_switch``: the same x0 in
the other context).

Measured per run, layer, direction and alpha, on the source inputs (`steer`):

* ``mix``: the least-squares mixing coefficient ``lambda`` of the two pieces' functions that best
  fits the steered output, ``y ~ (1 - lambda) f_source(x) + lambda f_target(x)`` (the target
  piece's function continued onto the source inputs): 0 = still the source function, 1 = the
  target's; ``residual``: what the best mixture leaves unexplained, RMS over the RMS difference
  of the two functions (0: the output is exactly that mixture; a random push has a large one);
* ``toward``: the fraction of source inputs whose steered output is nearer the target piece's
  function than the source's (the two-candidate form of the testbed's OOD attribution);
* ``shift``: the mean output minus the mean unsteered output; ``loss``: the task's primary
  metric against the source targets;
* spill-over (`steer`'s second table): the same injection on every other piece's own inputs,
  its primary metric there against that piece's targets, and the change from alpha = 0.

The same direction injected at every layer, side by side: if injecting early does something
else than injecting just before the read-out, the direction is also read by other computation.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from testbed.analyses.forward import final_ctx, forward, piece_inputs
from testbed.core.errors import ConfigError
from testbed.methods.base import Method, make_method
from testbed.tasks.metrics import metric_names, task_metrics
from testbed.tasks.task import Task
from testbed.training.result import RunResult

DIRECTIONS = ("mean_diff", "probe", "random")
ALPHAS = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
STEER_KEY = 3  # the analysis's own inputs: key(STEER_KEY), apart from the engine's evaluation sets
PROBE_RIDGE = 1e-3  # the probe's ridge, relative to the mean squared activation


def pieces_of(task: Task, source: str | None, target: str | None) -> tuple[int, int]:
    """Indices of the source and target pieces (default the first two)."""
    names = list(task.pieces)
    if len(names) < 2:
        raise ConfigError(f"steering: task {task.name!r} has one piece; steering moves one piece's inputs towards "
                          "another's")
    src = names[0] if source is None else source
    tgt = (names[1] if src == names[0] else names[0]) if target is None else target
    for what, v in (("source", src), ("target", tgt)):
        if v not in names:
            raise ConfigError(f"steering: {what}={v!r} is not a piece of {task.name!r}; pieces: {', '.join(names)}")
    if src == tgt:
        raise ConfigError(f"steering: source and target are the same piece {src!r}")
    return names.index(src), names.index(tgt)


def piece_function(task: Task, piece: int, x: jax.Array) -> jax.Array:
    """Piece ``piece``'s function continued onto model inputs ``x`` (its own formula anywhere)."""
    return task.piece_specs[piece].f(task.domain.decode(x)).astype(jnp.float32)


def steer(task: Task, method: Method | str, result: RunResult, *, source: str | None = None,
          target: str | None = None, layers: Sequence[int] | None = None, alphas: Sequence[float] = ALPHAS,
          directions: Sequence[str] = (*DIRECTIONS, "patch"), vector: np.ndarray | None = None,
          eval_size: int = 512, key: int = STEER_KEY) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The coefficient scan: (``steering``, ``steering_spill``) tables.

    Args:
        task, method, result: what trained (a method with its own forward, e.g. myopic, is run
            through it; outputs are read through the method's ``predict``).
        source, target: piece names (default the first two pieces).
        layers: hidden layers to inject at (default every one).
        alphas: the coefficients; ``0`` is the unsteered model, bit for bit.
        directions: any of ``mean_diff``, ``probe``, ``random``, ``patch``, and ``vector``
            (with ``vector=``: an array [width] for one layer, or a list of one per layer).
        eval_size: inputs per piece.

    Returns:
        ``steering``: run, seed, layer, direction, alpha, source_piece, target_piece, mix, residual, toward,
        mean_output, loss, norm (of the injected direction; for ``patch`` of ``mean_diff``), shift
        (mean output minus that at alpha = 0; NaN without 0 in the scan). ``steering_spill``: run, seed, layer,
        direction, alpha, piece, metric, value, change (from alpha = 0).
    """
    method = make_method(method) if isinstance(method, str) else method
    if task.target not in ("scalar", "vector"):
        raise ConfigError(f"steering: task {task.name!r} has {task.target} targets; the mixing coefficient needs "
                          "scalar or vector targets")
    s, t = pieces_of(task, source, target)
    known = (*DIRECTIONS, "patch", "vector")
    bad = [d for d in directions if d not in known]
    if bad:
        raise ConfigError(f"steering: direction {bad[0]!r}; accepted: {', '.join(known)}")
    if "vector" in directions and vector is None:
        raise ConfigError("steering: direction 'vector' needs vector= (an array [width], or one per layer)")
    alphas = [float(a) for a in alphas]
    if not alphas:
        raise ConfigError("steering: alphas is empty")
    batches = [piece_inputs(task, p, eval_size, key) for p in range(len(task.pieces))]
    src, tgt = batches[s], batches[t]
    ctx = int(result.config.get("steps", 1))  # the programs build the final evaluation's context from it
    hidden = _hidden_fn(task, method, result.graphdef, ctx)
    h_src, h_tgt = hidden(result.params, src), hidden(result.params, tgt)  # per layer [R, n, w]
    n_layers = len(h_src)
    if n_layers == 0 and layers is None:  # nothing to steer (e.g. the matrix model)
        return pd.DataFrame(), pd.DataFrame()
    layers = list(range(n_layers)) if layers is None else [int(i) for i in layers]
    for i in layers:
        if not 0 <= i < n_layers:
            raise ConfigError(f"steering: layer {i}; the model has {n_layers} hidden layer(s): 0..{n_layers - 1}")
    seeds = result.runs["seed"].to_numpy()
    f_s, f_t = piece_function(task, s, src.x), piece_function(task, t, src.x)
    # patching pairs each source input with the nearest target input (context_switch: the same x0)
    pair = np.argmin(((np.asarray(src.x)[:, None, :] - np.asarray(tgt.x)[None, :, :]) ** 2).sum(-1), axis=1)
    rows, spill = [], []
    primary = metric_names(task)[0]
    for layer in layers:
        vecs = directions_at(h_src[layer], h_tgt[layer], key=key + 1000 * layer)
        if vector is not None:
            v = vector[layer] if isinstance(vector, list | tuple) else vector
            v = jnp.asarray(v, jnp.float32)
            if v.shape != (h_src[layer].shape[-1],):
                raise ConfigError(f"steering: vector has shape {tuple(v.shape)}; layer {layer} has "
                                  f"{h_src[layer].shape[-1]} units")
            vecs["vector"] = jnp.broadcast_to(v, vecs["mean_diff"].shape)
        for d in directions:
            if d == "patch":
                out = _patched(task, method, result.graphdef, ctx, layer)(
                    result.params, src, h_tgt[layer][:, pair], jnp.asarray(alphas))
                norm = np.linalg.norm(np.asarray(vecs["mean_diff"]), axis=-1)
            else:
                inj = _injected(task, method, result.graphdef, ctx, layer)
                out = inj(result.params, src, vecs[d], jnp.asarray(alphas))  # [R, A, n, ...]
                norm = np.linalg.norm(np.asarray(vecs[d]), axis=-1)
                for p in range(len(task.pieces)):
                    if p == s:
                        continue
                    o = inj(result.params, batches[p], vecs[d], jnp.asarray(alphas))
                    val = np.asarray(jax.vmap(jax.vmap(lambda y, b=batches[p]: task_metrics(
                        task, method.predict(task, y), b.y)[primary].mean()))(o))  # [R, A]
                    for r in range(val.shape[0]):
                        for a, alpha in enumerate(alphas):
                            spill.append({"run": r, "seed": int(seeds[r]), "layer": layer, "direction": d,
                                          "alpha": alpha, "piece": task.pieces[p], "metric": primary,
                                          "value": float(val[r, a])})
            pred = jax.vmap(jax.vmap(lambda y: method.predict(task, y)))(out)
            q = _quantities(pred, f_s, f_t, src.y, task, primary)
            for r in range(pred.shape[0]):
                for a, alpha in enumerate(alphas):
                    rows.append({"run": r, "seed": int(seeds[r]), "layer": layer, "direction": d, "alpha": alpha,
                                 "source_piece": task.pieces[s], "target_piece": task.pieces[t],
                                 **{k: float(v[r, a]) for k, v in q.items()}, "norm": float(norm[r])})
    table = pd.DataFrame(rows)
    keys = ["run", "layer", "direction"]
    if 0.0 in alphas:
        at0 = table[table["alpha"] == 0.0].set_index(keys)["mean_output"]
        table["shift"] = table["mean_output"].to_numpy() - at0.reindex(pd.MultiIndex.from_frame(table[keys])).to_numpy()
    else:
        table["shift"] = np.nan
    spill_df = pd.DataFrame(spill, columns=["run", "seed", "layer", "direction", "alpha", "piece", "metric", "value"])
    if len(spill_df):
        base = spill_df[spill_df["alpha"] == 0.0].set_index(["run", "layer", "direction", "piece"])["value"]
        idx = pd.MultiIndex.from_frame(spill_df[["run", "layer", "direction", "piece"]])
        spill_df["change"] = spill_df["value"].to_numpy() - base.reindex(idx).to_numpy() if 0.0 in alphas else np.nan
    else:
        spill_df["change"] = []
    return table, spill_df


def directions_at(h_src: jax.Array, h_tgt: jax.Array, *, key: int = STEER_KEY) -> dict[str, jax.Array]:
    """``mean_diff``, ``probe`` and ``random`` directions [R, width] from activations [R, n, width]."""
    diff = h_tgt.mean(1) - h_src.mean(1)
    norm = jnp.linalg.norm(diff, axis=-1, keepdims=True)
    probe = jax.vmap(_probe)(h_src, h_tgt)
    probe = probe / jnp.maximum(jnp.linalg.norm(probe, axis=-1, keepdims=True), 1e-30) * norm
    probe = probe * jnp.where(jnp.sum(probe * diff, -1, keepdims=True) < 0, -1.0, 1.0)
    rnd = jax.random.normal(jax.random.key(key), diff.shape)
    rnd = rnd / jnp.linalg.norm(rnd, axis=-1, keepdims=True) * norm
    return {"mean_diff": diff, "probe": probe, "random": rnd}


def _probe(h_src: jax.Array, h_tgt: jax.Array) -> jax.Array:
    """A least-squares linear probe's weight: centred hidden state -> 1 (target) / 0 (source), ridge."""
    h = jnp.concatenate([h_src, h_tgt])
    y = jnp.concatenate([jnp.zeros(len(h_src)), jnp.ones(len(h_tgt))])
    hc, yc = h - h.mean(0, keepdims=True), y - y.mean()
    lam = PROBE_RIDGE * jnp.mean(hc ** 2) * len(h) + 1e-12
    return jnp.linalg.solve(hc.T @ hc + lam * jnp.eye(h.shape[1]), hc.T @ yc)


def _quantities(pred, f_s, f_t, y, task: Task, primary: str) -> dict[str, np.ndarray]:
    """mix, toward, shift, loss per [R, A] from steered predictions [R, A, n(, k)]."""
    flat = pred.reshape(pred.shape[:3] + (-1,))
    fs, ft = f_s.reshape(1, 1, len(f_s), -1), f_t.reshape(1, 1, len(f_t), -1)
    gap = ft - fs
    mix = jnp.sum((flat - fs) * gap, axis=(2, 3)) / jnp.maximum(jnp.sum(gap ** 2), 1e-30)
    fitted = fs + mix[..., None, None] * gap  # the best mixture of the two functions
    residual = jnp.sqrt(jnp.mean((flat - fitted) ** 2, axis=(2, 3)) / jnp.maximum(jnp.mean(gap ** 2), 1e-30))
    d_s, d_t = jnp.sum((flat - fs) ** 2, -1), jnp.sum((flat - ft) ** 2, -1)
    toward = jnp.mean(d_t < d_s, axis=2)
    mean = flat.mean(axis=(2, 3))
    loss = jax.vmap(jax.vmap(lambda p: task_metrics(task, p, y)[primary].mean()))(pred)
    return {"mix": np.asarray(mix), "residual": np.asarray(residual), "toward": np.asarray(toward),
            "mean_output": np.asarray(mean),
            "loss": np.asarray(loss)}


@functools.lru_cache(maxsize=64)
def _hidden_fn(task: Task, judge: Method, graphdef, steps: int):
    ctx = final_ctx(steps)

    def one(params, batch):
        return forward(task, judge, graphdef, params, batch, ctx)[1]

    return jax.jit(jax.vmap(one, in_axes=(0, None)))


@functools.lru_cache(maxsize=64)
def _injected(task: Task, judge: Method, graphdef, steps: int, layer: int):
    """jit(params [R], batch, v [R, w], alphas [A]) -> outputs [R, A, n, ...] with h_l + alpha v."""
    ctx = final_ctx(steps)
    def one(params, batch, v, alpha):
        def add(i, h):
            return h + alpha * v[None, :] if i == layer else None
        return forward(task, judge, graphdef, params, batch, ctx, add)[0]

    per_alpha = jax.vmap(one, in_axes=(None, None, None, 0))
    return jax.jit(jax.vmap(per_alpha, in_axes=(0, None, 0, None)))


@functools.lru_cache(maxsize=64)
def _patched(task: Task, judge: Method, graphdef, steps: int, layer: int):
    """jit(params [R], batch, h_other [R, n, w], alphas [A]) -> outputs with (1 - a) h + a h_other."""
    ctx = final_ctx(steps)
    def one(params, batch, other, alpha):
        def mix(i, h):
            return (1.0 - alpha) * h + alpha * other if i == layer else None
        return forward(task, judge, graphdef, params, batch, ctx, mix)[0]

    per_alpha = jax.vmap(one, in_axes=(None, None, None, 0))
    return jax.jit(jax.vmap(per_alpha, in_axes=(0, None, 0, None)))
