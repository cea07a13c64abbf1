"""Circuit economics: how the pieces of a task share a network's units.

* `unit_use`: per hidden unit and piece, the ablation damage (the piece's primary metric with
  the unit zeroed, minus intact) and the activation share (the unit's mean |activation| on the
  piece's inputs over its sum across pieces; NaN for a unit dead on every input). A unit is
  *used* by a piece when zeroing it costs that piece more than `USE_TOL` of the task's target
  variance over all pieces (the loss of predicting the mean; one scale, so a constant piece is
  judged like the others).
* `sharing`: per run and layer, the fraction of units used by 0, 1, 2, ... pieces.
* `gradient_cosines`: the cosine between each pair of pieces' loss gradients (over all
  parameters) at every evaluation (runs trained with ``snapshots=True``; else at the end):
  positive, the pieces pull the weights the same way; negative, they compete.

Inputs: ``eval_size`` train inputs of each piece (key `CAPACITY_KEY`), the same for every run.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from testbed.analyses.forward import final_ctx, forward, piece_inputs
from testbed.methods.base import Method, make_method
from testbed.tasks.metrics import metric_names, task_metrics
from testbed.tasks.task import Task
from testbed.training.result import RunResult

CAPACITY_KEY = 4
USE_TOL = 0.01  # a unit is used by a piece when zeroing it costs it more than 1% of the task's target variance


def _pieces(task: Task, eval_size: int, key: int):
    return [piece_inputs(task, p, eval_size, key) for p in range(len(task.pieces))]


def unit_use(task: Task, method: Method | str, result: RunResult, *, eval_size: int = 256,
             key: int = CAPACITY_KEY) -> pd.DataFrame:
    """``run, seed, layer, unit, piece, damage, activation, share, scale, used`` (one row per run,
    hidden unit and piece); ``scale`` is the task's target variance the damage is judged by."""
    method = make_method(method) if isinstance(method, str) else method
    steps = int(result.config.get("steps", 1))
    primary = metric_names(task)[0]
    batches = _pieces(task, eval_size, key)
    widths = [h.shape[-1] for h in jax.eval_shape(
        lambda p: forward(task, method, result.graphdef, p, batches[0], final_ctx(steps))[1],
        jax.tree.map(lambda a: a[0], result.params))]
    seeds = result.runs["seed"].to_numpy()
    frames = []
    for layer, width in enumerate(widths):
        keep = jnp.concatenate([jnp.ones((1, width)), 1.0 - jnp.eye(width)])  # intact, then each unit zeroed
        dmg, act = [], []
        for b in batches:
            vals, h = _ablated(task, method, result.graphdef, steps, layer, primary)(result.params, b, keep)
            dmg.append(np.asarray(vals[:, 1:] - vals[:, :1]))  # [R, U]
            act.append(np.asarray(h))  # [R, U] mean |h|
        dmg, act = np.stack(dmg, -1), np.stack(act, -1)  # [R, U, P]
        total = act.sum(-1, keepdims=True)
        share = np.where(total > 0, act / np.where(total > 0, total, 1.0), np.nan)  # a dead unit: no share
        scale = np.full(len(batches), _target_var(batches))  # [P]: the task's, so a constant piece is judged too
        r, u, p = (a.ravel() for a in np.meshgrid(*(np.arange(s) for s in dmg.shape), indexing="ij"))
        frames.append(pd.DataFrame({"run": r, "seed": seeds[r], "layer": layer, "unit": u,
                                    "piece": np.asarray(task.pieces, dtype=object)[p],
                                    "damage": dmg[r, u, p].astype(np.float64), "activation": act[r, u, p],
                                    "share": share[r, u, p], "scale": scale[p],
                                    "used": dmg[r, u, p] > USE_TOL * scale[p]}))
    cols = ["run", "seed", "layer", "unit", "piece", "damage", "activation", "share", "scale", "used"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def sharing(use: pd.DataFrame, by: tuple[str, ...] = ("run", "seed", "layer")) -> pd.DataFrame:
    """Per ``by`` group: ``pieces`` (0, 1, 2, ...) and ``fraction`` of the units used by that many."""
    if use.empty:
        return pd.DataFrame(columns=[*by, "pieces", "fraction"])
    n = use.groupby([*by, "unit"], sort=False, observed=True)["used"].sum().rename("pieces").reset_index()
    total = n.groupby(list(by), sort=False, observed=True)["unit"].transform("size")
    out = n.assign(w=1.0 / total).groupby([*by, "pieces"], sort=False, observed=True)["w"].sum()
    return out.rename("fraction").reset_index()


def gradient_cosines(task: Task, method: Method | str, result: RunResult, *, eval_size: int = 256,
                     key: int = CAPACITY_KEY) -> pd.DataFrame:
    """``run, seed, step, piece_a, piece_b, cosine``: between the pieces' mean-loss gradients (over
    every parameter), each pair, at every evaluation when the run kept its parameters there
    (``train(..., snapshots=True)``), else at the final parameters only."""
    method = make_method(method) if isinstance(method, str) else method
    steps = int(result.config.get("steps", 1))
    batches = _pieces(task, eval_size, key)
    grad = _flat_grad(task, method, result.graphdef, steps)
    if result.snapshots is not None:
        points = [(int(t), jax.tree.map(lambda a, e=e: a[:, e], result.snapshots))
                  for e, t in enumerate(result.eval_steps)]
    else:
        points = [(steps, result.params)]
    seeds = result.runs["seed"].to_numpy()
    rows = []
    for step, params in points:
        grads = [np.asarray(grad(params, b), np.float64) for b in batches]  # [R, D] each
        for a, b in itertools.combinations(range(len(batches)), 2):
            ga, gb = grads[a], grads[b]
            cos = np.sum(ga * gb, -1) / np.maximum(np.linalg.norm(ga, axis=-1) * np.linalg.norm(gb, axis=-1), 1e-30)
            rows += [{"run": r, "seed": int(seeds[r]), "step": step, "piece_a": task.pieces[a],
                      "piece_b": task.pieces[b], "cosine": float(cos[r])} for r in range(len(seeds))]
    return pd.DataFrame(rows, columns=["run", "seed", "step", "piece_a", "piece_b", "cosine"])


def _target_var(batches) -> float:
    """The target's variance over every piece's inputs together (mean over outputs)."""
    y = np.concatenate([np.asarray(b.y, np.float64).reshape(len(b.y), -1) for b in batches])
    return float(np.mean(np.var(y, axis=0))) + 1e-12


@functools.lru_cache(maxsize=64)
def _ablated(task: Task, judge: Method, graphdef, steps: int, layer: int, primary: str):
    """jit(params [R], batch, keep [K, U]) -> (primary metric [R, K], mean |h| of the layer [R, U])."""
    ctx = final_ctx(steps)

    def one(params, batch, keep_row):
        out, _ = forward(task, judge, graphdef, params, batch, ctx,
                         lambda i, h: h * keep_row[None, :] if i == layer else None)
        return task_metrics(task, judge.predict(task, out), batch.y)[primary].mean()

    def run(params, batch, keep):
        _, hidden = forward(task, judge, graphdef, params, batch, ctx)
        return jax.vmap(one, in_axes=(None, None, 0))(params, batch, keep), jnp.abs(hidden[layer]).mean(0)

    return jax.jit(jax.vmap(run, in_axes=(0, None, None)))


@functools.lru_cache(maxsize=64)
def _flat_grad(task: Task, judge: Method, graphdef, steps: int):
    """jit(params [R], batch) -> [R, D]: the gradient of the method's mean loss, flattened."""
    ctx = final_ctx(steps)

    def one(params, batch):
        def loss(p):
            out, _ = forward(task, judge, graphdef, p, batch, ctx)
            return jnp.mean(judge.loss(task, out, batch))
        g = jax.grad(loss)(params)
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])

    return jax.jit(jax.vmap(one, in_axes=(0, None)))
