"""Running a suite: every unfinished cell, trained and analysed, into its results store.

`run_suite` skips finished cells, orders the rest so that cells sharing a compiled
program run back to back, and writes each cell's tables as it finishes (a cell is
finished once its DONE marker is written, last). An `Executor` decides where cells run.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

from testbed.core.columns import COMPONENTS
from testbed.suites.spec import Cell, Suite, check_cells
from testbed.suites.store import RESULTS_FILE, SuiteStore


class Executor(Protocol):
    """Runs groups of cells through a `CellJob` and yields ``(cell, timing, error)`` as each
    cell finishes, in any order: ``timing`` is the job's record of where the cell's time went
    (None for a cell that failed), ``error`` says why a cell did not finish (None when it did).

    The job writes each cell's folder itself (DONE last), so an executor that ships groups to
    other processes or machines (`testbed.suites.cluster.SubmititExecutor`) only has to run
    it there; a cell whose job was killed has no DONE and the next run redoes it.
    ``on_steps(done, total)`` reports training progress within a cell, where the executor
    can (in this process).
    """

    def map(self, job: CellJob, groups: Sequence[Sequence[Cell]],
            on_steps: Callable[[int, int], None] | None = None) -> Iterator[tuple[Cell, dict | None, str | None]]: ...


class InProcessExecutor:
    """Runs cells one after another in this process (each uses every local device); a cell
    that raises stops the run (the cells finished before it are kept)."""

    def map(self, job, groups, on_steps=None):
        for group in groups:
            for cell in group:
                yield cell, job.run_one(cell, on_steps), None


@dataclass(frozen=True)
class CellJob:
    """Train and analyse cells and write each into the suite folder ``root`` (`store_cell`):
    what an executor runs, in this process or in another one (it pickles).

    ``host_devices``: the CPU device count the numbers were planned with; a job in another
    process refuses to run under another count (the seed axis is sharded over them)."""

    root: str
    host_devices: int | None = None
    force: bool = False  # rewrite a cell another writer finished meanwhile (only with --force)

    def __call__(self, cells: Sequence[Cell]) -> list[tuple[str, dict]]:
        """Run a job's cells; a cell that raises is reported as ``{"error": ...}`` and the others
        still run."""
        import traceback

        self.check_devices()
        out = []
        for cell in cells:
            try:
                out.append((cell.key, self.run_one(cell)))
            except Exception as e:  # noqa: BLE001  (reported per cell to the driver)
                tail = traceback.format_exception_only(type(e), e)[-1].strip()
                out.append((cell.key, {"error": f"cell {cell.key} ({cell.task}/{cell.method.label}) raised {tail}"}))
        return out

    def run_one(self, cell: Cell, on_steps: Callable[[int, int], None] | None = None) -> dict:
        from testbed.training.engine import release_if_crowded

        store = SuiteStore(self.root)
        if not self.force and store.is_done(cell.key):
            return {}  # finished meanwhile by another writer (a job left running by a killed driver)
        timing = store_cell(store, cell, on_steps)
        release_if_crowded()  # thousands of kept programs would exhaust the kernel's memory maps
        return timing

    def check_devices(self) -> None:
        if self.host_devices is None:
            return
        import jax

        if jax.default_backend() != "cpu":
            return  # an accelerator job shards over its own devices; the CPU count does not decide
        have = host_device_count()
        if have != self.host_devices:
            raise RuntimeError(f"this worker has {have} CPU devices but the suite was started with "
                               f"{self.host_devices}; the numbers depend on the count: set TESTBED_HOST_DEVICES="
                               f"{self.host_devices} for the workers")


@dataclass(frozen=True)
class _AfterPrefetch:
    """A `CellJob` for this process whose cells first wait for their program's prefetch
    (`Prefetch.wait`)."""

    job: CellJob
    ahead: Prefetch

    def run_one(self, cell: Cell, on_steps: Callable[[int, int], None] | None = None) -> dict:
        t0 = time.perf_counter()
        self.ahead.wait(cell)
        waited = time.perf_counter() - t0
        timing = self.job.run_one(cell, on_steps)
        if timing:  # the cell waited for its program here too (`phase_totals`' compile)
            timing["compile_wait_s"] = timing.get("compile_wait_s", 0.0) + waited
            timing["prefetch_wait_s"] = waited
        return timing


def host_device_count() -> int:
    """The number of CPU devices JAX runs the seed axis over in this process."""
    import jax

    return len(jax.devices("cpu"))


def store_cell(store: SuiteStore, cell: Cell, on_steps: Callable[[int, int], None] | None = None) -> dict:
    """Run one cell (`run_cell`) and write its folder, DONE last. Returns where its time went."""
    tables = run_cell(cell, on_steps)
    meta = tables.pop("_meta").iloc[0]
    hist = tables.pop("history")
    tw = time.perf_counter()
    store.write_cell(cell.key, {**cell.config(), "labels": cell.labels, "facts": meta["facts"]}, hist,
                     tables=tables, extra_json={"meta": {"timing": meta["timing"], "provenance": meta["provenance"]}},
                     force=True)
    return {**meta["timing"], "store_s": time.perf_counter() - tw}


def program_key(cell: Cell) -> str:
    """What decides a cell's compiled program (everything but its swept values and labels),
    as text: cells with equal keys share one program, and sorting by it runs them back to back."""
    return repr((cell.task, cell.params, cell.method.name, cell.method.kwargs, cell.model.name, cell.model.kwargs,
                 cell.optimizer.name, tuple(kv for kv in cell.optimizer.kwargs if kv[0] not in ("lr", "weight_decay")),
                 cell.train, len(cell.seeds), tuple((k, len(v)) for k, v in cell.sweeps)))


def cell_call(cell: Cell) -> tuple[tuple, dict]:
    """The arguments of a cell's `testbed.train` call: (task, method, model, optimizer), keywords."""
    from testbed.methods import make_method
    from testbed.models import make_model
    from testbed.tasks import make_task
    from testbed.training.optim import make_optimizer

    args = (make_task(cell.task, **dict(cell.params)), make_method(cell.method.name, **cell.method.options),
            make_model(cell.model.name, **cell.model.options),
            make_optimizer(cell.optimizer.name, **cell.optimizer.options))
    from testbed.analyses.base import for_cell

    train = {k: v for k, v in cell.train if k != "stages"}
    if any("snapshots" in a.needs for a in for_cell(args[0], args[1], cell.analyses)):
        train["snapshots"] = True  # only when asked: other cells' calls (and programs) stay as they were
    return args, {"seeds": list(cell.seeds), **train, **{k: list(v) for k, v in cell.sweeps}}


