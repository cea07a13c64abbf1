"""The suite's cells and the parsing every kind of suite grid shares.

A `Cell` is one training call of a suite (a task under a method, model and optimizer; or,
``kind == "prompts"``, a prompt task under a sequence model), keyed by its semantic config.
The field checkers here raise through the ``err(field, message, value)`` the caller passes,
so every message names the suite file and field (`testbed.suites.spec`,
`testbed.suites.prompt_cells`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from testbed.core.errors import is_count
from testbed.core.keyed import analysis_defaults, with_defaults
from testbed.core.registry import freeze
from testbed.suites.store import cell_key

TRAIN_FIELDS = {"steps": int, "batch_size": int, "evals": int, "eval_spacing": str, "eval_size": int,
                "probe_points": int}

@dataclass(frozen=True)
class Component:
    """A named, configured piece of a cell (method, model or optimizer)."""

    name: str
    kwargs: tuple[tuple[str, Any], ...]
    label: str

    @property
    def options(self) -> dict[str, Any]:
        """The keyword arguments of its factory (frozen values thawed)."""
        return {k: thaw(v) for k, v in self.kwargs}

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.options}


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
    analyses: tuple[str, ...] = ()  # analyses the suite names, beyond the default ones (e.g. "routing")
    kind: str = "rows"  # "rows": a piecewise task through `testbed.train`; "prompts": `testbed.train_prompts`

    def config(self) -> dict[str, Any]:
        """The semantic config: what the cell key hashes (no labels, no paths)."""
        train = dict(self.train)
        if "stages" in train:
            train["stages"] = stage_dicts(self)
        if self.kind != "rows":  # absent for rows, so their keys stay what they were
            train = {k: (thaw(v) if isinstance(v, tuple) and v and v[0] == "<map>" else v) for k, v in train.items()}
        cfg = {"task": self.task, "params": dict(self.params),
               "method": with_defaults(self.method.as_dict()),
               "model": self.model.as_dict(), "optimizer": self.optimizer.as_dict(), "train": train,
               "seeds": list(self.seeds), "sweeps": {k: list(v) for k, v in self.sweeps}}
        if self.analyses:  # absent when empty, so cells without extra analyses keep their keys
            cfg["analyses"] = list(self.analyses)
            if extra := analysis_defaults(self.analyses, self.method.name):  # `testbed.core.keyed`
                cfg["analysis_defaults"] = extra
        if self.kind != "rows":
            cfg["kind"] = self.kind
        return cfg

    @property
    def key(self) -> str:
        return cell_key(self.config())

    @property
    def labels(self) -> dict[str, str]:
        return {"method": self.method.label, "model": self.model.label, "optimizer": self.optimizer.label}

    @property
    def total_steps(self) -> int:
        """Training updates in all: the steps, or the sum of the stages' steps."""
        stages = stage_dicts(self)
        return sum(st["steps"] for st in stages) if stages else dict(self.train)["steps"]


def grid_tasks(grid: Mapping, fld: str, known: list[str], err) -> list[str]:
    """``grid.<fld>``: a non-empty list of known task names, or "all"."""
    tasks = grid.get(fld)
    if tasks == "all":
        tasks = known
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise err(f"grid.{fld}", "expected a non-empty list of task names, or \"all\"", tasks)
    for t in tasks:
        if t not in known:
            raise err(f"grid.{fld}", f"unknown task {t!r}; known: {', '.join(known)}", t)
    return tasks


def task_overrides(spec: Mapping, tasks: list[str], fld: str, allowed: set[str], err) -> dict:
    """``[overrides.TASK]`` tables, each for a task of ``grid.<fld>`` and with ``allowed`` fields."""
    overrides = spec.get("overrides", {})
    if not isinstance(overrides, dict):
        raise err("overrides", "expected tables [overrides.TASK]")
    for t, o in overrides.items():
        if t not in tasks:
            raise err(f"overrides.{t}", f"task {t!r} is not in grid.{fld}")
        if not isinstance(o, dict):
            raise err(f"overrides.{t}", "expected a table")
        _keys(o, allowed, f"overrides.{t}", err)
    return overrides


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
        if k == "stages":
            out[k] = _stages(v, f"{where}.stages", err)
            continue
        if k not in TRAIN_FIELDS:
            raise err(f"{where}.{k}", f"unknown field; accepted: {', '.join([*TRAIN_FIELDS, 'stages'])}")
        typ = TRAIN_FIELDS[k]
        if not isinstance(v, typ) or isinstance(v, bool) or (typ is int and v < 1):
            raise err(f"{where}.{k}", "expected a positive integer" if typ is int else "expected a string", v)
        if k == "eval_spacing" and v not in ("linear", "log"):
            raise err(f"{where}.{k}", "accepted: linear, log", v)
        out[k] = v
    return out


