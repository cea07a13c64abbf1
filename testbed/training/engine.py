"""The training engine: every seed and swept hyperparameter in one compiled program.

``train(task, method, model, optimizer, ...)`` builds, once per static
configuration, a function ``run(key, hparams)`` that initializes a model, then
``lax.scan``s over training steps (fresh data sampled inside the scan, evaluations
at fixed steps written into buffers in the carry). It is ``vmap``ped over runs
(seeds x hyperparameter grid) and the run axis is sharded over every local device.
The scan is cut into equal chunks so the host can show progress between them; the
numbers do not depend on the chunking (data keys are ``fold_in(key, step)``).

A run whose loss or parameters become non-finite is frozen at that step and its
later evaluations are NaN; the other runs carry on. A method may also halt a run
(`Extras.halt`, e.g. a model that shuts itself down): its updates stop, its
evaluations go on.

Per-update scalars (the training-batch loss and a method's aux values) leave each
chunk as scan outputs, not through the carry.
"""

from __future__ import annotations

import functools
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from testbed.core.columns import SWEPT
from testbed.core.errors import ConfigError, is_count
from testbed.core.platform import provenance
from testbed.methods.base import Ctx, Method, make_method
from testbed.models.modules import MLP
from testbed.models.registry import ModelConfig, make_model
from testbed.tasks.metrics import metric_names, task_metrics
from testbed.tasks.registry import make_task, task_values
from testbed.tasks.task import Batch, Task, raw_grid
from testbed.training import executables, memory
from testbed.training.optim import Optimizer, make_optimizer
from testbed.training.result import RunResult, build_history

MAX_CHUNKS = 20  # progress granularity: the scan is cut into at most this many calls
OOD_PROBES = 128  # probe points sampled from each OOD split, after the grid
EVAL_KEY = 0  # seed of the fixed evaluation sets, shared by every run: split i is drawn with fold_in(key(EVAL_KEY), i)
PROBE_KEY = 1  # seed of the OOD probe samples: OOD split i is drawn with fold_in(key(PROBE_KEY), i)


HParams = NamedTuple("HParams", [(name, jax.Array) for name in SWEPT])
HParams.__doc__ = """Per-run continuous hyperparameters, one field per `testbed.core.columns.SWEPT` column
(lr, weight_decay, init_scale; vmapped: each leaf is [runs] or a scalar)."""


class EvalData(NamedTuple):
    """Fixed evaluation inputs shared by every run (replicated on every device)."""

    batch: Batch  # every split's eval points, concatenated: [N, ...]
    group: jax.Array  # [N, G] averaging weights: column split*(pieces+1)+piece, last = "all"
    probe: Batch  # probe inputs for prediction trajectories: [Pn, ...]


class Carry(NamedTuple):
    """The scan carry of one run."""

    params: Any
    opt_state: Any
    data_key: jax.Array
    diverged_at: jax.Array  # int32 step of the first non-finite update, -1 if none
    halted_at: jax.Array  # int32 step at which the method halted the run, -1 if none
    metrics: jax.Array  # [E, G, M] evaluation buffer
    preds: jax.Array  # [E, Pn, ...] probe predictions
    profile: jax.Array  # [E, G, K, Q] the method's profile (K = Q = 0 without one)
    snaps: Any = None  # the parameters at every evaluation, [E, ...] per leaf (``snapshots=True``), else None


@dataclass(frozen=True)
class Static:
    """Everything that decides shapes and code paths: the compile-cache key."""

    task: Task
    method: Method
    model: ModelConfig
    optimizer: Optimizer  # structure only (swept numbers zeroed)
    steps: int
    batch_size: int
    chunk: int
    n_chunks: int
    eval_steps: tuple[int, ...]
    eval_size: int
    probe_points: int
    warm_start: bool = False  # start from given parameters instead of a fresh init
    train_split: str = "train"  # the task split training batches are drawn from
    data_stream: int = 0  # which of a seed's independent training-data streams (0: the usual one)
    snapshots: bool = False  # keep the parameters at every evaluation


@dataclass(frozen=True)
class Program:
    """A compiled training program for one static configuration and run count."""

    init: Callable
    chunk: Callable
    graphdef: Any
    compile_s: float
    trace_names: tuple[str, ...]  # per-update outputs of a chunk: "loss", then the method's aux


_PROGRAMS: dict[tuple[Static, int], Program] = {}
_INFLIGHT: dict[tuple[Static, int], threading.Event] = {}  # programs a thread is compiling now
_LOCK = threading.Lock()
COMPILES = {"count": 0}  # programs built (cache misses), for tests and benchmarks


def memory_maps() -> tuple[int, int] | None:
    """(memory maps this process holds, the kernel's limit ``vm.max_map_count``), or None where
    Linux's /proc is not there. XLA:CPU maps memory for every compiled program, so a process that
    keeps thousands of programs reaches the limit and crashes inside the next compile."""
    try:
        with open("/proc/self/maps", "rb") as f:
            held = sum(1 for _ in f)
        with open("/proc/sys/vm/max_map_count") as f:
            limit = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return held, limit


