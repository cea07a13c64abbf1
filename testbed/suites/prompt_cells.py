"""Suite cells of prompt tasks (in-context learning): a suite whose grid names ``prompt_tasks``
trains sequence models with `testbed.train_prompts` and stores tables every reader knows::

    [grid]
    prompt_tasks = ["icl_linear", "icl_sparse_linear"]     # icl_<function class>, or "all"
    models = [{ name = "transformer", width = 64, depth = 2 }, { name = "linear_attention" }]
    optimizers = [{ name = "adam", lr = 1e-3 }]
    methods = ["mse"]             # optional; { name = "mse", loss_at = "last" } trains on the last query

    [prompts]                     # settings of every prompt task (all optional)
    d = 5                         # task parameters: d, points, noise (per task: [overrides.T] params)
    points = 20
    shifts = ["none", "scale_2", "orthogonal"]      # evaluated; "none" first is added if missing
    baselines = "auto"            # the common ones and the class's own, or a list
    eval_prompts = 256
    probe_prompts = 4
    curriculum = { start_d = 2, start_points = 10, every = 500 }

``[train]`` gives steps, batch_size and evals. A cell's ``history`` holds, per shift (split
``train`` for in-distribution prompts, the shift's name for the others), the normalized error
of the query from all the prompt's examples as the ``mse`` metric, so the OOD comparison, the
loss curves and the plateau reading work on prompt cells unchanged; the in-context tables
(`testbed.analyses.icl`) hold the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from testbed.core.columns import RUN, SWEPT
from testbed.core.errors import TestbedError, is_count
from testbed.suites.cells import (
    TRAIN_FIELDS,
    Cell,
    _components,
    _keys,
    _seeds,
    _train_fields,
    grid_tasks,
    task_overrides,
    thaw,
)

PROMPT_FIELDS = {"d", "points", "noise", "shifts", "baselines", "eval_prompts", "probe_prompts", "curriculum"}
TASK_PARAMS = ("d", "points", "noise")
TRAIN_USED = ("steps", "batch_size", "evals")  # of [train]; the others are about piecewise tasks
PROMPT_METHODS = ["mse"]  # the squared error, where the model's `loss_at` (or the method's) says
OVERRIDES = {"params", "seeds", "methods", "models", "optimizers", *TRAIN_USED}


def prompt_suite_cells(spec: dict, grid: dict, train: dict, err: Callable) -> list[Cell]:
    """The cells of a suite over ``grid.prompt_tasks``; raises the suite's error naming the field."""
    from testbed.core.catalog import names  # not the registries': those import JAX
    from testbed.core.registry import freeze

    if "tasks" in grid:
        raise err("grid.tasks", "a suite has grid.tasks (piecewise tasks) or grid.prompt_tasks (in-context "
                  "tasks), not both")
    for hp in SWEPT:
        if hp in grid:
            raise err(f"grid.{hp}", "prompt tasks do not sweep hyperparameters inside a cell; list one optimizer "
                      "per value instead")
    unused = [k for k in spec.get("train", {}) if k not in TRAIN_USED]
    if unused:
        raise err(f"train.{unused[0]}", f"does not apply to prompt tasks; accepted: {', '.join(TRAIN_USED)} "
                  "(and [prompts] for the rest)")
    if spec.get("analyses"):
        raise err("analyses", "prompt tasks run the in-context analysis on every cell; name none", spec["analyses"])
    tasks = grid_tasks(grid, "prompt_tasks", names("prompt_task"), err)
    prompts = spec.get("prompts", {})
    if not isinstance(prompts, dict):
        raise err("prompts", "expected a [prompts] table", prompts)
    _keys(prompts, PROMPT_FIELDS, "prompts", err)
    settings = _settings(prompts, err)
    defaults = {k: prompts[k] for k in TASK_PARAMS if k in prompts}
    overrides = task_overrides(spec, tasks, "prompt_tasks", OVERRIDES, err)
    cells = []
    for t in tasks:
        o = overrides.get(t, {})
        where = f"overrides.{t}" if t in overrides else "grid"
        fields = {k: v for k, v in {**train, **_train_fields({k: v for k, v in o.items() if k in TRAIN_FIELDS},
                                                             where, err)}.items() if k in TRAIN_USED}
        seeds = _seeds(o.get("seeds", spec.get("seeds", 4)), f"overrides.{t}.seeds" if "seeds" in o else "seeds", err)
        params = o.get("params", {})
        if not isinstance(params, dict):
            raise err(f"overrides.{t}.params", "expected a table of task parameters", params)
        params = {**defaults, **params}
        methods = _components(o.get("methods", grid.get("methods", PROMPT_METHODS)), f"{where}.methods",
                              PROMPT_METHODS, err)
        models = _components(o.get("models", grid.get("models", [{"name": "transformer"}])), f"{where}.models",
                             names("prompt_model"), err)
        optimizers = _components(o.get("optimizers", grid.get("optimizers", [{"name": "adam", "lr": 1e-3}])),
                                 f"{where}.optimizers", names("optimizer"), err)
        for me, mo, op in ((me, mo, op) for me in methods for mo in models for op in optimizers):
            cells.append(Cell(t, tuple(sorted(freeze(params)[1:])), me, mo, op,
                              tuple(sorted({**fields, **settings}.items())), seeds, (), (), kind="prompts"))
    return cells