def durable_key(cell: Cell) -> str | None:
    """A name for a cell's training program that outlives this process (`testbed.train`'s
    ``program_key``: the program is kept on disk and a later run loads it without tracing,
    `testbed.training.executables`): a hash of its call (task, method, model and optimizer by
    name and options, the training keywords, the number of seeds and of swept values) and of
    the code that builds it (`testbed.core.durable.code_fingerprint`, with the task's
    spec file).

    None, and the program goes through JAX's cache only, when the compile cache is off, for
    prompt and staged cells, and when any registered task, method or model factory has no
    source file the fingerprint reads (one defined in a notebook or at a prompt)."""
    import hashlib
    import json

    from testbed.core import durable
    from testbed.methods.base import METHODS
    from testbed.models.registry import MODELS
    from testbed.tasks.registry import _FACTORIES as TASK_FACTORIES
    from testbed.training import executables

    if cell.kind != "rows" or dict(cell.train).get("stages") or executables.folder() is None:
        return None
    try:
        args, kwargs = cell_call(cell)
        task = args[0]
        extra = (str(Path(task.source).resolve()),) if task.source != "python" else ()
        # every registered factory, not only the cell's: a method may build on another (routing's base)
        factories = [*(METHODS.factory(n) for n in METHODS.names()), *(MODELS.factory(n) for n in MODELS.names()),
                     *TASK_FACTORIES.values()]
        covered = durable.covered_fingerprint(factories, extra)
        if covered is None:
            return None
        fingerprint = covered[0]
    except (OSError, ValueError):
        return None
    sized = {"seeds", *dict(cell.sweeps)}
    call = {"task": cell.task, "params": cell.params, "method": [cell.method.name, cell.method.kwargs],
            "model": [cell.model.name, cell.model.kwargs], "optimizer": [cell.optimizer.name, cell.optimizer.kwargs],
            "train": [(k, len(v) if k in sized else v) for k, v in kwargs.items()]}
    text = json.dumps(call, default=repr) + fingerprint  # not sorted: the order of options can matter
    return hashlib.sha256(text.encode()).hexdigest()


