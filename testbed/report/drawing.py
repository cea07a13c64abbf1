"""Drawing a report's figures, on several processes when the machine has several cores.

Figures are most of a report's time (matplotlib's layout and rendering: one core each),
and analyses draw independently of each other. `draw_figures` gives each analysis to a
worker process (`FigurePool`, started with ``spawn``: never forked from a process that runs
JAX; the figure code imports no JAX), which receives the tables that analysis reads
(`tables_for`), draws and saves its figures and returns their captions and paths. This
process is one of the drawers: it takes analyses from the back of the queue while the
workers take them from the front. The files are the same bytes as when drawn in one
process, and the report lists them in the same order (`testbed.report.build.suite_figures`'
order: figures over every task first, then each task's together).

``TESTBED_FIGURE_WORKERS`` sets the number of processes (1: draw here, in this process;
default: the cores, at most one per analysis).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from testbed.analyses.base import Analysis, make_analysis

WORKERS_ENV = "TESTBED_FIGURE_WORKERS"

def figure_workers(jobs: int) -> int:
    """Processes to draw ``jobs`` analyses' figures with: ``TESTBED_FIGURE_WORKERS``, or the cores."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{WORKERS_ENV}={text!r}: expected a whole number >= 1")
        n = int(text)
    else:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n, jobs))


def order(figures: Sequence[tuple[str | None, str, Path]]) -> list[tuple[str, Path]]:
    """(caption, path) in report order: figures over every task first, then each task's together."""
    tasks = list(dict.fromkeys(t for t, _, _ in figures if t is not None))
    return ([(c, p) for t, c, p in figures if t is None]
            + [(c, p) for task in tasks for t, c, p in figures if t == task])


def draw_figures(tables: dict, analyses: Sequence[Analysis], fig_dir: Path, formats: tuple[str, ...],
                 workers: int | None = None, pool: FigurePool | None = None,
                 kept: bool = True) -> list[tuple[str, Path]]:
    """Draw and save every figure of ``analyses`` under ``fig_dir``; (caption, first file) each,
    in report order. Several processes when ``workers`` (default `figure_workers`) > 1, or on
    ``pool`` (started ahead: `FigurePool.start`); if they cannot start, drawn here instead
    (with a warning). An analysis's figures drawn before from the same tables and code are
    copied (`testbed.report.figure_cache`; ``kept=False``: drawn, and kept again)."""
    from testbed.report import figure_cache

    keys = figure_cache.keys(analyses, tables, formats)
    drawn: dict[str, list] = {}
    for a in analyses:  # drawn before from the same tables with the same code: copied
        if kept and keys[a.name] is not None and (copied := figure_cache.load(keys[a.name], fig_dir)) is not None:
            drawn[a.name] = copied
    copied_names = set(drawn)
    names = [a.name for a in analyses if a.name not in copied_names]
    own = pool is None
    if own:
        n = figure_workers(len(names)) if workers is None else max(1, min(workers, len(names)))
        pool = FigurePool.start(n) if n > 1 else None
    try:
        if pool is not None and len(names) > 1:
            drawn.update(pool.draw(tables, names, fig_dir, formats,
                                   lambda name: _draw_named(name, tables, fig_dir, formats)))
            if pool.failed:  # a broken pool: what it did not draw is drawn here, nothing drawn is lost
                warnings.warn(f"drawing figures in {pool.workers + 1} processes failed ({pool.failed}); drawing "
                              f"the rest in this one", RuntimeWarning, stacklevel=2)
    finally:
        if own and pool is not None:
            pool.close()
    for a in analyses:
        if a.name not in drawn:
            drawn[a.name] = _draw(a, tables, fig_dir, formats)
        if a.name not in copied_names and keys[a.name] is not None:
            figure_cache.store(keys[a.name], drawn[a.name], formats)
    return order([f for a in analyses for f in drawn[a.name]])


def _draw(a: Analysis, tables: dict, fig_dir: Path, formats: tuple[str, ...]) -> list[tuple[str | None, str, Path]]:
    # imported when drawing: figures copied from the cache need no seaborn
    from testbed.core.style import save

    out = []
    for f in a.figures(tables):
        out.append((f.task, f.caption, save(f.figure, fig_dir / f.file_stem, formats)[0]))
    return out


def tables_for(name: str, tables: dict) -> dict:
    """The tables an analysis's figures may read: its own (`Analysis.tables`) and every table
    no analysis declares (history, runs, batch_loss, derived ones), not other analyses' own
    (the probes table alone is most of a suite's bytes, and a worker gets what it draws from)."""
    from testbed.analyses.base import all_analyses

    others = {t for a in all_analyses() if a.name != name for t in a.tables} - set(make_analysis(name).tables)
    return {k: v for k, v in tables.items() if k not in others}