def _settings(prompts: dict, err: Callable) -> dict[str, Any]:
    """The [prompts] settings a cell is keyed by (hashable), with their defaults."""
    from testbed.core.catalog import names
    from testbed.core.registry import freeze

    SHIFTS, BASELINES = names("shift"), names("baseline")  # noqa: N806  (the modules' names for them)
    shifts = prompts.get("shifts", ["none"])
    if not isinstance(shifts, list) or not shifts or not all(isinstance(s, str) for s in shifts):
        raise err("prompts.shifts", f"expected a list of shift names; accepted: {', '.join(SHIFTS)}", shifts)
    for s in shifts:
        if s not in SHIFTS:
            raise err("prompts.shifts", f"unknown shift {s!r}; accepted: {', '.join(SHIFTS)}", s)
    shifts = ["none", *[s for s in dict.fromkeys(shifts) if s != "none"]]  # in distribution first
    baselines = prompts.get("baselines", "auto")
    if baselines != "auto":
        if not isinstance(baselines, list) or not all(isinstance(b, str) and b in BASELINES for b in baselines):
            raise err("prompts.baselines", f"expected \"auto\" or a list of baselines; accepted: "
                      f"{', '.join(BASELINES)}", baselines)
        baselines = tuple(baselines)
    out = {"shifts": tuple(shifts), "baselines": baselines}
    for k, low, default in (("eval_prompts", 1, 256), ("probe_prompts", 0, 4)):
        v = prompts.get(k, default)
        if not is_count(v, low):
            raise err(f"prompts.{k}", f"expected an integer >= {low}", v)
        out[k] = v
    if "curriculum" in prompts:
        cur = prompts["curriculum"]
        if not isinstance(cur, dict):
            raise err("prompts.curriculum", "expected a table (start_d, start_points, every, add_d, add_points)", cur)
        out["curriculum"] = freeze(cur)
    return out


def prompt_call(cell: Cell):
    """(task, model config, `testbed.train_prompts` keywords) of a prompt cell."""
    from testbed.models.sequence import make_prompt_model
    from testbed.tasks.prompts import prompt_task
    from testbed.training.optim import make_optimizer
    from testbed.training.prompt_train import Curriculum

    task = prompt_task(cell.task, **dict(cell.params))
    train = {k: thaw(v) for k, v in cell.train}
    model_kw = cell.model.options
    shifts = list(train["shifts"])
    if "max_points" not in model_kw:
        cls = type(make_prompt_model(cell.model.name))
        model_kw["max_points"] = cls.points_for(task.points, max(task.points_for(s) for s in shifts))
    model = make_prompt_model(cell.model.name, **model_kw)
    baselines = train["baselines"] if train["baselines"] == "auto" else list(train["baselines"])
    kwargs = {"steps": train["steps"], "batch_size": train["batch_size"], "evals": train["evals"],
              "seeds": list(cell.seeds), "shifts": shifts, "baselines": baselines,
              "eval_prompts": train["eval_prompts"], "probe_prompts": train["probe_prompts"],
              "optimizer": make_optimizer(cell.optimizer.name, **cell.optimizer.options),
              "loss_at": cell.method.options.get("loss_at"),
              "curriculum": Curriculum(**train["curriculum"]) if "curriculum" in train else None}
    return task, model, kwargs