class Prefetch:
    """Compiles the programs of cells ahead, on background threads, while earlier cells train
    (`testbed.training.engine.prepare`), and does their analyses' ``prepare`` work: XLA
    compiles a program on one thread, so a core would otherwise idle. A cell whose program
    is being prepared when its turn comes waits for it (`wait`: the thread plans the call
    before the engine knows what it compiles, so the cell's own call could miss it and
    compile it again); one that failed to compile is compiled again by `train`, which
    raises there."""

    def __init__(self, cells: Sequence[Cell], workers: int | None = None):
        from concurrent.futures import ThreadPoolExecutor

        from testbed.training.engine import prepare

        self.pool = ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 1),
                                       thread_name_prefix="testbed-compile")
        self.jobs: dict[str, object] = {}  # program key -> its job's future
        seen = {program_key(cells[0])} if cells else set()  # the first compiles in its own train call
        for cell in cells[1:]:
            if program_key(cell) in seen or dict(cell.train).get("stages") or cell.kind != "rows":
                # compiled once; stages: per stage; prompt cells: in `train_prompts`
                continue
            seen.add(program_key(cell))
            self.jobs[program_key(cell)] = self.pool.submit(self._prepare, prepare, cell)

    @staticmethod
    def _prepare(prepare, cell: Cell) -> None:
        """Compile a cell's program, then run its analyses' ``prepare`` (`Analysis.prepare`)."""
        from testbed.analyses.base import for_cell
        from testbed.training.engine import probe_inputs

        try:
            args, kwargs = cell_call(cell)
            prepare(*args, **kwargs, program_key=durable_key(cell))
            ready = [a.prepare for a in for_cell(args[0], args[1], cell.analyses) if a.prepare is not None]
            probe_x = probe_inputs(args[0], **kwargs) if ready else None
            for analysis_prepare in ready:
                analysis_prepare(args[0], args[1], probe_x)
        except Exception:  # noqa: BLE001  (train or measure reports it, for this cell, in the main thread)
            return None

    def wait(self, cell: Cell) -> None:
        """Before ``cell`` runs: let a thread that is preparing its program finish (one not yet
        started is cancelled: the cell's own call compiles it)."""
        job = self.jobs.get(program_key(cell))
        if job is not None and not job.cancel():
            job.result()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def run_cell(cell: Cell, on_progress: Callable[[int, int], None] | None = None) -> dict[str, pd.DataFrame]:
    """Train one cell and run its analyses (`testbed.analyses.base.for_cell`). Returns the
    tables stored in its folder: ``history``, ``runs``, ``batch_loss``, the method's
    ``traces`` and ``profile`` when it records them, and every analysis's tables."""
    from dataclasses import replace

    from testbed.analyses.base import for_cell
    from testbed.suites.spec import cell_stages
    from testbed.suites.tables import cell_facts
    from testbed.training.engine import train
    from testbed.training.tables import batch_loss_table, traces_table

    if cell.kind == "prompts":
        from testbed.suites.prompt_cells import run_prompt_cell

        return run_prompt_cell(cell, on_progress)
    args, kwargs = cell_call(cell)
    task, method = args[0], args[1]
    stages = cell_stages(cell)
    if stages:  # each stage one program; the cell's method and optimizer are the stages' defaults
        from testbed.training.stages import train_stages

        kwargs = {k: v for k, v in kwargs.items() if k not in ("steps", "lr")}
        if "lr" in dict(cell.sweeps):
            stages = [st if st.lr is not None else replace(st, lr=list(dict(cell.sweeps)["lr"])) for st in stages]
        result = train_stages(task, stages, args[2], quiet=True, on_progress=on_progress, **kwargs)
    else:
        result = train(*args, quiet=True, on_progress=on_progress, program_key=durable_key(cell), **kwargs)
    hist = result.history.drop(columns=list(COMPONENTS))
    out = {"history": hist, "runs": result.runs, "batch_loss": batch_loss_table(result)}
    if result.stages is not None:
        out["stages"] = result.stages
    if result.traces:
        out["traces"] = traces_table(result)
    if result.profile is not None:
        out["profile"] = result.profile
    extra_rows = []
    t0 = time.perf_counter()
    timing = dict(result.timing)
    for analysis in for_cell(task, method, cell.analyses):
        if analysis.measure is None:
            continue
        ta = time.perf_counter()
        tables = analysis.measure(task, method, result)
        timing[f"analysis:{analysis.name}_s"] = time.perf_counter() - ta
        out.update(tables)
        if analysis.history is not None:
            rows = analysis.history(tables, int(hist["step"].max()))
            if rows is not None and len(rows):
                extra_rows.append(rows)
    if extra_rows:
        out["history"] = pd.concat([hist, *extra_rows], ignore_index=True)
    timing["analyses_s"] = time.perf_counter() - t0
    out["_meta"] = pd.DataFrame([{"timing": timing, "provenance": result.provenance, "facts": cell_facts(task, method)}])
    return out


