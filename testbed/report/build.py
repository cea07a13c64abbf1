"""Everything a finished suite produces for people: tables, figures and report.html.

Loops over the registered analyses: each derives its read-time tables, contributes its
comparison tables and draws its figures. Figure files are named for what they show
(``figures/<task>-loss_curves.png``, ``figures/ood_vs_train.png``, ...). No JAX.
"""

from __future__ import annotations

import time
from pathlib import Path

from testbed.analyses.base import Figure, all_analyses
from testbed.core.plugins import PluginError, load_plugins
from testbed.report.compare import FINDINGS, comparison, measured, render_findings, render_markdown
from testbed.report.tables import write_tables
from testbed.suites.runner import write_timing
from testbed.suites.spec import Suite
from testbed.suites.store import SuiteStore
from testbed.suites.tables import load_tables


def load_manifest_plugins(root: str | Path) -> list[str]:
    """Import the plug-ins a suite ran with (recorded in its manifest), so their analyses
    take part in reading it back. One that cannot be imported (moved, say) is named in a
    warning and left out."""
    import sys

    manifest = SuiteStore(root).read_manifest() or {}
    out = []
    for spec in manifest.get("plugins", []):
        try:
            out += load_plugins([spec], where=f"{Path(root) / 'manifest.json'}: field 'plugins'")
        except PluginError as e:
            # a folder copied elsewhere still reads: the built-in analyses (and plug-ins given
            # again with --plugins or TESTBED_PLUGINS) take part; the plug-in's own do not
            print(f"warning: {e}; reading without it", file=sys.stderr)
    return out


def analysed_tables(root: str | Path, suite: Suite | None = None) -> dict:
    """The suite's tables (docs/suite_tables.md) plus every analysis's derived tables
    (e.g. ``plateau_rows`` and ``plateaus``)."""
    load_manifest_plugins(root)
    tables = load_tables(root, suite)
    for a in all_analyses():
        if a.derive is not None:
            tables.update(a.derive(tables))
    return tables


def suite_figures(tables: dict) -> list[Figure]:
    """Every analysis's figures: those over every task first, then each task's together (the
    report draws the same, on several processes: `testbed.report.drawing.draw_figures`)."""
    figs = [f for a in all_analyses() if a.figures is not None and measured(a, tables) for f in a.figures(tables)]
    tasks = list(dict.fromkeys(f.task for f in figs if f.task is not None))
    return [f for f in figs if f.task is None] + [f for t in tasks for f in figs if f.task == t]


STATE_FILE = "report_state.json"  # what the tables and the report were last made from
SUMMARY_FILE = "summary.md"  # in tables/: the markdown `testbed compare` prints


def fingerprint(root: str | Path, suite: Suite | None = None, **options) -> str:
    """A hash of what a suite's tables and report are made of: each finished cell (its key,
    labels and when it was written: a cell redone under the same key counts as new), the
    registered analyses and the plug-in files loaded (with their modification times), the
    package versions and commit, and the options. It reads only small files, so a finished
    suite answers at once."""
    import hashlib
    import json

    from testbed.analyses.base import list_analyses
    from testbed.core.platform import git_commit, versions
    from testbed.core.plugins import is_path, loaded
    from testbed.suites.store import DONE_FILE

    store = SuiteStore(root)
    keys = store.done_keys()
    current = {c.key: c.labels for c in suite.cells} if suite is not None else None
    if current is not None:
        keys = [k for k in keys if k in current]
    cells = {k: [current[k] if current is not None else store.load_json(k, "config").get("labels", {}),
                 (store.cell_dir(k) / DONE_FILE).stat().st_mtime_ns] for k in sorted(keys)}
    plugins = [[p, Path(p).stat().st_mtime_ns if is_path(p) and Path(p).is_file() else None] for p in loaded()]
    what = {"cells": cells, "analyses": list_analyses(), "plugins": plugins, "versions": versions(),
            "commit": git_commit(), "options": options}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()


