"""Suites: a TOML grid of cells, run resumably into a results store.

A suite file looks like this (see ``benchmarks/default.toml``)::

    name = "default"                  # results/<name>/ (default: the file's stem)
    description = "MSE vs CE targets over the built-in tasks"
    seeds = 4                         # a count, or a list of seeds

    [train]                           # defaults for every cell
    steps = 2000
    batch_size = 256
    evals = 40

    [grid]                            # cells = tasks x methods x models x optimizers
    tasks = ["sine_line", "step"]     # or "all"
    methods = ["mse", { name = "ce", encoding = "two_hot", label = "ce_two_hot" }]
    models = [{ name = "mlp", width = 64, depth = 2 }]
    optimizers = [{ name = "adam", lr = 1e-3 }]
    lr = [1e-3, 3e-3]                 # optional sweeps, vmapped inside each cell

    [overrides.lowrank_logits]        # per-task changes: task params, train fields, grid lists
    params = { rank = 2 }
    models = [{ name = "lowrank", rank = 2 }]

Each cell is keyed by a hash of its semantic config (task, params, method,
model, optimizer, training fields, seeds, sweeps), never by paths, labels or
times. Finished cells are skipped on rerun; a cell is finished only when its
DONE marker has been written, last.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from testbed.errors import ConfigError, TestbedError
from testbed.store import SuiteStore, cell_key

TRAIN_FIELDS = {"steps": int, "batch_size": int, "evals": int, "eval_spacing": str, "eval_size": int,
                "probe_points": int}
GRID_FIELDS = {"tasks", "methods", "models", "optimizers", "lr", "weight_decay", "init_scale"}
TOP_FIELDS = {"name", "description", "seeds", "train", "grid", "overrides", "analyses"}
ANALYSES = ("routing",)  # optional per-cell analyses beyond the standard ones
OVERRIDE_FIELDS = {"params", "seeds"} | set(TRAIN_FIELDS) | (GRID_FIELDS - {"tasks"})


class SuiteError(TestbedError, ValueError):
    """A suite file is invalid; the message names the file and field."""


@dataclass(frozen=True)
class Component:
    """A named, configured piece of a cell (method, model or optimizer)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...]
    label: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.kwargs)}


@dataclass(frozen=True)
class Cell:
    """One training call of a suite: a task under a method, model and optimizer."""

    task: str
    params: tuple[tuple[str, Any], ...]
    method: Component
    model: Component
    optimizer: Component
    train: tuple[tuple[str, Any], ...]
    seeds: tuple[int, ...]
    sweeps: tuple[tuple[str, tuple[float, ...]], ...]
    analyses: tuple[str, ...] = ()  # extra analyses stored with the cell (e.g. "routing")

    def config(self) -> dict[str, Any]:
        """The semantic config: what the cell key hashes (no labels, no paths)."""
        cfg = {"task": self.task, "params": dict(self.params), "method": self.method.as_dict(),
               "model": self.model.as_dict(), "optimizer": self.optimizer.as_dict(), "train": dict(self.train),
               "seeds": list(self.seeds), "sweeps": {k: list(v) for k, v in self.sweeps}}
        if self.analyses:  # absent when empty, so cells without extra analyses keep their keys
            cfg["analyses"] = list(self.analyses)
        return cfg

    @property
    def key(self) -> str:
        return cell_key(self.config())

    @property
    def labels(self) -> dict[str, str]:
        return {"method": self.method.label, "model": self.model.label, "optimizer": self.optimizer.label}

    @property
    def total_steps(self) -> int:
        return dict(self.train)["steps"]


