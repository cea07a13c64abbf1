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

import itertools
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.core.columns import SWEPT
from testbed.core.errors import TestbedError
from testbed.suites.cells import (
    TRAIN_FIELDS,
    Cell,
    Component,
    _components,
    _keys,
    _seeds,
    _train_fields,
    grid_tasks,
    stage_dicts,
    task_overrides,
)

GRID_FIELDS = {"tasks", "prompt_tasks", "methods", "models", "optimizers", *SWEPT}
TOP_FIELDS = {"name", "description", "seeds", "train", "grid", "overrides", "analyses", "plugins", "prompts"}
OVERRIDE_FIELDS = {"params", "seeds"} | set(TRAIN_FIELDS) | (GRID_FIELDS - {"tasks", "prompt_tasks"})


class SuiteError(TestbedError, ValueError):
    """A suite file is invalid; the message names the file and field."""


@dataclass(frozen=True)
class Suite:
    """A loaded, validated suite."""

    name: str
    description: str
    cells: tuple[Cell, ...]
    source: str = ""  # the suite file's text, recorded in the manifest
    path: str | None = None
    plugins: tuple[str, ...] = ()  # plug-ins the suite loaded (resolved paths or module names)


def load_suite(path: str | Path, *, build: bool = True) -> Suite:
    """Read and validate a suite file. Raises SuiteError naming the file and field.

    With ``build=False`` the names and fields are checked but tasks, methods, models and
    optimizers are not built (no program is compiled): `run_suite` builds the cells it
    is about to run with `check_cells`, so a finished suite reopens in a second.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SuiteError(f"{path}: cannot read suite file: {e.strerror}") from None
    try:
        spec = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise SuiteError(f"{path}: not valid TOML: {e}") from None
    return suite_from_spec(spec, source=text, path=str(path), default_name=path.stem, build=build)


def suite_from_spec(spec: Mapping[str, Any], *, source: str = "", path: str = "<suite>",
                    default_name: str = "suite", build: bool = True) -> Suite:
    """Build a Suite from a parsed mapping (see module docstring).

    The suite's ``plugins`` (files relative to the suite file, or module names) are
    imported first, so the tasks, methods, models and analyses they register can be named.
    """
    from testbed.analyses.base import list_analyses, make_analysis
    from testbed.core.catalog import names  # not the registries': those import JAX
    from testbed.core.plugins import PluginError, load_plugins

    def err(fld: str, msg: str, value: Any = None) -> SuiteError:
        shown = "" if value is None else f" (got {value!r})"
        return SuiteError(f"{path}: field '{fld}': {msg}{shown}")

    _keys(spec, TOP_FIELDS, "", err)
    plugins = spec.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise err("plugins", "expected a list of plug-in files (relative to the suite file) or module names",
                  plugins)
    base = Path(path).parent if path != "<suite>" else None
    try:
        plugins = load_plugins(plugins, base=base, where=f"{path}: field 'plugins'")
    except PluginError as e:
        raise SuiteError(str(e)) from None
    name = spec.get("name", default_name)
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-" for c in name):
        raise err("name", "expected a name of letters, digits, '_' and '-'", name)
    train = _train_fields(spec.get("train", {}), "train", err)
    grid = spec.get("grid")
    if not isinstance(grid, dict):
        raise err("grid", "expected a [grid] table with at least 'tasks' and 'methods'")
    _keys(grid, GRID_FIELDS, "grid", err)
    if "prompt_tasks" in grid:  # in-context prompt tasks: their own cells (testbed.suites.prompt_cells)
        from testbed.suites.prompt_cells import prompt_suite_cells

        cells = prompt_suite_cells(spec, grid, train, err)
        if build:
            check_cells(cells, path)
        return Suite(name=name, description=str(spec.get("description", "")), cells=tuple(_relabel(cells)),
                     source=source, path=path, plugins=tuple(plugins))
    if "prompts" in spec:
        raise err("prompts", "applies to grid.prompt_tasks only, and the grid has none")
    tasks = grid_tasks(grid, "tasks", names("task"), err)
    overrides = task_overrides(spec, tasks, "tasks", OVERRIDE_FIELDS, err)

    analyses = spec.get("analyses", [])
    known_analyses = list_analyses()
    if not isinstance(analyses, list) or any(a not in known_analyses for a in analyses):
        raise err("analyses", f"expected a list of analysis names; accepted: {', '.join(known_analyses)}", analyses)
    # what a cell is keyed by: the named analyses beyond the default ones, each once, in order
    analyses = sorted({a for a in analyses if not make_analysis(a).default})
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
        methods = _components(o.get("methods", grid.get("methods")), f"{where}.methods", names("method"), err)
        models = _components(o.get("models", grid.get("models", [{"name": "mlp"}])), f"{where}.models",
                             names("model"), err)
        optimizers = _components(o.get("optimizers", grid.get("optimizers", [{"name": "adam"}])),
                                 f"{where}.optimizers", names("optimizer"), err)
        sweeps = []
        for hp in SWEPT:
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
    _unique(cells, err)
    if build:
        check_cells(cells, path)
    return Suite(name=name, description=str(spec.get("description", "")), cells=tuple(_relabel(cells)),
                 source=source, path=path, plugins=tuple(plugins))


def check_cells(cells: Sequence[Cell], path: str = "<suite>") -> None:
    """Build every distinct task, method, model and optimizer of ``cells`` once, so bad
    values fail before anything runs. Raises SuiteError naming the file and the cell's part."""
    def err(fld: str, msg: str) -> SuiteError:
        return SuiteError(f"{path}: field '{fld}': {msg}")

    if not cells:  # nothing to build (a finished suite): no JAX either
        return
    from testbed.methods import make_method
    from testbed.models import make_model
    from testbed.tasks.registry import make_task
    from testbed.training.optim import make_optimizer

    if any(c.kind == "prompts" for c in cells):
        from testbed.suites.prompt_cells import check_prompt_cells

        check_prompt_cells([c for c in cells if c.kind == "prompts"], err)
        cells = [c for c in cells if c.kind != "prompts"]
    seen: set = set()
    for c in cells:
        for what, build, arg in (("task", lambda c: make_task(c.task, **dict(c.params)), c.task),
                                 ("method", lambda c: make_method(c.method.name, **c.method.options), c.method),
                                 ("model", lambda c: make_model(c.model.name, **c.model.options), c.model),
                                 ("optimizer", lambda c: make_optimizer(c.optimizer.name, **c.optimizer.options),
                                  c.optimizer)):
            k = (what, c.task if what == "task" else None, c.params if what == "task" else None, arg)
            if k in seen:
                continue
            seen.add(k)
            try:
                build(c)
            except TestbedError as e:
                raise err(f"{what} of task {c.task!r}" if what != "task" else f"task {c.task!r}", str(e)) from None
    for c in cells:  # stages: each stage's parts, and that no stage changes the model's shape
        if stage_dicts(c):
            from testbed.training.stages import plan_stages

            try:
                plan_stages(make_task(c.task, **dict(c.params)), cell_stages(c))
            except TestbedError as e:
                raise err(f"train.stages of task {c.task!r}", str(e)) from None
    for c in cells:  # what depends on the run length (a myopic cutoff, a warmup) is checked now
        try:
            make_optimizer(c.optimizer.name, **c.optimizer.options).check(c.total_steps)
        except TestbedError as e:
            raise err(f"optimizer of task {c.task!r}", str(e)) from None
        method = make_method(c.method.name, **c.method.options)
        if method.extras.check is not None:
            try:
                method.extras.check(make_task(c.task, **dict(c.params)), c.total_steps)
            except TestbedError as e:
                raise err(f"method of task {c.task!r}", str(e)) from None