def release_programs() -> None:
    """Drop every compiled program this process keeps: the engine's, JAX's own caches and the
    functools caches of jitted functions in testbed's modules (the analyses keep theirs that way).
    Later calls compile again (or load from the persistent cache)."""
    import gc
    import sys

    _PROGRAMS.clear()
    with _LOCK:
        _INITS.clear()
        _INIT_LOCKS.clear()
    for name, mod in list(sys.modules.items()):
        if (name == "testbed" or name.startswith("testbed.")) and mod is not None:
            for value in list(vars(mod).values()):
                if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                    value.cache_clear()
    jax.clear_caches()
    gc.collect()


def release_if_crowded(fraction: float = 0.5) -> bool:
    """`release_programs` when this process holds more than ``fraction`` of the memory maps the
    kernel allows; returns whether it did. Long suites call it after each cell."""
    maps = memory_maps()
    if maps is None or maps[0] <= fraction * maps[1]:
        return False
    release_programs()
    return True


def eval_schedule(steps: int, evals: int, spacing: str = "linear") -> tuple[int, ...]:
    """Steps (after that many updates) at which to evaluate; always includes 0 and ``steps``."""
    if spacing not in ("linear", "log"):
        raise ConfigError(f"eval_spacing: unknown {spacing!r}; accepted: linear, log")
    if evals < 2:
        raise ConfigError(f"evals: expected at least 2 evaluation points, got {evals}")
    if spacing == "linear":
        pts = np.linspace(0, steps, evals)
    else:
        pts = np.concatenate([[0], np.geomspace(1, max(steps, 1), evals - 1)])
    return tuple(sorted({int(round(p)) for p in pts} | {0, steps}))


def _listify(name: str, value, default: float) -> list[float]:
    vals = [default] if value is None else list(value) if isinstance(value, list | tuple) else [value]
    if not vals or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                           for v in vals):
        raise ConfigError(f"--{name.replace('_', '-')}: expected non-negative numbers, got {value!r}")
    return [float(v) for v in vals]


class _Plan(NamedTuple):
    """A training call resolved: what `_program` compiles and `train` runs."""

    task: Task
    method: Method
    model: Any
    optimizer: Optimizer
    st: Static
    seed_list: list
    grid: list
    runs: list
    devices: list
    keys: Any
    hp: Any
    data: Any
    p0: Any
    by_run: Any
    replicated: Any
    eval_steps: tuple


def _plan(task, method, model, optimizer, *, steps, batch_size, seeds, lr, weight_decay, init_scale, init_params,
          evals, eval_spacing, eval_size, probe_points, train_split="train", data_stream=0,
          snapshots=False, check_memory=True, abstract_data=False) -> _Plan:
    """Check a training call's arguments and lay out its runs, keys and evaluation data
    (``abstract_data``: only the evaluation data's shapes, for the memory estimate; nothing
    compiles)."""
    task = make_task(task) if isinstance(task, str) else task
    method = make_method(method)
    model = make_model(model) if isinstance(model, str) else (model or MLP())
    optimizer = make_optimizer(optimizer) if isinstance(optimizer, str) else (optimizer or Optimizer())
    for name, v, lo in (("steps", steps, 1), ("batch_size", batch_size, 1), ("eval_size", eval_size, 1),
                        ("probe_points", probe_points, 1)):
        if not is_count(v, lo):
            raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= {lo}, got {v!r}")
    optimizer.check(steps)
    if train_split not in task.splits:
        raise ConfigError(f"--train-split: task {task.name!r} has no split {train_split!r}; "
                          f"splits: {', '.join(task.splits)}")
    if not is_count(data_stream, 0):
        raise ConfigError(f"data_stream: expected an integer >= 0, got {data_stream!r}")
    if method.extras.check is not None:
        method.extras.check(task, steps)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list or (isinstance(seeds, int) and seeds < 1):
        raise ConfigError(f"--seeds: expected a positive count or a non-empty list, got {seeds!r}")
    grid = list(itertools.product(_listify("lr", lr, optimizer.lr),
                                  _listify("weight_decay", weight_decay, optimizer.weight_decay),
                                  _listify("init_scale", init_scale, 1.0)))

    eval_steps = eval_schedule(steps, min(evals, steps + 1), eval_spacing)
    n_chunks = min(MAX_CHUNKS, steps + 1)
    chunk = math.ceil((steps + 1) / n_chunks)
    st = Static(task, method, model, optimizer.structure(), steps, batch_size, chunk, n_chunks,
                eval_steps, eval_size, probe_points, warm_start=init_params is not None,
                train_split=train_split, data_stream=data_stream, snapshots=bool(snapshots))

    runs = [(h, s) for h in range(len(grid)) for s in seed_list]
    # fewer runs than devices: only as many devices (a device given a copy of the last run to
    # fill it did the same work again and made XLA partition the program). The unpartitioned
    # program rounds differently in the last bits (a single seed: at most 2.4e-7 in a history).
    devices = jax.devices()[:len(runs)]
    n_pad = -len(runs) % len(devices)
    runs_padded = runs + [runs[-1]] * n_pad
    mesh = jax.sharding.Mesh(np.array(devices), ("runs",))
    by_run, replicated = NamedSharding(mesh, P("runs")), NamedSharding(mesh, P())

    keys = jax.device_put(jnp.stack([jax.random.key(s) for _, s in runs_padded]), by_run)
    hp = HParams(*(jax.device_put(jnp.asarray([grid[h][i] for h, _ in runs_padded], jnp.float32), by_run)
                   for i in range(3)))
    data = _eval_shapes(task, eval_size, probe_points) if abstract_data else jax.device_put(_eval_data(st), replicated)
    p0 = None
    if init_params is not None:
        leaves = jax.tree.leaves(init_params)
        if not leaves or any(np.shape(a)[0] != len(runs) for a in leaves):
            raise ConfigError(f"init_params: expected arrays with a leading axis of {len(runs)} runs "
                              f"(seeds x grid), got shapes {[np.shape(a) for a in leaves][:3]}")
        p0 = jax.device_put(jax.tree.map(lambda a: np.concatenate([a, np.repeat(a[-1:], n_pad, 0)]),
                                         init_params), by_run)

    plan = _Plan(task, method, model, optimizer, st, seed_list, grid, runs, devices, keys, hp, data, p0, by_run,
                 replicated, eval_steps)
    if check_memory:  # refuse what would not fit, before compiling
        memory.check(plan, len(_metric_names(task, method)), evals=evals, probe_points=probe_points)
    return plan


