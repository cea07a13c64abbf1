"""Training in stages: one run that trains under one method, then another (or on one split,
then another), as when fine-tuning or RLHF begins after pre-training.

`train_stages` runs each `Stage` as one `testbed.train` call (one compiled program per
stage), each stage starting from the previous stage's final parameters with a fresh
optimizer state and its own stream of training batches (``data_stream`` = the stage's
index), and returns one `RunResult` with a continuous history: steps count on from stage
to stage, and ``RunResult.stages`` says where each stage starts.

A later stage must keep the model's shape: a method that changes the model's inputs
(``Extras.extra_inputs``, e.g. ``myopic``'s epoch input) or its output width
(``head_dim``) is refused before anything trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from testbed.core.errors import ConfigError, is_count

# (stage_method, stage_optimizer: not "method", "optimizer", which name a suite cell's columns)
STAGE_COLUMNS = ["stage", "name", "start", "steps", "stage_method", "stage_optimizer", "split"]


@dataclass(frozen=True)
class Stage:
    """One stage of a staged run.

    Attributes:
        steps: training updates in this stage.
        method: a method or name; None: the previous stage's (the first stage's default: ``mse``).
        optimizer: an optimizer or name; None: the previous stage's (first: the default Adam).
        split: the task split this stage's training batches come from.
        name: a label for tables and figures (default ``stage <i>: <method>``).
        lr: this stage's learning rate(s); None: the optimizer's (a list sweeps, as in `train`).
    """

    steps: int
    method: Any = None
    optimizer: Any = None
    split: str = "train"
    name: str = ""
    lr: float | Sequence[float] | None = None


def train_stages(task, stages: Sequence[Stage | dict], model=None, *, seeds: int | Sequence[int] = 4,
                 batch_size: int = 256, weight_decay=None, init_scale=None, init_params=None, evals: int = 50,
                 eval_spacing: str = "linear", eval_size: int = 1024, probe_points: int = 256,
                 quiet: bool = False, on_progress=None):
    """Train the same runs through several stages, one after another.

    Args:
        task: a Task or a registered task name.
        stages: `Stage` records (or dicts of their fields), in order.
        model: the model config or name, shared by every stage.
        seeds, batch_size, weight_decay, init_scale, init_params, eval_spacing, eval_size,
            probe_points, quiet: as in `testbed.train` (``init_scale`` and
            ``init_params`` apply to the first stage).
        evals: evaluations in all, shared out over the stages by their steps (at least 2 each).
        on_progress: called with (steps done in all stages, total steps).

    Returns:
        A `RunResult` whose history, batch losses, traces and probe predictions run on
        from stage to stage (step 0 of a later stage is the previous stage's last
        evaluation, so it is not repeated); ``params`` are the last stage's;
        ``stages`` is a table (stage, name, start, steps, stage_method, stage_optimizer,
        split);
        ``config["stages"]`` the configs of the stage calls.

    Raises:
        ConfigError: a stage that changes the model's inputs or outputs, an unknown split,
            or bad steps, naming the stage.
    """
    from testbed.tasks.registry import make_task
    from testbed.training.engine import train

    task = make_task(task) if isinstance(task, str) else task
    plan = plan_stages(task, stages)
    total = sum(s.steps for s in plan)
    shares = [max(2, round(evals * s.steps / total)) for s in plan]
    results, start, params = [], 0, init_params
    for i, (s, n_eval) in enumerate(zip(plan, shares, strict=True)):
        def progress(done, steps, start=start):
            if on_progress is not None:
                on_progress(start + done, total)
        r = train(task, s.method, model, s.optimizer, steps=s.steps, batch_size=batch_size, seeds=seeds, lr=s.lr,
                  weight_decay=weight_decay, init_scale=init_scale if i == 0 else None, init_params=params,
                  evals=n_eval, eval_spacing=eval_spacing, eval_size=eval_size, probe_points=probe_points,
                  train_split=s.split, data_stream=i, quiet=quiet, on_progress=progress)
        results.append((start, r))
        params, start = r.params, start + s.steps
    table = pd.DataFrame([{"stage": i, "name": s.name, "start": st, "steps": s.steps, "stage_method": s.method.name,
                           "stage_optimizer": r.config["optimizer"]["name"], "split": s.split}
                          for i, (s, (st, r)) in enumerate(zip(plan, results, strict=True))], columns=STAGE_COLUMNS)
    return _join(results, table)


def plan_stages(task, stages: Sequence[Stage | dict]) -> list[Stage]:
    """Check stages against a task before anything trains, and resolve them: built methods,
    inherited methods and optimizers, names.

    Raises:
        ConfigError: bad steps, an unknown split, or a stage whose method changes the
            model's inputs or outputs, naming the stage.
    """
    from testbed.methods.base import make_method

    stages = [s if isinstance(s, Stage) else _stage(s, i) for i, s in enumerate(stages)]
    if not stages:
        raise ConfigError("stages: expected at least one stage")
    plan = []
    method, optimizer = "mse", None
    for i, s in enumerate(stages):
        if not is_count(s.steps):
            raise ConfigError(f"stages[{i}].steps: expected an integer >= 1, got {s.steps!r}")
        if s.split not in task.splits:
            raise ConfigError(f"stages[{i}].split: task {task.name!r} has no split {s.split!r}; "
                              f"splits: {', '.join(task.splits)}")
        method = make_method(s.method) if s.method is not None else make_method(method)
        optimizer = s.optimizer if s.optimizer is not None else optimizer
        plan.append(replace(s, method=method, optimizer=optimizer,
                            name=s.name or f"stage {i}: {method.name}"))
    first = plan[0].method
    shape = (first.extras.extra_inputs, first.head_dim(task))
    for i, s in enumerate(plan[1:], start=1):
        got = (s.method.extras.extra_inputs, s.method.head_dim(task))
        if got != shape:
            raise ConfigError(
                f"stages[{i}].method: {s.method.name!r} changes the model's shape (extra inputs, outputs) from "
                f"{shape} to {got}; a stage keeps the model of the stages before it. Start a new run instead, "
                f"or use a method with the same inputs and outputs as {first.name!r}")
        if s.method.extras.check is not None:
            s.method.extras.check(task, s.steps)
    return plan


def _stage(d: dict, i: int) -> Stage:
    if not isinstance(d, dict):
        raise ConfigError(f"stages[{i}]: expected a Stage or a table of its fields, got {d!r}")
    fields = set(Stage.__dataclass_fields__)
    unknown = sorted(set(d) - fields)
    if unknown:
        raise ConfigError(f"stages[{i}]: unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(fields))}")
    if "steps" not in d:
        raise ConfigError(f"stages[{i}].steps: missing; every stage needs its number of updates")
    return Stage(**d)


def _join(results: list[tuple[int, Any]], table: pd.DataFrame):
    """One RunResult from the stage results, steps running on."""
    first = results[0][1]
    last = results[-1][1]
    hist, evals, preds, losses, traces = [], [], [], [], {}
    for i, (start, r) in enumerate(results):
        keep = slice(None) if i == 0 else slice(1, None)  # a later stage's step 0 = the last evaluation
        h = r.history if i == 0 else r.history[r.history["step"] > 0]
        hist.append(h.assign(step=h["step"] + start))
        evals.append(np.asarray(r.eval_steps)[keep] + start)
        preds.append(r.predictions[:, keep])
        losses.append(r.batch_loss)
        for k, v in r.traces.items():
            traces.setdefault(k, []).append((i, v))
    n_steps = [r.batch_loss.shape[1] for _, r in results]
    joined_traces = {}
    for k, parts in traces.items():  # a trace a stage does not record is NaN over that stage
        have = dict(parts)
        joined_traces[k] = np.concatenate([have.get(i, np.full((first.batch_loss.shape[0], n), np.nan))
                                           for i, n in enumerate(n_steps)], axis=1)
    if len({p.shape[2:] for p in preds}) > 1:
        raise ConfigError("stages: the methods' predictions differ in shape; they cannot share one history")
    history = pd.concat(hist, ignore_index=True)
    for c in ("method", "optimizer"):
        if c in history.columns:
            history[c] = history[c].astype(str).astype("category")
    runs = first.runs.copy()
    for col in ("diverged_step", "halted_step"):  # the first stage it happened in, in steps overall
        if col in runs.columns:
            vals = np.full(len(runs), -1)
            for start, r in results:
                v = r.runs[col].to_numpy()
                vals = np.where((vals < 0) & (v >= 0), v + start, vals)
            runs[col] = vals
    config = {**first.config, "steps": int(sum(n_steps)), "stages": [r.config for _, r in results]}
    timing = {k: sum(r.timing.get(k, 0) for _, r in results) for k in ("compile_s", "wall_s", "run_s")}
    timing.update(runs=first.timing.get("runs"), devices=first.timing.get("devices"))
    return replace(last, config=config, history=history, runs=runs, eval_steps=np.concatenate(evals),
                   predictions=np.concatenate(preds, axis=1), batch_loss=np.concatenate(losses, axis=1),
                   traces=joined_traces, profile=None, timing=timing, stages=table)
