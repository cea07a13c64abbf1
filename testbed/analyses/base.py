"""The Analysis record and its registry.

An analysis, like a method, is built by a factory that returns a small record of
functions. The suite runner, the comparison and the report call these functions for
every registered analysis and never test a name, so a new analysis is one file (or a
plug-in) plus a `register_analysis` call::

    @testbed.register_analysis("final_norm")
    def final_norm() -> testbed.Analysis:
        def measure(task, method, result):
            norms = [float(np.sqrt(sum((a[r] ** 2).sum() for a in jax.tree.leaves(result.params))))
                     for r in range(len(result.runs))]
            return {"final_norm": result.runs[["run", "seed"]].assign(norm=norms)}
        return testbed.Analysis("final_norm", tables=("final_norm",), measure=measure)

Which analyses run on a suite's cell: every ``default`` one, those the suite names
(``analyses = [...]``) and those the cell's method asks for (`testbed.Extras.analyses`),
each only where its ``applies`` says so.

Every function but ``measure`` and ``applies`` reads plain tables (DataFrames) only,
so reading a results folder never starts JAX; ``measure`` may import JAX inside.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import pandas as pd

from testbed.core.registry import Registry

Tables = dict[str, pd.DataFrame]


class Figure(NamedTuple):
    """A figure an analysis contributes to the report.

    name: what it shows (``loss_curves``); its file is ``figures/[<task>-]<name>.png``.
    caption: first line the title (a task's figure names its task: ``"<task>: ..."``), the
        rest the text under it.
    figure: the matplotlib Figure.
    task: the task it shows, or None for a figure over every task; the report puts a
        task's figures next to each other, after the figures over every task.
    """

    name: str
    caption: str
    figure: Any
    task: str | None = None

    @property
    def file_stem(self) -> str:
        return f"{self.task}-{self.name}" if self.task else self.name


class Analysis(NamedTuple):
    """An analysis: a record of functions called by the suite runner, the comparison and the report.

    Attributes:
        name: registry name (what a suite's ``analyses = [...]`` names).
        default: runs on every suite's cells (where it applies), named or not.
        tables: names of the per-cell tables its comparison and figures need (stored as
            ``<name>.parquet`` in the cell's folder, read back by `testbed.load_tables`); it
            compares and draws only when a suite has them all. ``measure`` may return more.
            A report's figure processes send its figures these and the tables no analysis
            names (history, runs, batch_loss, derived ones), not other analyses' own.
        applies: (task, method) -> whether it measures a cell; default every cell.
        measure: (task, method, result) -> {table: DataFrame}: per-cell tables from a
            finished `RunResult`; it may train again through `testbed.train`. Rows of a
            table carry ``run`` and ``seed`` (and the swept columns) so they join the
            other tables.
        history: (the cell's tables, final step) -> history rows (columns of
            `testbed.training.result.HISTORY_COLUMNS` less the cell's) to add at the end.
        derive: (suite tables) -> {table: DataFrame}: tables computed when a results
            folder is read (e.g. plateaus from the per-update loss), for every cell at once.
        compare: (`testbed.analyses.kit.View`) -> {name: DataFrame}: comparison tables,
            ``attrs["title"]`` and ``attrs["note"]`` set; leave out what was not measured.
        headline: (View) -> DataFrame with a ``label`` column and columns to add to the
            headline table (the first table of the first analysis).
        printed: names of its comparison tables that `testbed compare --all` prints.
        findings: (View, the comparison tables) -> short sentences for the summary a person
            reads first (terminal and report), each a string (about the suite) or a
            ``(task, text)`` pair (gathered with the task's other findings), e.g. which
            method is best on a task and whether its interval separates from the next.
        figures: (suite tables) -> list of `Figure`.
        needs: what its ``measure`` needs the training call to keep beyond the usual, e.g.
            ``("snapshots",)``: the parameters at every evaluation (`testbed.train`'s
            ``snapshots``); the suite runner asks for it on the cells it measures.
        prepare: (task, method, probe inputs ``[n, in_dim]``) -> None: work of ``measure``
            that needs no trained run (compiling its programs, values at the probes that it
            keeps), done on a suite's compile thread while earlier cells train, so that the
            cell's ``measure`` finds it done. It must not change what ``measure`` returns;
            an error in it is ignored (``measure`` meets it again).
    """

    name: str
    default: bool = False
    tables: tuple[str, ...] = ()
    applies: Callable[[Any, Any], bool] | None = None
    measure: Callable[..., Tables] | None = None
    history: Callable[[Tables, int], pd.DataFrame | None] | None = None
    derive: Callable[[Tables], Tables] | None = None
    compare: Callable[[Any], Tables] | None = None
    headline: Callable[[Any], pd.DataFrame | None] | None = None
    printed: tuple[str, ...] = ()
    findings: Callable[[Any, Tables], list[str]] | None = None
    figures: Callable[[Tables], list[Figure]] | None = None
    needs: tuple[str, ...] = ()
    prepare: Callable[[Any, Any, Any], None] | None = None


ANALYSES: Registry[Analysis] = Registry("analysis", Analysis)


def register_analysis(name: str):
    """Register an analysis factory ``(**options) -> Analysis``; refuses duplicates."""
    return ANALYSES.register(name)


def list_analyses() -> list[str]:
    """Names of the registered analyses, in registration order (built-ins first)."""
    return ANALYSES.ordered()


def make_analysis(name: str, **options) -> Analysis:
    """Build a registered analysis by name (the same name and options: the same object)."""
    return ANALYSES.make(name, **options)


def all_analyses() -> list[Analysis]:
    """Every registered analysis (default options), in registration order."""
    return [make_analysis(n) for n in list_analyses()]


def for_cell(task: Any, method: Any, named: Iterable[str] = ()) -> list[Analysis]:
    """The analyses a suite runs on one cell: the default ones, the ``named`` ones and the
    method's own (`Extras.analyses`), in registration order, each where it applies."""
    wanted = set(named) | set(method.extras.analyses)
    out = []
    for a in all_analyses():
        if (a.default or a.name in wanted) and (a.applies is None or a.applies(task, method)):
            out.append(a)
    return out