def check_memory(task: Task | str, method: Method | str = "mse", model: ModelConfig | str | None = None,
                 optimizer: Optimizer | str | None = None, **train_kwargs) -> memory.MemoryEstimate:
    """Raise `testbed.training.memory.MemoryLimitError` if `train` with these arguments would not
    fit in memory (nothing compiles); else return the estimate. Suites check every cell this
    way before the first one runs."""
    plan, kwargs = _unchecked_plan(task, method, model, optimizer, train_kwargs)
    return memory.check(plan, len(_metric_names(plan.task, plan.method)), evals=kwargs["evals"],
                        probe_points=kwargs["probe_points"])


def estimate_memory(task: Task | str, method: Method | str = "mse", model: ModelConfig | str | None = None,
                    optimizer: Optimizer | str | None = None, **train_kwargs) -> memory.MemoryEstimate:
    """What `train` with these arguments would hold in memory, by part; nothing compiles:
    ``estimate_memory("sine_line", seeds=4096).largest()``."""
    plan, _ = _unchecked_plan(task, method, model, optimizer, train_kwargs)
    return memory.estimate(plan, len(_metric_names(plan.task, plan.method)))


def _unchecked_plan(task, method, model, optimizer, train_kwargs: dict) -> tuple[_Plan, dict]:
    """`train`'s call resolved (its defaults filled in) without the memory check, and the keywords."""
    kwargs = {**_train_defaults(), **train_kwargs}
    return _plan(task, method, model, optimizer, **kwargs, check_memory=False, abstract_data=True), kwargs