@dataclass
class SuiteRun:
    """What `run_suite` did."""

    root: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # cell key -> why (a killed or failed job)
    timing: dict = field(default_factory=dict)  # seconds: per cell and per phase (`phase_totals`), total


def run_suite(suite: Suite, results: str | Path = "results", *, force: bool = False,
              executor: Executor | None = None, quiet: bool = False, prefetch: bool = True) -> SuiteRun:
    """Run every unfinished cell of a suite into ``results/<suite.name>/``.

    Finished cells are skipped (``force`` recomputes them). Cells are ordered so
    that cells sharing a compiled program run back to back, and (``prefetch``, with the
    in-process executor) the next cells' programs compile on background threads while
    one trains; the numbers are the same either way. The manifest records
    the suite, commit, versions, platform, devices and times; ``results.parquet``
    aggregates every finished cell of this suite.

    The suite folder is locked for the run (a second run on it stops with
    `testbed.suites.store.SuiteLockedError`), an unwritable folder fails before anything
    runs, and a finished cell whose files changed since (checksums in its ``DONE``) is
    redone with a warning naming it.

    ``executor``: where cells run (default: here, one after another). With
    `testbed.suites.cluster.SubmititExecutor` (Slurm or local processes) each group of cells
    sharing a program is one job; a cell whose job was lost is listed in
    ``SuiteRun.failed`` (with a warning) and redone by the next run.
    """

    store = SuiteStore(Path(results) / suite.name)
    writable(store.root)
    with store.lock():  # one writer per suite folder: a second run stops here, naming the first
        try:
            return _run_locked(suite, store, force=force, executor=executor, quiet=quiet, prefetch=prefetch)
        except OSError as e:
            where = str(getattr(e, "filename", "") or "")
            if not where.startswith(str(store.root)):
                raise
            from testbed.core.files import StoreError

            raise StoreError(f"cannot write {where}: {e.strerror or e}; finished cells are kept: free space (or "
                             "give another --results folder) and run the suite again") from e