def cell_stages(cell: Cell) -> list:
    """A cell's stages as `testbed.Stage` records with built methods and optimizers; a stage
    without its own method or optimizer uses the cell's (its grid's)."""
    from testbed.methods import make_method
    from testbed.training.optim import make_optimizer
    from testbed.training.stages import Stage

    out = []
    for st in stage_dicts(cell):
        me = st.get("method") or cell.method.as_dict()
        op = st.get("optimizer") or cell.optimizer.as_dict()
        out.append(Stage(steps=st["steps"], method=make_method(me["name"], **{k: v for k, v in me.items()
                                                                           if k not in ("name", "label")}),
                         optimizer=make_optimizer(op["name"], **{k: v for k, v in op.items()
                                                                 if k not in ("name", "label")}),
                         split=st.get("split", "train"), name=st.get("name", ""), lr=st.get("lr")))
    return out


def _unique(cells: list[Cell], err) -> None:
    """Two cells of one configuration would be trained twice into one folder: refuse them, naming
    both (e.g. a method given once with a default value spelled out and once without)."""
    seen: dict[str, Cell] = {}
    for c in cells:
        try:
            key = c.key
        except (TypeError, ValueError):
            continue  # a value no key can hold (NaN, inf): `check_cells` names its field
        other = seen.setdefault(key, c)
        if other is not c:
            def show(x: Cell) -> str:
                return f"{x.task} / {x.method.as_dict()} / {x.model.as_dict()} / {x.optimizer.as_dict()}"
            raise err("grid", f"two cells are the same configuration: {show(other)} and {show(c)} (key {c.key}); "
                      "give each method, model and optimizer once")


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