def train(task: Task | str, method: Method | str = "mse", model: ModelConfig | str | None = None,
          optimizer: Optimizer | str | None = None, *, steps: int = 1000, batch_size: int = 256,
          seeds: int | Sequence[int] = 4, lr: float | Sequence[float] | None = None,
          weight_decay: float | Sequence[float] | None = None,
          init_scale: float | Sequence[float] | None = None, init_params: Any = None,
          evals: int = 50, eval_spacing: str = "linear",
          eval_size: int = 1024, probe_points: int = 256, train_split: str = "train", data_stream: int = 0,
          snapshots: bool = False, quiet: bool = False, on_progress: Callable[[int, int], None] | None = None,
          program_key: str | None = None) -> RunResult:
    """Train many small models at once and record what happened.

    Runs are the product of seeds and the hyperparameter grid (``lr`` x
    ``weight_decay`` x ``init_scale``; a list sweeps, a number fixes); all of them
    run in one compiled program. The same seed gets the same initialization and
    data in every grid cell.

    Args:
        task: a Task or a registered task name.
        method: a Method or a registered method name (``mse``, ``ce``, ...).
        model: a model config or name (default: MLP of width 64, depth 2).
        optimizer: an Optimizer or name (default: Adam, lr 1e-3).
        steps: training updates per run.
        batch_size: fresh training examples per update.
        seeds: number of seeds (0..n-1) or explicit seed list.
        lr, weight_decay, init_scale: values or lists to sweep (default: the
            optimizer's values and 1.0).
        init_params: start every run from these parameters instead of a fresh
            init (a pytree of [runs, ...] arrays, e.g. an edited ``RunResult.params``,
            runs in the same order); ``init_scale`` is then ignored. For
            fine-tuning and retraining after ablation.
        evals: number of evaluation points (including step 0 and the last step).
        eval_spacing: ``linear`` or ``log``.
        eval_size: evaluation examples per split (fixed across runs and evaluations).
        probe_points: probe inputs (a grid over the domain) whose predictions are recorded.
        train_split: the task split training batches are drawn from (e.g. fine-tune on an
            OOD split); evaluations cover every split as always.
        data_stream: which of each seed's independent streams of training batches to use;
            0 is the usual one, stages of `testbed.train_stages` use 0, 1, 2, ...
        snapshots: keep every run's parameters at every evaluation (``RunResult.snapshots``),
            for analyses over training (e.g. the pieces' gradient cosines); off, the program
            is the same as without the option.
        quiet: no progress bar.
        on_progress: called with (steps done, total) after each chunk.
        program_key: a durable name of this call's program (`testbed.suites.runner.durable_key`):
            its compiled program is kept on disk under it and loaded from there next time,
            without tracing (`testbed.training.executables`); None: JAX's own cache only.

    Returns:
        RunResult with the tidy ``history`` and the per-run table ``runs``.
    """
    plan = _plan(task, method, model, optimizer, steps=steps, batch_size=batch_size, seeds=seeds, lr=lr,
                 weight_decay=weight_decay, init_scale=init_scale, init_params=init_params, evals=evals,
                 eval_spacing=eval_spacing, eval_size=eval_size, probe_points=probe_points,
                 train_split=train_split, data_stream=data_stream, snapshots=snapshots)
    task, method, model, optimizer, st, seed_list, grid, runs, devices, keys, hp, data, p0, by_run, replicated, \
        eval_steps = plan
    n_chunks, chunk = st.n_chunks, st.chunk
    t0 = time.perf_counter()
    prog, compiled = _program(st, len(keys), keys, hp, p0, data, by_run, replicated, program_key)
    t_run = time.perf_counter()
    carry = prog.init(keys, hp, p0)
    bar = None
    if not quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, desc=f"{task.name}/{method.name} x{len(runs)}", unit="step", leave=False)
    outs = []
    for c in range(n_chunks):
        carry, ys = prog.chunk(carry, hp, np.int32(c * chunk), data)  # numpy: jnp.int32 is an eager op (~1 ms)
        outs.append(ys)
        done = min((c + 1) * chunk, steps)
        if bar is not None or on_progress is not None:
            jax.block_until_ready(carry.diverged_at)
            if bar is not None:
                bar.update(done - bar.n)
            if on_progress is not None:
                on_progress(done, steps)
    carry = jax.device_get(carry)
    traces = {k: np.concatenate([np.asarray(o[k]) for o in outs], axis=1)[:len(runs), :steps]
              for k in prog.trace_names}
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    run_s = time.perf_counter() - t_run

    keep = len(runs)
    halted = np.asarray(carry.halted_at)[:keep]
    profile = None
    if method.extras.profile is not None:
        profile = (method.extras.profile, np.asarray(method.extras.profile.values(steps)), np.asarray(carry.profile)[:keep])
    run_metrics = {}
    if method.extras.run_metrics is not None:
        run_metrics = {k: np.asarray(v, np.float64) for k, v in
                       method.extras.run_metrics(traces, halted, steps).items()}
    config = {
        "task": task.name, "task_params": dict(task.params), "method": method.name,
        "method_hparams": dict(method.hparams), "model": model.name, "model_config": vars(model).copy(),
        "optimizer": vars(optimizer).copy(), "steps": steps, "batch_size": batch_size, "seeds": seed_list,
        "lr": sorted({g[0] for g in grid}), "weight_decay": sorted({g[1] for g in grid}),
        "init_scale": sorted({g[2] for g in grid}), "evals": evals, "eval_spacing": eval_spacing,
        "eval_size": eval_size, "probe_points": probe_points,
    }
    if train_split != "train" or data_stream:  # absent by default: configs of plain calls unchanged
        config.update(train_split=train_split, data_stream=data_stream)
    return build_history(
        task=task, config=config, runs=runs, grid=grid, eval_steps=np.asarray(eval_steps),
        metric_names=_metric_names(task, method),
        metrics=np.asarray(carry.metrics)[:keep], preds=np.asarray(carry.preds)[:keep],
        batch_loss=traces["loss"], diverged_at=np.asarray(carry.diverged_at)[:keep],
        halted_at=halted, traces={k: v for k, v in traces.items() if k != "loss"},
        profile=profile, run_metrics=run_metrics,
        params=jax.tree.map(lambda a: np.asarray(a)[:keep], carry.params), graphdef=prog.graphdef,
        probe=jax.tree.map(np.asarray, data.probe),
        probe_split=_probe_split(st),
        probe_grid=int(raw_grid(task.domain, st.probe_points).shape[0]),
        timing={"compile_s": prog.compile_s, "compiled": compiled, "compile_wait_s": t_run - t0, "wall_s": wall,
                "run_s": run_s, "runs": len(runs), "devices": len(devices)},
        provenance=provenance(),
        snapshots=jax.tree.map(lambda a: np.asarray(a)[:keep], carry.snaps) if carry.snaps is not None else None)


def _metric_names(task: Task, method: Method) -> tuple[str, ...]:
    return ("loss", *metric_names(task), *method.extras.eval_metrics)


def _eval_data(st: Static) -> EvalData:
    """The fixed evaluation sets (key 0), their grouping weights and the probes (`_eval_sets`)."""
    return _eval_sets(st.task, st.eval_size, st.probe_points)[0]