def writable(root: Path) -> None:
    """Check that the results folder can be written before anything runs (a clear error naming
    it, not a traceback after the first cell)."""
    from testbed.core.files import StoreError

    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".write-check-{os.getpid()}.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StoreError(f"cannot write the results folder {root}: {e.strerror or e}; give a writable --results "
                         "folder (finished cells stay as they are)") from None


def check_memory(cells: Sequence[Cell], path: str) -> None:
    """Estimate the memory of each distinct program among ``cells`` (`testbed.training.engine.check_memory`)
    and refuse the suite before anything runs when one would not fit, naming the file and the cell."""
    if not cells:
        return
    from testbed.training.engine import check_memory as check
    from testbed.training.memory import MemoryLimitError, set_limit

    if set_limit() == 0.0:  # turned off
        return
    seen = set()
    for cell in cells:
        key = program_key(cell)
        if cell.kind != "rows" or key in seen or dict(cell.train).get("stages"):
            continue  # one estimate per program; prompt cells and staged cells train otherwise
        seen.add(key)
        args, kwargs = cell_call(cell)
        try:
            check(*args, **kwargs)
        except MemoryLimitError as e:
            raise MemoryLimitError(f"{path}: cell {cell.task}/{cell.method.label}/{cell.model.label}: {e}") from None


def redo_tampered(store: SuiteStore, keys) -> list[str]:
    """Remove every finished cell among ``keys`` whose files changed after it finished (a
    warning names each), so the run redoes it. Returns their keys."""
    import warnings

    bad = []
    for k in keys:
        if store.is_done(k):
            problem = store.verify_cell(k)
            if problem is not None:
                warnings.warn(f"{store.cell_dir(k)}: {problem}; redoing the cell", stacklevel=3)
                store.remove_cell(k)
                bad.append(k)
    return bad


def _run_locked(suite: Suite, store: SuiteStore, *, force: bool, executor: Executor | None, quiet: bool,
                prefetch: bool) -> SuiteRun:
    from testbed.core.plugins import loaded

    store.clean_unfinished()
    redo_tampered(store, [c.key for c in suite.cells])
    started = _now()
    prev = store.read_manifest() or {}
    todo = [c for c in suite.cells if force or not store.is_done(c.key)]
    skipped = [c.key for c in suite.cells if c not in todo]
    todo.sort(key=program_key)
    check_cells(todo, suite.path or suite.name)  # bad values fail before the first cell runs
    remote = executor is not None and not isinstance(executor, InProcessExecutor)
    if not remote:  # jobs check each call on their own machine (a login node's memory does not decide)
        check_memory(todo, suite.path or suite.name)  # cells that would not fit in memory fail here
    manifest = {"suite": suite.name, "description": suite.description, "suite_file": suite.path,
                "suite_source": suite.source, "started": started, "finished": None,
                "first_started": prev.get("first_started", prev.get("started", started)),
                "cells": {c.key: {"task": c.task, **c.labels} for c in suite.cells},
                "plugins": loaded(), **_provenance(todo, prev)}
    store.write_manifest(manifest)

    bar = None
    total = sum(c.total_steps for c in todo)
    if not quiet and todo:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="step", desc=f"{suite.name}: {len(todo)} cells")
    run = SuiteRun(store.root, skipped=skipped)
    base = [0]

    def on_steps(done: int, steps: int) -> None:
        if bar is not None:
            bar.update(base[0] + done - bar.n)

    job = CellJob(str(store.root.resolve()), host_device_count() if remote else None, force=force)
    groups = program_groups(todo) if remote else [[c] for c in todo]
    t_start = time.perf_counter()
    cells_timing: dict[str, dict] = {}
    ahead = Prefetch(todo) if prefetch and not remote and len(todo) > 1 else None
    try:
        def name(c: Cell) -> str:
            return f"{c.task}/{c.method.label}"

        if bar is not None and not remote and todo:
            bar.set_postfix_str(name(todo[0]))  # here cells run in order: name the one training
        runner = job if ahead is None else _AfterPrefetch(job, ahead)
        for i, (cell, timing, error) in enumerate((executor or InProcessExecutor()).map(runner, groups, on_steps)):
            base[0] += cell.total_steps
            if bar is not None:
                bar.update(base[0] - bar.n)
                if remote:  # jobs finish in any order: name the one that just did
                    bar.set_postfix_str(f"done: {name(cell)}" + (" FAILED" if error else ""))
                elif i + 1 < len(todo):
                    bar.set_postfix_str(name(todo[i + 1]))
            if error is not None:
                run.failed[cell.key] = error
                continue
            cells_timing[cell.key] = timing or {}
            run.ran.append(cell.key)
    finally:
        if ahead is not None:
            ahead.close()
        if bar is not None:
            bar.close()
    ta = time.perf_counter()
    # up to date only when the last run finished (it aggregated) over the same cells
    same_cells = bool(prev.get("finished")) and set(prev.get("cells", {})) == {c.key for c in suite.cells}
    if run.ran or not same_cells or not (store.root / RESULTS_FILE).is_file():  # else it is up to date
        store.aggregate([c.key for c in suite.cells], skip_missing=True)
    run.timing = {"cells": cells_timing, "ran": len(run.ran), "skipped": len(run.skipped),
                  "aggregate_s": time.perf_counter() - ta, "total_s": time.perf_counter() - t_start,
                  **phase_totals(cells_timing)}
    store.write_manifest({**manifest, "finished": None if run.failed else _now(), "ran": run.ran,
                          "skipped": run.skipped, "failed": run.failed})
    write_timing(store.root, "run", run.timing)
    if run.failed:
        import warnings

        warnings.warn(f"{store.root}: {len(run.failed)} of {len(todo)} cells did not finish ("
                      f"{_first_failure(run.failed)}); run the suite again to redo them (finished cells are kept)",
                      stacklevel=3)
    return run