class FigurePool:
    """Worker processes for figures, started with ``spawn`` before the tables are read (a
    worker needs ~2 s to start: importing the figure code overlaps the reading)."""

    def __init__(self, executor, workers: int):
        self.executor, self.workers = executor, workers
        self.failed: str | None = None  # why a worker's job failed (its analyses are drawn here instead)

    @classmethod
    def start(cls, n: int | None = None) -> FigurePool | None:
        """``n`` drawers (default `figure_workers` over the analyses that draw): this process and
        ``n - 1`` workers; None when ``n`` is 1 or they cannot start."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from testbed.analyses.base import all_analyses
        from testbed.core.plugins import loaded

        n = figure_workers(sum(a.figures is not None for a in all_analyses())) if n is None else n
        if n <= 1:
            return None
        try:
            ex = ProcessPoolExecutor(max_workers=n - 1, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start, initargs=(loaded(),))
            for _ in range(n - 1):
                ex.submit(_ready)  # start the workers now
        except (OSError, RuntimeError) as e:
            warnings.warn(f"figure processes did not start ({e}); drawing in this one", RuntimeWarning, stacklevel=2)
            return None
        return cls(ex, n - 1)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def draw(self, tables, names, fig_dir, formats, draw_here) -> dict[str, list]:
        """The workers and this process (``draw_here``) draw ``names``' figures: the workers
        take analyses from the front of a queue, one at a time each (the next is handed over as
        one finishes), and this process takes them from the back. The queue is ordered by the
        bytes of tables each would ship to a worker, largest last: this process draws those."""
        import threading
        from collections import deque
        from concurrent.futures import wait

        shipped = {name: tables_for(name, tables) for name in names}
        size = {name: sum(int(t.memory_usage(deep=False).sum()) for t in ts.values() if hasattr(t, "memory_usage"))
                for name, ts in shipped.items()}
        todo, lock, jobs = deque(sorted(names, key=size.__getitem__)), threading.Lock(), {}
        stop = threading.Event()

        def hand_out(done=None) -> None:  # also called back (on the pool's thread) as a job ends
            if stop.is_set() or (done is not None and (done.cancelled() or done.exception() is not None)):
                return  # a failed or broken job: this process draws what is left
            new = []
            with lock:
                while todo and sum(not f.done() for f in jobs.values()) < self.workers:
                    name = todo.popleft()
                    try:
                        jobs[name] = self.executor.submit(_draw_named, name, shipped[name], fig_dir, formats)
                    except RuntimeError:  # shut down or broken meanwhile
                        todo.appendleft(name)
                        return
                    new.append(jobs[name])
            for f in new:  # outside the lock: a job done already calls back at once, in this thread
                f.add_done_callback(hand_out)

        drawn: dict[str, list] = {}
        try:
            hand_out()
            while True:
                with lock:
                    name = todo.pop() if todo else None
                if name is None:
                    break
                drawn[name] = draw_here(name)
            wait(list(jobs.values()))
        finally:
            stop.set()
        for name, job in jobs.items():
            try:
                drawn[name] = job.result()
            except KeyError as e:  # it reads a table it did not declare (`Analysis.tables`): draw it here
                warnings.warn(f"analysis {name!r}: its figures read the table {e} that its Analysis.tables does "
                              f"not name; drawn in this process (declare it to draw it in parallel)",
                              RuntimeWarning, stacklevel=3)
                drawn[name] = draw_here(name)
            except Exception as e:  # noqa: BLE001  (a broken pool; or a figure failing there fails here too)
                self.failed = f"{type(e).__name__}: {e}"
        return drawn


def _start(plugins: list[str]) -> None:
    """A worker: load the plug-ins the parent has (their analyses draw too) and the figure code."""
    import matplotlib

    matplotlib.use("Agg")
    if plugins:
        from testbed.core.plugins import load_plugins

        load_plugins(plugins)
    import importlib

    import matplotlib.pyplot  # noqa: F401

    from testbed.analyses.base import all_analyses

    for a in all_analyses():  # import the figure code now, not with the first job
        package = a.figures.__module__.rpartition(".")[0] if a.figures is not None else ""
        if package:  # the built-ins keep it in <package>.figures; a plug-in file has no package
            try:
                importlib.import_module(package + ".figures")
            except Exception:  # noqa: BLE001  (only a head start: the job imports what it needs)
                pass


def _ready() -> None:
    return None


def _draw_named(name: str, tables: dict, fig_dir: Path, formats: tuple[str, ...]) -> list[tuple[str | None, str, Path]]:
    return _draw(make_analysis(name), tables, fig_dir, formats)