def check_prompt_cells(cells: list[Cell], err: Callable) -> None:
    """Build each prompt cell's task, model and optimizer so bad values fail before anything runs."""
    for c in cells:
        try:
            task, model, kw = prompt_call(c)
            kw["optimizer"].check(kw["steps"])
        except TestbedError as e:
            raise err(f"task {c.task!r}", str(e)) from None
        extra = set(c.method.options) - {"loss_at"}
        if extra:
            raise err(f"method of task {c.task!r}", f"unknown field {sorted(extra)[0]!r}; accepted: loss_at")
        if kw["loss_at"] not in (None, "all", "last"):
            raise err(f"method of task {c.task!r}", f"loss_at={kw['loss_at']!r}; accepted: all, last")
        longest = max(task.points_for(s) for s in kw["shifts"])
        need = type(model).points_for(task.points, longest)
        if model.max_points < need and model.loss_at == "all":
            raise err(f"model of task {c.task!r}", f"max_points={model.max_points} is too few for prompts of "
                      f"{longest} examples and the query; give at least {need} (or leave it out)")
        if "orthogonal" in kw["shifts"] and task.d < 2:
            raise err(f"prompts.shifts of task {c.task!r}", "'orthogonal' needs d >= 2")


def run_prompt_cell(cell: Cell, on_progress: Callable[[int, int], None] | None = None) -> dict[str, pd.DataFrame]:
    """Train one prompt cell; its tables (see the module docstring) and ``_meta``."""
    from testbed.core.platform import provenance
    from testbed.training.prompt_train import train_prompts

    task, model, kw = prompt_call(cell)
    t0 = time.perf_counter()
    r = train_prompts(task, model, on_progress=on_progress, **kw)
    seeds = list(cell.seeds)
    opt = kw["optimizer"]
    run_cols = pd.DataFrame({"run": np.arange(len(seeds)), "seed": seeds, "lr": float(opt.lr),
                             "weight_decay": float(opt.weight_decay), "init_scale": 1.0})

    def with_runs(df: pd.DataFrame) -> pd.DataFrame:
        return run_cols.merge(df, on="seed", how="right", validate="one_to_many")[[*RUN, *[c for c in df if c != "seed"]]]

    err = with_runs(r.history)
    last = {s: task.points_for(s) for s in kw["shifts"]}
    full = err[err["n"] == err["shift"].map(last)].assign(metric="mse")
    # the training objective on the in-distribution evaluation prompts (squared error, not / d)
    ind = err[err["shift"] == "none"]
    if r.config["loss_at"] == "last":
        ind = ind[ind["n"] == task.points]
    loss = (ind.groupby([*RUN, "step"], sort=False)["error"].mean() * task.d).reset_index().assign(
        shift="none", metric="loss")
    rows = pd.concat([loss, full], ignore_index=True)
    history = pd.DataFrame({**{c: rows[c].to_numpy() for c in RUN}, "step": rows["step"].to_numpy(),
                            "split": pd.Categorical(np.where(rows["shift"] == "none", "train", rows["shift"]),
                                                    categories=["train", *[s for s in kw["shifts"] if s != "none"]]),
                            "piece": pd.Categorical(["all"] * len(rows)),
                            "metric": pd.Categorical(rows["metric"], categories=["mse", "loss"]),
                            "value": rows["error"].to_numpy(np.float64)})
    history = history.sort_values(["run", "step", "split", "metric"], kind="stable", ignore_index=True)
    steps = r.loss.shape[1]
    batch = pd.DataFrame({**{c: np.repeat(run_cols[c].to_numpy(), steps) for c in RUN},
                          "step": np.tile(np.arange(1, steps + 1), len(seeds)),
                          "value": r.loss.ravel().astype(np.float64)})
    bad = ~np.isfinite(r.loss)
    runs = run_cols.assign(diverged_step=np.where(bad.any(1), bad.argmax(1) + 1, -1), halted_step=-1)
    out = {"history": history, "runs": runs, "batch_loss": batch, "icl_error": err.assign(d=task.d),
           "icl_baselines": r.baselines.assign(d=task.d), "icl_closest": with_runs(r.closest),
           "icl_probes": with_runs(r.probes)}
    timing = {"compile_wait_s": r.timing["compile_s"], "run_s": r.timing["wall_s"] - r.timing["compile_s"],
              "analyses_s": 0.0, "total_s": time.perf_counter() - t0}
    out["_meta"] = pd.DataFrame([{"timing": timing, "provenance": {**provenance(), "config": r.config},
                                  "facts": {"target": "scalar", "primary": "mse", "zero_loss": 0.0}}])
    return out