def cached(root: str | Path, part: str, print_: str) -> str | None:
    """The markdown saved with ``part`` (``tables`` or ``report``) when it was made from the
    same fingerprint, else None."""
    import json

    root = Path(root)
    try:
        saved = json.loads((root / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if saved.get(part) != print_ or not isinstance(saved.get(f"{part}_markdown"), str):
        return None
    if part == "report" and not (root / "report.html").is_file():
        return None
    return saved[f"{part}_markdown"]


def remember(root: Path, part: str, print_: str, markdown: str) -> None:
    """Record that ``part`` was made from this fingerprint, with the markdown it printed
    (each part keeps its own: the tables and the report may be made from different labels)."""
    import json

    from testbed.core.files import atomic_write_json, atomic_write_text

    if part == "tables":
        atomic_write_text(root / "tables" / SUMMARY_FILE, markdown)
    state = root / STATE_FILE
    try:
        old = json.loads(state.read_text()) if state.is_file() else {}
    except ValueError:
        old = {}
    atomic_write_json(state, {**old, part: print_, f"{part}_markdown": markdown})


def compare_tables(root: str | Path, suite: Suite | None = None, *, reuse: bool = True) -> tuple[str, bool]:
    """Write ``tables/`` (CSV, LaTeX, summary.md) for a suite folder unless they are up to
    date. Returns (the markdown comparison for the terminal, whether it was reused)."""
    root = Path(root)
    load_manifest_plugins(root)  # before the fingerprint: their analyses are part of it
    fp = fingerprint(root, suite, part="tables")
    if reuse and (md := cached(root, "tables", fp)) is not None:
        return md, True
    _, markdown = _write_tables(root, analysed_tables(root, suite), fp)
    return markdown, False


def _write_tables(root: Path, tables: dict, fp: str) -> tuple[dict, str]:
    """The comparison of read tables, written to ``tables/`` and remembered under ``fp``."""
    compared = comparison(tables)
    write_tables(compared, root / "tables")
    markdown = render_markdown(compared)
    remember(root, "tables", fp, markdown)
    return compared, markdown


def build_report(root: str | Path, suite: Suite | None = None, *, figures: bool = True, svg: bool = False,
                 reuse: bool = True) -> tuple[str, Path]:
    """Write ``tables/`` (CSV, LaTeX), ``figures/`` (PNG; SVG too with ``svg``) and
    ``report.html`` for a suite folder. A report already made from the same finished
    cells, labels, plug-ins, package version and options is kept, and figures drawn before
    from the same tables are copied (`testbed.report.figure_cache`); ``reuse=False``
    redraws every figure.

    Returns (the markdown comparison for the terminal, the report's path).
    """
    root = Path(root)
    load_manifest_plugins(root)  # before the fingerprint: their analyses are part of it
    fp = fingerprint(root, suite, part="report", figures=figures, svg=svg)
    if reuse and (md := cached(root, "report", fp)) is not None:
        return md, root / "report.html"
    # imported here: a report found up to date needs no drawing code
    from testbed.report.drawing import FigurePool

    clock = _Clock()
    pool = FigurePool.start() if figures else None  # its workers start while the tables are read
    try:
        return _build(root, suite, clock, pool, fp, figures=figures, svg=svg, kept=reuse)
    finally:
        if pool is not None:
            pool.close()


def _build(root: Path, suite: Suite | None, clock, pool, fp: str, *, figures: bool, svg: bool,
           kept: bool = True) -> tuple[str, Path]:
    from testbed.report.drawing import draw_figures
    from testbed.report.html import write_report

    tables = analysed_tables(root, suite)
    clock.lap("read_s")
    compared, markdown = _write_tables(root, tables, fingerprint(root, suite, part="tables"))
    clock.lap("tables_s")
    manifest = SuiteStore(root).read_manifest() or {}
    saved = []
    if figures:
        fig_dir = root / "figures"
        for old in fig_dir.glob("[0-9][0-9].*") if fig_dir.is_dir() else []:  # numbered files of older reports
            old.unlink()
        saved = draw_figures(tables, [a for a in all_analyses() if a.figures is not None and measured(a, tables)],
                             fig_dir, ("png", "svg") if svg else ("png",), pool=pool, kept=kept)
    clock.lap("figures_s")
    sections = [(df.attrs.get("title", name), df) for name, df in compared.items()
                if name != FINDINGS and not name.endswith("_long") and not df.empty]
    path = write_report(root, tables, title=f"Suite {manifest.get('suite', root.name)}", manifest=manifest,
                        table_sections=sections, figures=saved, summary=render_findings(compared, heading=False))
    clock.lap("html_s")
    write_timing(root, "report", clock.laps)
    remember(root, "report", fp, markdown)
    return markdown, path


class _Clock:
    """Seconds between laps, by name, with their total."""

    def __init__(self):
        self.t = self.t0 = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.t
        self.laps["total_s"] = now - self.t0
        self.t = now