@dataclass(frozen=True)
class Suite:
    """A loaded, validated suite."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    source: str = ""  # the suite file's text, recorded in the manifest
    path: str | None = None


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file. Raises SuiteError naming the file and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SuiteError(f"{path}: cannot read suite file: {e.strerror}") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    return suite_from_spec(spec, source=text, path=str(path), default_name=path.stem)


def suite_from_spec(spec: Mapping[str, Any], *, source: str = "", path: str = "<suite>",
                    default_name: str = "suite") -> Suite:
    """Build a Suite from a parsed mapping (see module docstring)."""
    from testbed.methods import list_methods
    from testbed.models import MODELS
    from testbed.registry import list_tasks

    def err(fld: str, msg: str, value: Any = None) -> SuiteError:
        shown = "" if value is None else f" (got {value!r})"
        return SuiteError(f"{path}: field '{fld}': {msg}{shown}")

    _keys(spec, TOP_FIELDS, "", err)
    name = spec.get("name", default_name)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise err("name", "expected a name of letters, digits, '_' and '-'", name)
    train = _train_fields(spec.get("train", {}), "train", err)
    grid = spec.get("grid")
    if not isinstance(grid, dict):
        raise err("grid", "expected a [grid] table with at least 'tasks' and 'methods'")
    _keys(grid, GRID_FIELDS, "grid", err)
    known = list_tasks()
    tasks = grid.get("tasks")
    if tasks == "all":
        tasks = known
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise err("grid.tasks", "expected a non-empty list of task names, or \"all\"", tasks)
    for t in tasks:
        if t not in known:
            raise err("grid.tasks", f"unknown task {t!r}; known tasks: {', '.join(known)}", t)
    overrides = spec.get("overrides", {})
    if not isinstance(overrides, dict):
        raise err("overrides", "expected tables [overrides.TASK]")
    for t, o in overrides.items():
        if t not in tasks:
            raise err(f"overrides.{t}", f"task {t!r} is not in grid.tasks")
        if not isinstance(o, dict):
            raise err(f"overrides.{t}", "expected a table")
        _keys(o, OVERRIDE_FIELDS, f"overrides.{t}", err)

    analyses = spec.get("analyses", [])
    if not isinstance(analyses, list) or any(a not in ANALYSES for a in analyses):
        raise err("analyses", f"expected a list of analysis names; accepted: {', '.join(ANALYSES)}", analyses)
    seeds_default = spec.get("seeds", 4)
    cells = []
    for t in tasks:
        o = overrides.get(t, {})
        where = f"overrides.{t}" if t in overrides else "grid"
        fields = {**train, **_train_fields({k: v for k, v in o.items() if k in TRAIN_FIELDS}, where, err)}
        seeds = _seeds(o.get("seeds", seeds_default), f"overrides.{t}.seeds" if "seeds" in o else "seeds", err)
        params = o.get("params", {})
        if not isinstance(params, dict):
            raise err(f"overrides.{t}.params", "expected a table of task parameters", params)
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}  # hashable
        methods = _components(o.get("methods", grid.get("methods")), f"{where}.methods", list_methods(), err)
        models = _components(o.get("models", grid.get("models", [{"name": "mlp"}])), f"{where}.models",
                             list(MODELS), err)
        optimizers = _components(o.get("optimizers", grid.get("optimizers", [{"name": "adam"}])),
                                 f"{where}.optimizers", ["adam", "adamw", "sgd"], err)
        sweeps = []
        for hp in ("lr", "weight_decay", "init_scale"):
            v = o.get(hp, grid.get(hp))
            if v is None:
                continue
            v = v if isinstance(v, list) else [v]
            if not v or not all(isinstance(a, int | float) and not isinstance(a, bool) and a >= 0 for a in v):
                raise err(f"{where}.{hp}", "expected a non-negative number or a list of them", v)
            sweeps.append((hp, tuple(float(a) for a in v)))
        for me, mo, op in itertools.product(methods, models, optimizers):
            cells.append(Cell(t, tuple(sorted(params.items())), me, mo, op, tuple(sorted(fields.items())),
                              seeds, tuple(sweeps), tuple(analyses)))
    if not cells:
        raise err("grid", "the grid is empty")
    _check_buildable(cells, err)
    return Suite(name=name, description=str(spec.get("description", "")), cells=tuple(_relabel(cells)),
                 source=source, path=path)


def _keys(m: Mapping, allowed: set[str], where: str, err) -> None:
    for k in m:
        if k not in allowed:
            fld = f"{where}.{k}" if where else k
            raise err(fld, f"unknown field; accepted: {', '.join(sorted(allowed))}")


def _train_fields(m: Any, where: str, err) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise err(where, "expected a table", m)
    out = {"steps": 2000, "batch_size": 256, "evals": 40, "eval_spacing": "linear", "eval_size": 1024,
           "probe_points": 256} if where == "train" else {}
    for k, v in m.items():
        if k not in TRAIN_FIELDS:
            raise err(f"{where}.{k}", f"unknown field; accepted: {', '.join(TRAIN_FIELDS)}")
        typ = TRAIN_FIELDS[k]
        if not isinstance(v, typ) or isinstance(v, bool) or (typ is int and v < 1):
            raise err(f"{where}.{k}", "expected a positive integer" if typ is int else "expected a string", v)
        if k == "eval_spacing" and v not in ("linear", "log"):
            raise err(f"{where}.{k}", "accepted: linear, log", v)
        out[k] = v
    return out


def _seeds(v: Any, fld: str, err) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
        return tuple(range(v))
    if isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) for s in v):
        return tuple(v)
    raise err(fld, "expected a positive count or a non-empty list of integers", v)


def _components(v: Any, fld: str, known: list[str], err) -> list[Component]:
    if isinstance(v, str | dict):
        v = [v]
    if not isinstance(v, list) or not v:
        raise err(fld, "expected a non-empty list of names or {name = ..., ...} tables", v)
    out = []
    for i, item in enumerate(v):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise err(f"{fld}[{i}]", "expected a name or a table with 'name'", item)
        if item["name"] not in known:
            raise err(f"{fld}[{i}].name", f"unknown {fld.rsplit('.', 1)[-1][:-1]} {item['name']!r}; "
                      f"known: {', '.join(known)}", item["name"])
        label = item.get("label")
        kwargs = tuple(sorted((k, tuple(x) if isinstance(x, list) else x) for k, x in item.items()
                              if k not in ("name", "label")))
        out.append(Component(item["name"], kwargs, label if isinstance(label, str) else ""))
    return out


def _check_buildable(cells: list[Cell], err) -> None:
    """Build every distinct task, method, model and optimizer once, so bad values fail at load."""
    from testbed.methods import make_method
    from testbed.models import make_model
    from testbed.optim import make_optimizer
    from testbed.registry import make_task

    seen: set = set()
    for c in cells:
        for what, build, arg in (("task", lambda c: make_task(c.task, **dict(c.params)), c.task),
                                 ("method", lambda c: make_method(c.method.name, **dict(c.method.kwargs)), c.method),
                                 ("model", lambda c: make_model(c.model.name, **dict(c.model.kwargs)), c.model),
                                 ("optimizer", lambda c: make_optimizer(c.optimizer.name, **dict(c.optimizer.kwargs)),
                                  c.optimizer)):
            k = (what, c.task if what == "task" else None, c.params if what == "task" else None, arg)
            if k in seen:
                continue
            seen.add(k)
            try:
                build(c)
            except TestbedError as e:
                raise err(f"{what} of task {c.task!r}" if what != "task" else f"task {c.task!r}", str(e)) from None
    for c in cells:  # methods that depend on the run length (e.g. a myopic cutoff) check it now
        method = make_method(c.method.name, **dict(c.method.kwargs))
        if method.check is not None:
            try:
                method.check(make_task(c.task, **dict(c.params)), c.total_steps)
            except TestbedError as e:
                raise err(f"method of task {c.task!r}", str(e)) from None


def _relabel(cells: list[Cell]) -> list[Cell]:
    """Give every component without an explicit label the shortest unique one."""
    out = cells
    for attr in ("method", "model", "optimizer"):
        comps = {getattr(c, attr) for c in out}
        by_name: dict[str, set] = {}
        for comp in comps:
            by_name.setdefault(comp.name, set()).add(comp.kwargs)
        labels = {}
        for comp in comps:
            if comp.label:
                labels[comp] = comp.label
            elif len(by_name[comp.name]) == 1:
                labels[comp] = comp.name
            else:
                labels[comp] = comp.name + "(" + ",".join(f"{k}={v}" for k, v in comp.kwargs) + ")"
        out = [Cell(**{**c.__dict__, attr: Component(getattr(c, attr).name, getattr(c, attr).kwargs,
                                                     labels[getattr(c, attr)])}) for c in out]
    return out


# -- running -------------------------------------------------------------------

class Executor(Protocol):
    """Runs cells and yields (cell, outputs) as each finishes, in any order.

    ``fn`` is a plain function of a Cell returning picklable tables, so an executor
    that ships cells to other processes or machines can be plugged in.
    """

    def map(self, fn: Callable[[Cell], dict[str, pd.DataFrame]], cells: Sequence[Cell]) -> Iterator[
            tuple[Cell, dict[str, pd.DataFrame]]]: ...


class InProcessExecutor:
    """Runs cells one after another in this process (each uses every local device)."""

    def map(self, fn, cells):
        for cell in cells:
            yield cell, fn(cell)


def run_cell(cell: Cell, on_progress: Callable[[int, int], None] | None = None) -> dict[str, pd.DataFrame]:
    """Train one cell and analyse it. Returns the tables stored in its folder."""
    from testbed.analysis.ood import attribution
    from testbed.engine import train
    from testbed.methods import make_method
    from testbed.models import make_model
    from testbed.optim import make_optimizer
    from testbed.registry import make_task

    task = make_task(cell.task, **dict(cell.params))
    sweeps = {k: list(v) for k, v in cell.sweeps}
    result = train(task, make_method(cell.method.name, **dict(cell.method.kwargs)),
                   make_model(cell.model.name, **dict(cell.model.kwargs)),
                   make_optimizer(cell.optimizer.name, **dict(cell.optimizer.kwargs)),
                   seeds=list(cell.seeds), quiet=True, on_progress=on_progress, **dict(cell.train), **sweeps)
    hist = result.history.drop(columns=["task", "method", "model", "optimizer"])
    runs = result.runs
    out = {"history": hist, "runs": runs, "attribution": attribution(task, result),
           "probes": probe_table(task, result), "batch_loss": batch_loss_table(result),
           "_meta": pd.DataFrame([{"timing": result.timing, "provenance": result.provenance}])}
    if result.traces:
        out["traces"] = traces_table(result)
    if result.profile is not None:
        out["profile"] = result.profile
    if "routing" in cell.analyses and len(task.pieces) >= 2:
        out.update(routing_tables(task, result, cell))
        out["history"] = pd.concat([hist, routing_history_rows(out, int(hist["step"].max()))], ignore_index=True)
    return out


def routing_history_rows(tables: Mapping[str, pd.DataFrame], step: int) -> pd.DataFrame:
    """The routing measurements as history rows at the final step (split "train"):
    ``localization`` per piece, ``ablated_loss:<block>`` per piece, ``recovery_step``
    per piece, and ``identification`` and ``recovery_ratio`` per run (piece "all")."""
    hp = ["lr", "weight_decay", "init_scale", "run", "seed"]
    parts = []
    loc = tables["localization"]
    parts.append(loc[hp + ["piece"]].assign(metric="localization", value=loc["score"]))
    abl = tables["ablation"]
    abl = abl[(abl["metric"] == "loss") & (abl["block"] != "none")]
    parts.append(abl[hp + ["piece"]].assign(metric="ablated_loss:" + abl["block"].astype(str), value=abl["value"]))
    ident = tables["identification"]
    parts.append(ident[hp].assign(piece="all", metric="identification", value=ident["accuracy"]))
    rec = tables["recovery"]
    parts.append(rec[hp + ["piece"]].assign(metric="recovery_step", value=rec["recovery_step"]))
    per_run = rec.drop_duplicates("run")
    parts.append(per_run[hp].assign(piece="all", metric="recovery_ratio", value=per_run["ratio"]))
    rows = pd.concat(parts, ignore_index=True).assign(step=step, split="train")
    return rows[["lr", "weight_decay", "init_scale", "run", "seed", "step", "split", "piece", "metric", "value"]]


def routing_tables(task, result, cell: Cell) -> dict[str, pd.DataFrame]:
    """Gradient-routing measurements of a cell (see testbed.analysis.routing).

    A routed cell is measured on its own blocks; any other cell on the blocks a
    default ``routing`` method would use (one per piece, layer 0), so a plainly
    trained model is the baseline with blocks of the same sizes. Tables: ablation
    (per-piece loss with each block zeroed), localization, identification,
    recovery and recovery_curves (fine-tuning on all pieces after zeroing the
    first piece's block, a tenth of the cell's steps at its learning rate).
    """
    from testbed.analysis import routing as ra
    from testbed.methods import make_method

    method = make_method(cell.method.name, **dict(cell.method.kwargs))
    spec = method if method.name == "routing" else make_method("routing")
    hp = result.runs[["run", "lr", "weight_decay", "init_scale"]]
    abl = ra.ablate_blocks(task, method, result, blocks=spec)
    block = next(b for b in abl["block"].unique() if b not in ("none", "shared"))
    lr = float(result.runs["lr"].iloc[0])
    retrained = ra.retrain_after_ablation(task, method, result, block, blocks=spec, lr=lr,
                                          steps=max(cell.total_steps // 10, 20))
    h = retrained.history
    curves = h[(h["split"] == "train") & (h["metric"] == "loss")][["run", "seed", "step", "piece", "value"]]
    tables = {"ablation": abl, "localization": ra.localization(abl),
              "identification": ra.piece_identification(task, result, blocks=spec),
              "recovery": ra.recovery_table(retrained), "recovery_curves": curves}
    return {k: hp.merge(pd.DataFrame(v), on="run") for k, v in tables.items()}


def probe_table(task, result) -> pd.DataFrame:
    """Predictions at the probes over training, for the first seed of each grid point (long form)."""
    runs = result.runs
    first = runs[runs["seed"] == runs["seed"].iloc[0]]
    x = np.asarray(task.domain.decode(result.probe.x))
    n_probe = x.shape[0]
    preds = result.predictions[first["run"].to_numpy()]  # [R1, E, Pn(, K)]
    preds = preds.reshape(preds.shape[:3] + (-1,))
    y = np.asarray(result.probe.y)
    if task.target == "class":
        y = np.eye(task.out_dim, dtype=np.float32)[np.clip(y, 0, task.out_dim - 1)]
    y = y.reshape(n_probe, -1)
    r1, n_e, _, n_out = preds.shape
    ri, ei, pi, oi = (a.ravel() for a in np.meshgrid(np.arange(r1), np.arange(n_e), np.arange(n_probe),
                                                      np.arange(n_out), indexing="ij"))
    split_names = np.array(list(task.splits) + ["none"])
    df = pd.DataFrame({
        "lr": first["lr"].to_numpy()[ri], "weight_decay": first["weight_decay"].to_numpy()[ri],
        "init_scale": first["init_scale"].to_numpy()[ri], "run": first["run"].to_numpy()[ri],
        "seed": first["seed"].to_numpy()[ri], "step": result.eval_steps[ei], "probe": pi,
        "kind": np.where(pi < result.probe_grid, "grid", "ood"),
        "split": split_names[result.probe_split[pi]],
        "x0": x[pi, 0], "x1": x[pi, 1] if x.shape[1] > 1 else np.nan,
        "output": oi, "y": y[pi, oi], "pred": preds[ri, ei, pi, oi],
    })
    for c in ("kind", "split"):
        df[c] = df[c].astype("category")
    return df


def batch_loss_table(result) -> pd.DataFrame:
    """The per-update training loss of every run, long form."""
    return _per_update(result, result.batch_loss)


def traces_table(result) -> pd.DataFrame:
    """The method's other per-update values (`RunResult.traces`), long form with a metric column."""
    parts = [_per_update(result, v).assign(metric=k) for k, v in result.traces.items()]
    df = pd.concat(parts, ignore_index=True)
    df["metric"] = df["metric"].astype("category")
    return df[["lr", "weight_decay", "init_scale", "run", "seed", "step", "metric", "value"]]