@functools.lru_cache(maxsize=32)
def _eval_sets(task: Task, eval_size: int, probe_points: int) -> tuple[EvalData, np.ndarray]:
    """The evaluation data (numpy, read-only), and the index of the split holding each probe
    (-1: none), kept per (task, eval size, probe points), the most recent 32: a suite's
    compile thread makes them ahead of the cell (~50 ms a cell on its main thread) and the
    task's other cells share them. Kept on disk too (`testbed.tasks.registry.task_values`):
    a warm run reads them instead of tracing, lowering and loading their program."""
    shapes = _eval_shapes(task, eval_size, probe_points)
    names = ("x", "y", "piece", "group", "probe_x", "probe_y", "probe_piece")

    def compute() -> dict[str, np.ndarray]:
        batch, probe, probe_split = _sample_eval(task, eval_size, probe_points)
        n_groups = _n_groups(task)
        split_id = np.repeat(np.arange(len(task.splits)), eval_size)
        piece = np.asarray(batch.piece)
        onehot = np.zeros((len(piece), len(task.splits) * n_groups), np.float32)
        rows = np.arange(len(piece))
        onehot[rows, split_id * n_groups + np.where(piece >= 0, piece, n_groups - 1)] = 1.0
        onehot[rows, split_id * n_groups + n_groups - 1] = 1.0
        counts = onehot.sum(0)
        group = onehot / np.where(counts > 0, counts, np.nan)  # empty groups average to NaN
        leaves = (*batch, group, *probe)
        return {**{k: np.asarray(v) for k, v in zip(names, leaves, strict=True)},
                "split": np.asarray(probe_split, np.int64)}

    want = (*shapes.batch, shapes.group, *shapes.probe)

    def valid(got: dict[str, np.ndarray]) -> bool:  # a file of other shapes is computed again
        return all(got[k].shape == w.shape and got[k].dtype == w.dtype for k, w in zip(names, want, strict=True))

    got = task_values(task, f"eval_sets|{eval_size}|{probe_points}", compute, valid)
    data = EvalData(Batch(got["x"], got["y"], got["piece"]), got["group"],
                    Batch(got["probe_x"], got["probe_y"], got["probe_piece"]))
    return data, got["split"]


@functools.lru_cache(maxsize=32)
def _eval_shapes(task: Task, eval_size: int, probe_points: int) -> EvalData:
    """`_eval_sets`' evaluation data's shapes and types, without compiling or running anything (the
    evaluation sets' program takes 0.5-2.5 s to compile: a suite's memory check before the
    first cell must not pay it for every task), kept: a task's cells share them.

    Only the per-point part is traced, on one raw point (what `Task.sample` returns for each
    drawn point); the row counts are known: ``eval_size`` per split, and the probe grid plus
    `OOD_PROBES` per OOD split. Tracing the samplers themselves took ~0.2 s a task, ~2 s of
    every suite's start; tests/test_memory.py holds the two equal for every registered task."""
    def per_point(raw):
        return Batch(task.domain.encode(raw), task.target_of_raw(raw), task.piece_of_raw(raw))

    one = jax.eval_shape(per_point, jax.ShapeDtypeStruct((1, task.dim), jnp.float32))
    n_eval = len(task.splits) * eval_size
    n_probe = raw_grid(task.domain, probe_points).shape[0] + OOD_PROBES * len(task.ood_splits)

    def rows(n: int) -> Batch:
        return Batch(*(jax.ShapeDtypeStruct((n, *a.shape[1:]), a.dtype) for a in one))

    group = jax.ShapeDtypeStruct((n_eval, len(task.splits) * _n_groups(task)), jnp.float32)
    return EvalData(rows(n_eval), group, rows(n_probe))


def _n_groups(task: Task) -> int:
    """Evaluation groups per split: each piece, and all examples."""
    return len(task.pieces) + 1


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _sample_eval(task: Task, eval_size: int, probe_points: int) -> tuple[Batch, Batch, jax.Array]:
    # One program for every split's eval set, the probes and the probes' splits (not one per
    # split, nor the split tests op by op: eager, they compiled a small program each, 0.5-0.8 s
    # a task).
    parts = [task.sample(jax.random.fold_in(jax.random.key(EVAL_KEY), i), eval_size, s)
             for i, s in enumerate(task.splits)]
    batch = Batch(*(jnp.concatenate(xs) for xs in zip(*parts, strict=True)))
    # Probes: a grid over the domain (ordered, for trajectory heatmaps), then a fixed
    # sample of each OOD split (dense OOD coverage for attribution).
    ood = [task.sample_raw(jax.random.fold_in(jax.random.key(PROBE_KEY), i), OOD_PROBES, s)
           for i, s in enumerate(task.ood_splits)]
    px = jnp.concatenate([task.grid(probe_points), *(task.domain.encode(r) for r in ood)])
    return batch, Batch(px, task(px), task.piece_of(px)), split_index(task, px)


def split_index(task: Task, x: jax.Array) -> jax.Array:
    """Index of the first split (in ``task.splits`` order) holding each model input ``x: [n,
    in_dim]``, -1 for none: [n] int32."""
    raw = task.domain.decode(x)
    masks = jnp.stack([s.where(raw) for s in task.split_specs])
    return jnp.where(masks.any(0), jnp.argmax(masks, 0), -1).astype(jnp.int32)