def _provenance(todo: Sequence[Cell], prev: dict) -> dict:
    """The manifest's platform record. A run that computes nothing keeps the last computing
    run's record whole (finding the devices would start JAX, most of the time a finished
    suite takes to reopen; half of each machine's record would describe neither). Each cell's
    own ``config.json`` holds the record of the process that computed it."""
    from testbed.core.platform import provenance

    fields = list(provenance(devices=False)) + ["backend", "devices"]
    if not todo and all(k in prev for k in fields):
        return {k: prev[k] for k in fields}
    return provenance()


def program_groups(cells: Sequence[Cell]) -> list[list[Cell]]:
    """Cells sharing a compiled program (`program_key`), each group in one job: the program
    compiles once per job. Cells arrive sorted by program key."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(program_key(cell), []).append(cell)
    return list(groups.values())


def _first_failure(failed: dict[str, str]) -> str:
    key, why = next(iter(failed.items()))
    why = why.strip().splitlines()[-1] if why.strip() else "no reason given"
    return f"{key}: {why[:300]}" + (f"; and {len(failed) - 1} more" if len(failed) > 1 else "")


TIMING_FILE = "timing.json"  # where the last run and report of a results folder spent their time


def write_timing(root: Path, part: str, seconds: dict) -> None:
    """Record one part (``run``, ``report``) of where time went, in ``root/timing.json``."""
    import json

    from testbed.core.files import atomic_write_json

    path = Path(root) / TIMING_FILE
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        old = {}
    atomic_write_json(path, {**old, part: seconds})


def phase_totals(cells: dict[str, dict]) -> dict[str, float]:
    """Seconds the run spent, summed over cells: waiting for compiled programs (compiling
    here, or waiting for a `Prefetch` thread; programs compiled while an earlier cell
    trained cost nothing here), training, analysing and storing."""
    def total(key: str) -> float:
        return float(sum(c.get(key, 0.0) for c in cells.values()))
    return {"compile_s": total("compile_wait_s"), "train_s": total("run_s"), "analyses_s": total("analyses_s"),
            "store_s": total("store_s")}


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