def _per_update(result, values: np.ndarray) -> pd.DataFrame:
    runs = result.runs
    n_runs, steps = values.shape
    r, s = (a.ravel() for a in np.meshgrid(np.arange(n_runs), np.arange(steps), indexing="ij"))
    return pd.DataFrame({"lr": runs["lr"].to_numpy()[r], "weight_decay": runs["weight_decay"].to_numpy()[r],
                         "init_scale": runs["init_scale"].to_numpy()[r], "run": r,
                         "seed": runs["seed"].to_numpy()[r], "step": s + 1,
                         "value": values.ravel().astype(np.float64)})


@dataclass
class SuiteRun:
    """What `run_suite` did."""

    root: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_suite(suite: Suite, results: str | Path = "results", *, force: bool = False,
              executor: Executor | None = None, quiet: bool = False) -> SuiteRun:
    """Run every unfinished cell of a suite into ``results/<suite.name>/``.

    Finished cells are skipped (``force`` recomputes them). Cells are ordered so
    that cells sharing a compiled program run back to back. The manifest records
    the suite, commit, versions, platform, devices and times; ``results.parquet``
    aggregates every finished cell of this suite.
    """
    from testbed.platform import provenance

    store = SuiteStore(Path(results) / suite.name)
    store.clean_unfinished()
    started = _now()
    prev = store.read_manifest() or {}
    todo = [c for c in suite.cells if force or not store.is_done(c.key)]
    skipped = [c.key for c in suite.cells if c not in todo]
    todo.sort(key=lambda c: (c.task, c.params, c.method.name, c.method.kwargs, c.model.name, c.model.kwargs,
                             c.optimizer.name, c.train, len(c.seeds)))
    manifest = {"suite": suite.name, "description": suite.description, "suite_file": suite.path,
                "suite_source": suite.source, "started": started, "finished": None,
                "first_started": prev.get("first_started", prev.get("started", started)),
                "cells": {c.key: {"task": c.task, **c.labels} for c in suite.cells}, **provenance()}
    store.write_manifest(manifest)

    bar = None
    total = sum(c.total_steps for c in todo)
    if not quiet and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="step", desc=f"{suite.name}: {len(todo)} cells")
    run = SuiteRun(store.root, skipped=skipped)
    base = [0]

    def progress(done: int, steps: int) -> None:
        if bar is not None:
            bar.update(base[0] + done - bar.n)

    def fn(cell: Cell) -> dict[str, pd.DataFrame]:
        if bar is not None:
            bar.set_postfix_str(f"{cell.task}/{cell.method.label}")
        out = run_cell(cell, progress)
        base[0] += cell.total_steps
        return out

    try:
        for cell, tables in (executor or InProcessExecutor()).map(fn, todo):
            meta = tables.pop("_meta").iloc[0]
            hist = tables.pop("history")
            store.write_cell(cell.key, {**cell.config(), "labels": cell.labels}, hist, tables=tables,
                             extra_json={"meta": {"timing": meta["timing"], "provenance": meta["provenance"]}},
                             force=True)
            run.ran.append(cell.key)
    finally:
        if bar is not None:
            bar.close()
    store.aggregate([c.key for c in suite.cells], skip_missing=True)
    store.write_manifest({**manifest, "finished": _now(), "ran": run.ran, "skipped": run.skipped})
    return run


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# -- reading back ----------------------------------------------------------------