STAGE_FIELDS = {"steps", "method", "optimizer", "split", "name", "lr"}


def _stages(v: Any, fld: str, err) -> tuple:
    """``[[train.stages]]``: a non-empty list of tables (steps; optional method, optimizer,
    split, name, lr), as a hashable tuple of sorted (field, value) pairs per stage; a method
    or optimizer is a name or a {name = ..., ...} table (frozen the same way)."""
    from testbed.core.catalog import names

    if not isinstance(v, list) or not v or not all(isinstance(x, dict) for x in v):
        raise err(fld, "expected [[stages]] tables, each with at least 'steps'", v)
    out = []
    for i, st in enumerate(v):
        _keys(st, STAGE_FIELDS, f"{fld}[{i}]", err)
        steps = st.get("steps")
        if not is_count(steps):
            raise err(f"{fld}[{i}].steps", "expected a positive integer", steps)
        for part, known in (("method", names("method")), ("optimizer", names("optimizer"))):
            if part in st:
                _components(st[part], f"{fld}[{i}].{part}s", known, err)
        for part in ("split", "name"):
            if part in st and not isinstance(st[part], str):
                raise err(f"{fld}[{i}].{part}", "expected a string", st[part])
        if "lr" in st and (not isinstance(st["lr"], int | float) or isinstance(st["lr"], bool) or st["lr"] <= 0):
            raise err(f"{fld}[{i}].lr", "expected a positive number", st["lr"])
        out.append(freeze(st))
    return tuple(out)


def thaw(v: Any) -> Any:
    """A value `testbed.core.registry.freeze` made hashable, as plain dicts again (tuples stay
    tuples: JSON writes them as lists, and the factories accept them)."""
    if isinstance(v, tuple) and v and v[0] == "<map>":
        return {k: thaw(x) for k, x in v[1:]}
    if isinstance(v, tuple):
        return tuple(thaw(x) for x in v)
    return v


def _hashable(v: Any) -> Any:
    """``v`` with lists as tuples and tables as frozen maps, recursively (a component's value)."""
    return freeze(v, False) if isinstance(v, dict | list | tuple) else v


def stage_dicts(cell: Cell) -> list[dict[str, Any]]:
    """A cell's stages as plain dicts (method and optimizer as {name, ...} tables), or []."""
    out = []
    for st in dict(cell.train).get("stages", ()):
        d = thaw(st)
        for part in ("method", "optimizer"):
            if isinstance(d.get(part), str):
                d[part] = {"name": d[part]}
        if isinstance(d.get("method"), dict) and "name" in d["method"]:
            d["method"] = with_defaults(d["method"])  # a changed default enters the key here too
        out.append(d)
    return out


MAX_SEEDS = 10_000  # seeds per cell: every one is a run in the cell's program


def _seeds(v: Any, fld: str, err) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SEEDS:
        return tuple(range(v))
    if isinstance(v, list) and 0 < len(v) <= MAX_SEEDS and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in v):
        return tuple(v)
    raise err(fld, f"expected a count from 1 to {MAX_SEEDS} or a list of up to {MAX_SEEDS} seeds "
              "(integers from 0 to 2^32 - 1)", v)


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
        # hashable all the way down (lists -> tuples, tables -> frozen maps); `as_dict` thaws them
        kwargs = tuple(sorted((k, _hashable(x)) for k, x in item.items() if k not in ("name", "label")))
        out.append(Component(item["name"], kwargs, label if isinstance(label, str) else ""))
    return out