def _probe_split(st: Static) -> np.ndarray:
    """`split_index` of a configuration's probes, a copy (`_eval_sets`)."""
    return _eval_sets(st.task, st.eval_size, st.probe_points)[1].copy()


def _program(st: Static, n_runs: int, keys, hp, p0, data, by_run, replicated,
             durable: str | None = None) -> tuple[Program, bool]:
    """The compiled init and chunk programs, from the cache, from a thread already compiling
    them (`prepare`), from disk (``durable``: `testbed.training.executables`), or compiled
    here; and whether they were compiled here."""
    cache_key = (st, n_runs)
    while True:
        with _LOCK:
            if cache_key in _PROGRAMS:
                return _PROGRAMS[cache_key], False
            busy = _INFLIGHT.get(cache_key)
            if busy is None:
                _INFLIGHT[cache_key] = threading.Event()
                break
        busy.wait()  # another thread compiles it; if that failed, compile it here (and raise here)
    try:
        devices = list(by_run.mesh.devices.flat)
        inputs = executables.signature(keys, hp, p0, data) if durable is not None else ""
        prog = _load(st, durable, n_runs, by_run, inputs) if durable is not None else None
        compiled = prog is None
        if compiled:
            prog, kept = _compile(st, keys, hp, p0, data, by_run, replicated)
            if durable is not None:
                executables.save(durable, n_runs, devices, inputs, kept["init"], kept["chunk"], prog.trace_names)
        with _LOCK:
            _PROGRAMS[cache_key] = prog
        return prog, compiled
    finally:
        with _LOCK:
            _INFLIGHT.pop(cache_key).set()


def prepare(task: Task | str, method: Method | str = "mse", model: ModelConfig | str | None = None,
            optimizer: Optimizer | str | None = None, **kwargs) -> float:
    """Compile the program `train` would run for these arguments (the same ones), without
    running it; a later `train` call finds it ready, or waits for it while another thread
    compiles it. Suites compile the next cells this way while one trains. Returns the
    seconds spent here."""
    t0 = time.perf_counter()
    durable = kwargs.pop("program_key", None)
    plan = _plan(task, method, model, optimizer, **{**_train_defaults(), **kwargs})
    _program(plan.st, len(plan.keys), plan.keys, plan.hp, plan.p0, plan.data, plan.by_run, plan.replicated, durable)
    return time.perf_counter() - t0


def probe_inputs(task: Task | str, **kwargs) -> np.ndarray:
    """The inputs a `train` call with these keywords records predictions at
    (``RunResult.probe.x``; keywords other than ``eval_size`` and ``probe_points`` are ignored)."""
    task = make_task(task) if isinstance(task, str) else task
    opts = {**_train_defaults(), **kwargs}
    return np.asarray(_eval_sets(task, opts["eval_size"], opts["probe_points"])[0].probe.x)


def _train_defaults() -> dict[str, Any]:
    """`train`'s keyword defaults that `_plan` takes (one definition: train's signature)."""
    import inspect

    params = inspect.signature(train).parameters
    return {k: v.default for k, v in params.items()
            if v.kind is v.KEYWORD_ONLY and k not in ("quiet", "on_progress", "program_key")}


def _dims(st: Static) -> tuple[int, int]:
    """The model's input and output widths."""
    return st.task.in_dim + st.method.extras.extra_inputs, st.method.head_dim(st.task)


def _graphdef(st: Static):
    """The model's graph structure, built abstractly (an eager build ran its init ops: 0.2-0.9 s
    per new shape)."""
    in_dim, out_dim = _dims(st)
    return nnx.graphdef(nnx.eval_shape(lambda: st.model.build(in_dim, out_dim, rngs=nnx.Rngs(0))))


def _load(st: Static, durable: str, n_runs: int, by_run, inputs: str) -> Program | None:
    """The programs stored under ``durable`` (`testbed.training.executables.load`), or None."""
    t0 = time.perf_counter()
    got = executables.load(durable, n_runs, list(by_run.mesh.devices.flat), inputs)
    if got is None:
        return None
    return Program(_starter(st, got["init"], by_run), got["chunk"], _graphdef(st), time.perf_counter() - t0,
                   got["trace_names"])


