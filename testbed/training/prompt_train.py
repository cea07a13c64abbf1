"""Training sequence models on prompt tasks: many seeds in one compiled program, fresh prompts
every update, and the error against the number of in-context examples on fixed prompts.

`train_prompts` is the prompt-task counterpart of `testbed.train` (whose batches are rows of
``(x, y, piece)``): seeds are vmapped, updates scanned in chunks, prompts drawn inside the
program from ``fold_in(key(seed), step)``; the same seed gives the same numbers.

Evaluation (at ``evals`` points, the last at the end; every shift at the end, the tracked ones,
default in distribution, at each): for each shift, on ``eval_prompts`` fixed prompts (key
`EVAL_KEY` folded with the shift's place in `SHIFTS`), the model predicts the query from the
first N examples for every N = 0..K (the query placed at position N of the sequence; causal
attention keeps the rest out; a model with a ``queries`` method, the transformer, computes every
N in one pass), and the normalized squared error (squared error / d) is averaged over prompts. The
baselines (`testbed.tasks.prompt_baselines`) are computed on the same prompts.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import nnx

from testbed.core.errors import ConfigError, is_count
from testbed.tasks.prompt_baselines import baseline_predictions, baselines_for, normalized_error
from testbed.tasks.prompts import SHIFTS, Prompts, PromptTask
from testbed.training.optim import Optimizer

EVAL_KEY = 0
PROBE_KEY = 10_000  # the probe prompts: fold_in(key(EVAL_KEY), PROBE_KEY), apart from every shift's


@dataclass(frozen=True)
class Curriculum:
    """Garg et al.'s curriculum: the active input dimensions and the prompt length grow during
    training, from ``start_d`` and ``start_points`` by ``add_d`` and ``add_points`` every
    ``every`` updates, up to the task's d and points. Inactive coordinates are 0; a shorter
    prompt is the loss on its first positions only (causal attention: the same thing).
    Evaluation always uses the full task."""

    start_d: int = 1
    start_points: int = 5
    every: int = 500
    add_d: int = 1
    add_points: int = 2

    def __post_init__(self):
        for name in ("start_d", "start_points", "every", "add_d", "add_points"):
            v = getattr(self, name)
            low = 0 if name.startswith("add") else 1
            if not is_count(v, low):
                raise ConfigError(f"curriculum.{name}: expected a whole number >= {low}, got {v!r}")

    def at(self, t, d: int, points: int):
        """(active dims, prompt length) at update t (traced)."""
        stage = t // self.every
        return (jnp.minimum(d, self.start_d + self.add_d * stage),
                jnp.minimum(points, self.start_points + self.add_points * stage))


@dataclass
class PromptResult:
    """What `train_prompts` returns.

    Attributes:
        history: ``seed, step, shift, n, error``: mean normalized error at the query with n
            in-context examples.
        baselines: ``shift, baseline, n, error`` on the same evaluation prompts.
        loss: [seeds, steps] the training loss at every update.
        config: the call's settings. timing: compile and run seconds.
        params: the trained parameters, [seeds, ...] per leaf; ``graphdef`` rebuilds a model.
        closest: which baseline the trained model behaves like, per seed, shift and N: each
            baseline's mean squared distance (/ d) to the model's predictions on the same
            prompts, and the fraction of prompts on which it is the closest (the analogue of
            the testbed's OOD attribution). Empty without baselines.
        probes: ``seed, step, prompt, n, prediction, target``: the model's prediction of each
            probe prompt's query from its first n examples (n = 1, d, K), at every evaluation.
    """

    history: pd.DataFrame
    baselines: pd.DataFrame
    loss: np.ndarray
    config: dict
    params: object = None
    graphdef: object = None
    closest: pd.DataFrame | None = None
    probes: pd.DataFrame | None = None
    timing: dict = field(default_factory=dict)


def query_predictions(apply, params, p: Prompts, queries=None) -> jax.Array:
    """[n, K + 1]: the model's prediction of the query from the first N examples, every N:
    ``queries(params, x, y, xq)`` where the model computes them in one pass (a module's
    ``queries`` method, e.g. the transformer's), else one ``apply`` per N with the query at
    position N."""
    if queries is not None:
        return queries(params, p.x, p.y, p.xq)
    n, k, d = p.x.shape
    x = jnp.concatenate([p.x, jnp.zeros((n, 1, d), p.x.dtype)], axis=1)  # room for the query after all K
    y = jnp.concatenate([p.y, jnp.zeros((n, 1), p.y.dtype)], axis=1)

    def at(m):
        xm = x.at[:, m].set(p.xq)  # the query at position m: positions after it cannot be seen
        return apply(params, xm, y)[:, m]

    return jax.vmap(at, out_axes=1)(jnp.arange(k + 1))


def train_prompts(task: PromptTask, model, *, steps: int = 2000, batch_size: int = 64,
                  seeds: int | Sequence[int] = 2, optimizer: Optimizer | None = None, loss_at: str | None = None,
                  evals: int = 5, eval_prompts: int = 256, shifts: Sequence[str] = ("none",),
                  baselines: Sequence[str] | str | None = "auto",
                  curriculum: Curriculum | None = None, probe_prompts: int = 4,
                  track: Sequence[str] | None = ("none",), quiet: bool = True, on_progress=None) -> PromptResult:
    """Train ``model`` (`testbed.models.sequence.Transformer` or `LinearAttention`) on fresh
    prompts of ``task``.

    Args:
        steps: updates. batch_size: prompts per update. seeds: count or list.
        optimizer: default Adam, lr 1e-3.
        loss_at: ``all`` (the squared error at every input position of the prompt and its
            query, K + 1 of them, as in Garg et al.) or ``last`` (only the query after all K
            examples); default the model's own (``model.loss_at``).
        evals: evaluation points, evenly spaced, the last one at the end (at most ``steps``).
        eval_prompts: fixed evaluation prompts per shift (each shift's own, the same whatever else
            is evaluated). shifts: which (`SHIFTS`), all evaluated at the end.
        track: the shifts also evaluated at every earlier evaluation (default in distribution;
            None: every shift). The cost of an evaluation grows with K^2 per shift.
        baselines: which baselines to compute on the evaluation prompts (``auto``: the common
            ones and the class's own, `baselines_for`; None: none).
        curriculum: grow the active dimensions and the prompt length during training (`Curriculum`).
        probe_prompts: fixed in-distribution prompts whose query predictions (at N = 1, d and
            K) are recorded at every evaluation (``PromptResult.probes``; 0: none).
        on_progress: called (updates done, steps) after each chunk of updates.
    """
    loss_at = loss_at or getattr(model, "loss_at", "all")
    if isinstance(baselines, str):
        if baselines != "auto":
            raise ConfigError(f"baselines: {baselines!r}; expected 'auto', None or a list of baseline names")
        baselines = baselines_for(task)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ConfigError("seeds: expected a positive count or a non-empty list")
    for name, v in (("steps", steps), ("batch_size", batch_size), ("evals", evals), ("eval_prompts", eval_prompts)):
        if not is_count(v):
            raise ConfigError(f"{name}: expected an integer >= 1, got {v!r}")
    if not is_count(probe_prompts, 0):
        raise ConfigError(f"probe_prompts: expected an integer >= 0, got {probe_prompts!r}")
    if loss_at not in ("all", "last"):
        raise ConfigError(f"loss_at: {loss_at!r}; accepted: all, last")
    for s in shifts:
        if s not in SHIFTS:
            raise ConfigError(f"shifts: {s!r} is unknown; accepted: {', '.join(SHIFTS)}")
    optimizer = optimizer or Optimizer()
    tx = optimizer.build(optimizer.lr, optimizer.weight_decay, steps)
    d = task.d
    abstract = nnx.eval_shape(lambda: model.build(d, rngs=nnx.Rngs(0)))  # structure only: nothing runs
    graphdef = nnx.graphdef(abstract)

    def apply(params, x, y):
        return nnx.merge(graphdef, params)(x, y)

    queries = None  # a model that predicts every N's query in one pass (`query_predictions`)
    if callable(getattr(abstract, "queries", None)):
        def queries(params, x, y, xq):
            return nnx.merge(graphdef, params).queries(x, y, xq)

    def init(key):
        k_init, k_data = jax.random.split(key)
        params = nnx.state(model.build(d, rngs=nnx.Rngs(k_init)))
        return params, tx.init(params), k_data

    def loss_fn(params, p: Prompts, length):
        # The sequence a prompt and its query make: K + 1 inputs, so every N = 0..K is trained;
        # a curriculum's shorter prompts: the first `length` + 1 positions.
        x = jnp.concatenate([p.x, p.xq[:, None]], axis=1)
        y = jnp.concatenate([p.y, p.yq[:, None]], axis=1)
        err = (apply(params, x, y) - y) ** 2
        if loss_at == "last":
            return jnp.take(err, length, axis=1).mean()
        keep = (jnp.arange(err.shape[1]) <= length).astype(err.dtype)
        return (err * keep[None]).sum() / (keep.sum() * err.shape[0])

    # evaluation steps, evenly spaced, the last at `steps` (fewer than `evals` when steps < evals)
    bounds = sorted({b for i in range(evals) if (b := round(steps * (i + 1) / evals)) > 0})

    def run_chunk(params, opt_state, k_data, start, length):
        def step(c, t):
            params, opt_state = c
            active, length = (None, task.points) if curriculum is None else curriculum.at(t, d, task.points)
            p = task.sample(jax.random.fold_in(k_data, t), batch_size, active=active)
            loss, grads = jax.value_and_grad(loss_fn)(params, p, length)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss

        (params, opt_state), losses = jax.lax.scan(step, (params, opt_state), start + jnp.arange(length))
        return params, opt_state, losses

    # each shift's prompts are keyed by the shift (its place in SHIFTS), whatever else is evaluated
    eval_sets = {s: task.sample(jax.random.fold_in(jax.random.key(EVAL_KEY), SHIFTS.index(s)), eval_prompts, s)
                 for s in shifts}
    tracked = [s for s in (shifts if track is None else track) if s in eval_sets]

    probe_set = task.sample(jax.random.fold_in(jax.random.key(EVAL_KEY), PROBE_KEY), max(probe_prompts, 1))
    probe_ns = sorted({1, min(d, task.points), task.points})

    def evaluate(params, which):  # (errors [K + 1] per shift, the predictions they come from, probe predictions)
        preds = {s: query_predictions(apply, params, eval_sets[s], queries) for s in which}
        probe = query_predictions(apply, params, probe_set, queries)[:, jnp.array(probe_ns)] if probe_prompts else None
        return {s: normalized_error(preds[s], eval_sets[s]).mean(0) for s in which}, preds, probe

    t0 = time.perf_counter()
    keys = jnp.stack([jax.random.key(s) for s in seed_list])
    params, opt_state, k_data = jax.jit(jax.vmap(init))(keys)
    chunk_fns = {}
    eval_all = jax.jit(jax.vmap(lambda p: evaluate(p, tuple(shifts))))
    eval_tracked = jax.jit(jax.vmap(lambda p: evaluate(p, tuple(tracked))))
    rows, probe_rows, losses, start, compile_s = [], [], [], 0, 0.0
    targets = np.asarray(probe_set.yq)
    for end in bounds:
        length = end - start
        if length not in chunk_fns:
            tc = time.perf_counter()
            chunk_fns[length] = jax.jit(jax.vmap(lambda p, o, k, s, length=length: run_chunk(p, o, k, s, length),
                                                 in_axes=(0, 0, 0, None))).lower(
                params, opt_state, k_data, jnp.int32(start)).compile()
            compile_s += time.perf_counter() - tc
        params, opt_state, lo = chunk_fns[length](params, opt_state, k_data, jnp.int32(start))
        losses.append(np.asarray(lo))
        start = end
        # every shift at the end (its predictions: `closest`), the tracked ones before
        errs, final, probe = jax.device_get((eval_all if end == bounds[-1] else eval_tracked)(params))
        for s, e in errs.items():
            for i, seed in enumerate(seed_list):
                rows += [{"seed": seed, "step": end, "shift": s, "n": n, "error": float(v)}
                         for n, v in enumerate(e[i])]
        probe_rows += [{"seed": seed, "step": end, "prompt": j, "n": n, "prediction": float(probe[i, j, c]),
                        "truth": float(targets[j])}
                       for i, seed in enumerate(seed_list) for j in range(probe_prompts)
                       for c, n in enumerate(probe_ns)]
        if on_progress is not None:
            on_progress(end, steps)
        if not quiet:
            print(f"{task.name} step {end}/{steps}: error with all K examples "
                  + ", ".join(f"{s} {float(e[:, -1].mean()):.4f}" for s, e in errs.items()))
    wall = time.perf_counter() - t0
    base_rows, near_rows = [], []
    if baselines:
        for s in shifts:
            rows_s, preds = _baselines_on(task, s, eval_prompts, tuple(baselines))
            base_rows += rows_s
            near_rows += _closest(final[s], preds, seed_list, s, d)
    config = {"task": task.name, "d": d, "points": task.points, "noise": task.noise, "model": model.name,
              "model_config": vars(model).copy(), "optimizer": vars(optimizer).copy(), "steps": steps,
              "batch_size": batch_size, "seeds": seed_list, "loss_at": loss_at, "shifts": list(shifts),
              "eval_prompts": eval_prompts, "probe_prompts": probe_prompts, "baselines": list(baselines or []),
              "curriculum": vars(curriculum).copy() if curriculum else None}
    return PromptResult(pd.DataFrame(rows), pd.DataFrame(base_rows), np.concatenate(losses, axis=1), config,
                        params=params, graphdef=graphdef, closest=pd.DataFrame(near_rows, columns=CLOSEST_COLUMNS),
                        probes=pd.DataFrame(probe_rows, columns=PROBE_COLUMNS),
                        timing={"compile_s": compile_s, "wall_s": wall})


@functools.lru_cache(maxsize=32)
def _baselines_on(task: PromptTask, shift: str, eval_prompts: int, names: tuple[str, ...]):
    """(error rows, predictions) of the baselines on a shift's evaluation prompts: the same for
    every model trained on the task, so cells of one suite compute them once per process."""
    p = task.sample(jax.random.fold_in(jax.random.key(EVAL_KEY), SHIFTS.index(shift)), eval_prompts, shift)
    preds = {b: np.asarray(v) for b, v in baseline_predictions(p, names).items()}
    rows = [{"shift": shift, "baseline": b, "n": n, "error": float(v)} for b, pred in preds.items()
            for n, v in enumerate(np.asarray(normalized_error(pred, p).mean(0)))]
    return rows, preds


CLOSEST_COLUMNS = ["seed", "shift", "n", "baseline", "distance", "fraction"]
PROBE_COLUMNS = ["seed", "step", "prompt", "n", "prediction", "truth"]


def _closest(model_pred: np.ndarray, preds: dict[str, np.ndarray], seeds, shift: str, d: int) -> list[dict]:
    """Per seed and N: each baseline's mean squared distance (/ d) to the model's predictions, and
    the fraction of prompts on which it is the closest (ties to the first listed)."""
    names = list(preds)
    stack = np.stack([preds[b] for b in names])  # [B, n, K + 1]
    rows = []
    for i, seed in enumerate(seeds):
        dist = (stack - model_pred[i][None]) ** 2 / d  # [B, n, K + 1]
        nearest = np.argmin(dist, axis=0)  # [n, K + 1]
        for n in range(dist.shape[2]):
            for j, b in enumerate(names):
                rows.append({"seed": seed, "shift": shift, "n": n, "baseline": b,
                             "distance": float(dist[j, :, n].mean()), "fraction": float((nearest[:, n] == j).mean())})
    return rows
