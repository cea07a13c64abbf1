"""Running a suite: every unfinished cell, trained and analysed, into its results store.

`run_suite` skips finished cells, orders the rest so that cells sharing a compiled
program run back to back, and writes each cell's tables as it finishes (a cell is
finished once its DONE marker is written, last). An `Executor` decides where cells run.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from testbed.core.columns import COMPONENTS
from testbed.suites.spec import Cell, Suite
from testbed.suites.store import SuiteStore


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
    """Train one cell and run its analyses (`testbed.analyses.base.for_cell`). Returns the
    tables stored in its folder: ``history``, ``runs``, ``batch_loss``, the method's
    ``traces`` and ``profile`` when it records them, and every analysis's tables."""
    from testbed.analyses.base import for_cell
    from testbed.methods import make_method
    from testbed.models import make_model
    from testbed.suites.tables import cell_facts
    from testbed.tasks import make_task
    from testbed.training.engine import train
    from testbed.training.optim import make_optimizer
    from testbed.training.tables import batch_loss_table, traces_table

    task = make_task(cell.task, **dict(cell.params))
    method = make_method(cell.method.name, **dict(cell.method.kwargs))
    sweeps = {k: list(v) for k, v in cell.sweeps}
    result = train(task, method, make_model(cell.model.name, **dict(cell.model.kwargs)),
                   make_optimizer(cell.optimizer.name, **dict(cell.optimizer.kwargs)),
                   seeds=list(cell.seeds), quiet=True, on_progress=on_progress, **dict(cell.train), **sweeps)
    hist = result.history.drop(columns=list(COMPONENTS))
    out = {"history": hist, "runs": result.runs, "batch_loss": batch_loss_table(result),
           "_meta": pd.DataFrame([{"timing": result.timing, "provenance": result.provenance,
                                   "facts": cell_facts(task)}])}
    if result.traces:
        out["traces"] = traces_table(result)
    if result.profile is not None:
        out["profile"] = result.profile
    extra_rows = []
    for analysis in for_cell(task, method, cell.analyses):
        if analysis.measure is None:
            continue
        tables = analysis.measure(task, method, result)
        out.update(tables)
        if analysis.history is not None:
            rows = analysis.history(tables, int(hist["step"].max()))
            if rows is not None and len(rows):
                extra_rows.append(rows)
    if extra_rows:
        out["history"] = pd.concat([hist, *extra_rows], ignore_index=True)
    return out


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
    from testbed.core.platform import provenance
    from testbed.core.plugins import loaded

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
                "cells": {c.key: {"task": c.task, **c.labels} for c in suite.cells},
                "plugins": loaded(), **provenance()}
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
            store.write_cell(cell.key, {**cell.config(), "labels": cell.labels, "facts": meta["facts"]}, hist,
                             tables=tables,
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