def _compile(st: Static, keys, hp, p0, data, by_run, replicated) -> tuple[Program, dict[str, tuple]]:
    """Trace, lower and compile the init and chunk programs of one static configuration. Also
    returns, for each, the compiled program and how to store it (`executables.compile_keeping`:
    what `testbed.training.executables.save` takes)."""
    task, method = st.task, st.method
    in_dim, out_dim = _dims(st)
    graphdef = _graphdef(st)
    m_names = _metric_names(task, method)
    prof = method.extras.profile
    eval_index = np.full(st.chunk * st.n_chunks, -1, np.int32)
    eval_index[list(st.eval_steps)] = np.arange(len(st.eval_steps))
    eval_index = jnp.asarray(eval_index)

    def apply(params, x, **kwargs):
        return nnx.merge(graphdef, params)(x, **kwargs)

    def make_tx(h: HParams) -> optax.GradientTransformation:
        return st.optimizer.build(h.lr, h.weight_decay, st.steps, extra=method.tx)

    def group_means(d: EvalData, vals: jax.Array, ok) -> jax.Array:
        """[N, ...] per-example values -> [G, ...] group means; a group with any
        non-finite value (or a diverged run) is NaN."""
        flat = vals.reshape(vals.shape[0], -1)
        finite = jnp.isfinite(flat)
        means = d.group.T @ jnp.where(finite, flat, 0.0)  # NaN columns: empty groups
        bad = d.group.T @ (~finite).astype(jnp.float32)
        return jnp.where((bad == 0) & ok, means, jnp.nan).reshape((d.group.shape[1],) + vals.shape[1:])

    def evaluate(c: Carry, t, d: EvalData) -> Carry:
        ctx = Ctx(t, st.steps)
        out = method.outputs(task, apply, c.params, d.batch, ctx)
        per_ex = {"loss": method.loss(task, out, d.batch),
                  **task_metrics(task, method.predict(task, out), d.batch.y)}
        if method.extras.evaluate is not None:
            per_ex.update(method.extras.evaluate(task, apply, c.params, d.batch, ctx, out))
        ok = c.diverged_at < 0
        means = group_means(d, jnp.stack([per_ex[m] for m in m_names], axis=-1), ok)  # [G, M]
        pred = method.predict(task, method.outputs(task, apply, c.params, d.probe, ctx))
        i = eval_index[t]
        c = c._replace(metrics=c.metrics.at[i].set(means), preds=c.preds.at[i].set(pred))
        if st.snapshots:
            c = c._replace(snaps=jax.tree.map(lambda s, p: s.at[i].set(p), c.snaps, c.params))
        if prof is not None:
            pv = prof.fn(task, apply, c.params, d.batch, ctx)
            c = c._replace(profile=c.profile.at[i].set(
                group_means(d, jnp.stack([pv[q] for q in prof.names], axis=-1), ok)))
        return c

    def chunk_run(c: Carry, h: HParams, start, d: EvalData) -> tuple[Carry, dict]:
        tx = make_tx(h)

        def step(c: Carry, t) -> tuple[Carry, dict]:
            c = jax.lax.cond(eval_index[t] >= 0, evaluate, lambda c, t, d: c, c, t, d)
            ctx = Ctx(t, st.steps)
            active = (t < st.steps) & (c.diverged_at < 0)
            if method.extras.halt_freezes:
                active &= c.halted_at < 0
            # The step's key behind a barrier: fused into the draw, XLA:CPU recomputed its
            # threefry hash for every candidate (proxy_correlated: ~5,000 a step, its cells
            # ~15% slower; benchmarks/perf/sample_speed.py). The same bits either way.
            key = jax.lax.optimization_barrier(jax.random.fold_in(c.data_key, t))
            batch = task.sample(key, st.batch_size, st.train_split)
            (loss, aux), grads = jax.value_and_grad(method.train_loss, argnums=2, has_aux=True)(
                task, apply, c.params, batch, ctx)
            halted_at = c.halted_at
            if method.extras.halt is not None:  # halting at t skips update t when it freezes
                halts = active & (halted_at < 0) & method.extras.halt(aux, ctx)
                halted_at = jnp.where(halts, t, halted_at).astype(jnp.int32)
                if method.extras.halt_freezes:
                    active &= ~halts
            updates, opt_state = tx.update(grads, c.opt_state, c.params)
            params = optax.apply_updates(c.params, updates)
            finite = jnp.isfinite(loss) & jnp.all(jnp.stack(
                [jnp.isfinite(p).all() for p in jax.tree.leaves(params)]))
            take = active & finite
            # Only the parameters need guarding: an update is skipped only when the run
            # stops for good (diverged, halted and frozen, or past the last step), so the
            # optimizer state is never read again. Skipping its select is ~3% per step.
            params = jax.tree.map(lambda a, b: jnp.where(take, a, b), params, c.params)
            recorded = active | (halted_at == t)  # the halting update's values are recorded
            ys = {"loss": aux.get("loss", loss), **{k: v for k, v in aux.items() if k != "loss"}}
            ys = {k: jnp.where(recorded, jnp.asarray(v, jnp.float32), jnp.nan) for k, v in ys.items()}
            return Carry(params, opt_state, c.data_key,
                         jnp.where(active & ~finite, t, c.diverged_at).astype(jnp.int32), halted_at,
                         c.metrics, c.preds, c.profile, c.snaps), ys

        return jax.lax.scan(step, c, start + jnp.arange(st.chunk, dtype=jnp.int32))

    t0 = time.perf_counter()
    init_c, raw, started = _init_program(st, keys, hp, p0, by_run)
    kept = {"init": (init_c, raw)}
    chunk = jax.jit(jax.vmap(chunk_run, in_axes=(0, 0, None, None)),
                    in_shardings=(by_run, by_run, replicated, replicated), out_shardings=by_run,
                    donate_argnums=0)
    lowered = chunk.lower(_carry_shape(st, started), hp, jnp.int32(0), data)
    trace_names = tuple(lowered.out_info[1])
    chunk_c, raw = executables.compile_keeping(lowered)
    kept["chunk"] = (chunk_c, raw)
    with _LOCK:
        COMPILES["count"] += 1
    return Program(_starter(st, init_c, by_run), chunk_c, graphdef, time.perf_counter() - t0, trace_names), kept