TABLES = ("history", "runs", "attribution", "probes", "batch_loss")
OPTIONAL_TABLES = ("ablation", "localization", "identification", "recovery", "recovery_curves", "traces", "profile")


def load_tables(root: str | Path, suite: Suite | None = None,
                which: Sequence[str] = TABLES + OPTIONAL_TABLES) -> dict[str, pd.DataFrame]:
    """The suite's tables (see docs/suite_tables.md), every finished cell, cell columns first.

    With ``suite`` only its cells are read and its current labels applied.
    """
    from testbed.metrics import metric_names
    from testbed.registry import make_task

    store = SuiteStore(root)
    keys = store.done_keys()
    if suite is not None:
        current = {c.key: c for c in suite.cells}
        keys = [k for k in keys if k in current]
    if not keys:
        raise ConfigError(f"{root}: no finished cells to read (run `testbed bench` first)")
    out: dict[str, list[pd.DataFrame]] = {w: [] for w in which}
    for k in keys:
        cfg, hist = store.load_cell(k)
        labels = current[k].labels if suite is not None else cfg.get("labels", {})
        task = make_task(cfg["task"], **cfg.get("params", {}))
        cols = {"cell": k, "task": cfg["task"], "method": labels.get("method", cfg["method"]["name"]),
                "model": labels.get("model", cfg["model"]["name"]),
                "optimizer": labels.get("optimizer", cfg["optimizer"]["name"]), "target": task.target,
                "primary": metric_names(task)[0]}
        for w in which:
            if w in OPTIONAL_TABLES and not (store.cell_dir(k) / f"{w}.parquet").is_file():
                continue  # an analysis this cell did not run
            df = hist if w == "history" else store.load_table(k, w)
            out[w].append(pd.concat([pd.DataFrame(cols, index=df.index), df], axis=1))
    return {w: _concat(dfs) for w, dfs in out.items() if dfs}


def _concat(dfs: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate, with categoricals of differing categories turned into strings first."""
    dfs = [d.astype({c: "object" for c in d.columns if isinstance(d[c].dtype, pd.CategoricalDtype)}) for d in dfs]
    out = pd.concat(dfs, ignore_index=True)
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].astype("category")
    return out
