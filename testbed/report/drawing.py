"""Drawing a report's figures, on several processes when the machine has several cores.

Figures are most of a report's time (matplotlib's layout and rendering: one core each),
and analyses draw independently of each other. `draw_figures` gives each analysis to a
worker process, started with ``spawn`` (never forked from a process that runs JAX; the
figure code imports no JAX), which receives the suite's tables once, draws and saves that
analysis's figures and returns their captions and paths. The files are the same bytes as
when drawn in one process, and the report lists them in the same order
(`testbed.report.build.suite_figures`' order: figures over every task first, then each
task's together).

``TESTBED_FIGURE_WORKERS`` sets the number of processes (1: draw here, in this process;
default: the cores, at most one per analysis).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from testbed.analyses.base import Analysis, make_analysis
from testbed.core.style import save

WORKERS_ENV = "TESTBED_FIGURE_WORKERS"

_TABLES: dict | None = None  # a worker's copy of the suite tables


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
                 workers: int | None = None) -> list[tuple[str, Path]]:
    """Draw and save every figure of ``analyses`` under ``fig_dir``; (caption, first file) each,
    in report order. Several processes when ``workers`` (default `figure_workers`) > 1; if
    they cannot start, drawn here instead (with a warning)."""
    names = [a.name for a in analyses]
    n = figure_workers(len(names)) if workers is None else max(1, min(workers, len(names)))
    drawn: dict[str, list] = {}
    if n > 1:
        try:
            drawn = _in_processes(tables, names, fig_dir, formats, n)
        except (OSError, RuntimeError, ImportError) as e:  # a broken pool: draw here, lose nothing
            warnings.warn(f"drawing figures in {n} processes failed ({e}); drawing them in this one",
                          RuntimeWarning, stacklevel=2)
            drawn = {}
    for a in analyses:
        if a.name not in drawn:
            drawn[a.name] = _draw(a, tables, fig_dir, formats)
    return order([f for a in analyses for f in drawn[a.name]])


def _draw(a: Analysis, tables: dict, fig_dir: Path, formats: tuple[str, ...]) -> list[tuple[str | None, str, Path]]:
    out = []
    for f in a.figures(tables):
        out.append((f.task, f.caption, save(f.figure, fig_dir / f.file_stem, formats)[0]))
    return out


def _in_processes(tables, names, fig_dir, formats, n) -> dict[str, list]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from testbed.core.plugins import loaded

    ctx = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_start,
                                 initargs=(tables, loaded())) as pool:
            futures = {name: pool.submit(_draw_named, name, fig_dir, formats) for name in names}
            return {name: fut.result() for name, fut in futures.items()}
    except BrokenProcessPool as e:
        raise RuntimeError(f"a figure process died: {e}") from None


def _start(tables: dict, plugins: list[str]) -> None:
    """A worker: keep the tables, load the plug-ins the parent has (their analyses draw too)."""
    global _TABLES
    import matplotlib

    matplotlib.use("Agg")
    if plugins:
        from testbed.core.plugins import load_plugins

        load_plugins(plugins)
    _TABLES = tables


def _draw_named(name: str, fig_dir: Path, formats: tuple[str, ...]) -> list[tuple[str | None, str, Path]]:
    assert _TABLES is not None
    return _draw(make_analysis(name), _TABLES, fig_dir, formats)