class Started(NamedTuple):
    """What the init program computes for each run: the random part of its carry."""

    params: Any
    opt_state: Any
    data_key: jax.Array


_INITS: dict[tuple, tuple] = {}  # init key -> (compiled init program, kept bytes, Started shapes)
_INIT_LOCKS: dict[tuple, threading.Lock] = {}  # init key -> held while a thread compiles it


def _init_program(st: Static, keys, hp, p0, by_run) -> tuple:
    """The compiled init program (`Started`: parameters, optimizer state, data key) of a
    configuration, what `executables.save` keeps of it, and its output shapes. Configurations
    whose model, layer widths and optimizer are the same share it: the init program draws
    only the parameters (the carry's buffers are made on the host, `_starter`), so the
    default suite's 20 cells compile 10 of them instead of 20 (0.5-1 s each alone, most of
    it the random bits)."""
    in_dim, out_dim = _dims(st)
    key = (st.model, in_dim, out_dim, st.optimizer, st.steps, st.method.tx, st.warm_start, st.data_stream,
           executables.signature(keys, hp, p0), tuple(by_run.mesh.devices.flat), by_run.spec)
    with _LOCK:
        lock = _INIT_LOCKS.setdefault(key, threading.Lock())
    with lock:  # a thread compiling the same init program: wait for it
        if key not in _INITS:
            def init_run(k, h: HParams, p0) -> Started:
                k_init, k_data = jax.random.split(k)
                if st.data_stream:
                    k_data = jax.random.fold_in(k_data, st.data_stream)
                params = nnx.state(st.model.build(in_dim, out_dim, rngs=nnx.Rngs(k_init)))
                if st.warm_start:
                    params = jax.tree.map(lambda p, q: jnp.asarray(q, p.dtype).reshape(p.shape), params, p0)
                else:
                    params = jax.tree.map(lambda p: p * h.init_scale, params)
                tx = st.optimizer.build(h.lr, h.weight_decay, st.steps, extra=st.method.tx)
                return Started(params, tx.init(params), k_data)

            init = jax.jit(jax.vmap(init_run), in_shardings=(by_run, by_run, by_run), out_shardings=by_run)
            compiled, raw = executables.compile_keeping(init.lower(keys, hp, p0))
            _INITS[key] = (compiled, raw, jax.eval_shape(init, keys, hp, p0))
        return _INITS[key]


@functools.lru_cache(maxsize=256)
def _buffers(st: Static) -> dict[str, tuple]:
    """The carry's buffers of one run: name -> (shape, dtype, initial value)."""
    task, method = st.task, st.method
    data = _eval_shapes(task, st.eval_size, st.probe_points)
    n_eval, n_groups = len(st.eval_steps), data.group.shape[1]
    prof = method.extras.profile
    n_prof = (len(prof.values(st.steps)), len(prof.names)) if prof is not None else (0, 0)
    out_dim = _dims(st)[1]
    pred = jax.eval_shape(lambda: method.predict(task, jnp.zeros((data.probe.x.shape[0], out_dim))))
    return {"diverged_at": ((), np.int32, -1), "halted_at": ((), np.int32, -1),
            "metrics": ((n_eval, n_groups, len(_metric_names(task, method))), np.float32, np.nan),
            "preds": ((n_eval, *pred.shape), np.float32, 0.0),
            "profile": ((n_eval, n_groups, *n_prof), np.float32, np.nan)}


def _carry_shape(st: Static, started: Started) -> Carry:
    """The shapes of a configuration's carry (`_starter`), for lowering its chunk program."""
    runs = started.data_key.shape[0]
    bufs = {k: jax.ShapeDtypeStruct((runs, *shape), dtype) for k, (shape, dtype, _) in _buffers(st).items()}
    snaps = (jax.tree.map(lambda p: jax.ShapeDtypeStruct((runs, len(st.eval_steps), *p.shape[1:]), p.dtype),
                          started.params) if st.snapshots else None)
    return Carry(*started, **bufs, snaps=snaps)


def _starter(st: Static, init, by_run) -> Callable:
    """`Program.init`: the init program (`_init_program`), then the carry's buffers (evaluation
    metrics, probe predictions, the method's profile, snapshots, step markers) made on the host
    and placed run by run: they are constants, and compiled into the init program they made
    every configuration's init program its own."""
    bufs = _buffers(st)
    n_eval = len(st.eval_steps)

    def start(keys, hp, p0) -> Carry:
        started = Started(*init(keys, hp, p0))
        runs = keys.shape[0]

        def put(shape, dtype, value):
            return jax.device_put(np.full((runs, *shape), value, dtype), by_run)

        snaps = (jax.tree.map(lambda p: put((n_eval, *p.shape[1:]), p.dtype, 0), started.params)
                 if st.snapshots else None)
        return Carry(*started, **{k: put(*v) for k, v in bufs.items()}, snaps=snaps)

    return start
