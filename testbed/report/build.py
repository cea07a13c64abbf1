"""Everything a finished suite produces for people: tables, figures and report.html.

Loops over the registered analyses: each derives its read-time tables, contributes its
comparison tables and draws its figures. Figure files are named for what they show
(``figures/<task>-loss_curves.png``, ``figures/ood_vs_train.png``, ...). No JAX.
"""

from __future__ import annotations

import time
from pathlib import Path

from testbed.analyses.base import Figure, all_analyses
from testbed.core.plugins import load_plugins
from testbed.core.style import save
from testbed.report.compare import comparison, measured, render_markdown
from testbed.report.html import write_report
from testbed.report.tables import write_tables
from testbed.suites.runner import write_timing
from testbed.suites.spec import Suite
from testbed.suites.store import SuiteStore
from testbed.suites.tables import load_tables


def load_manifest_plugins(root: str | Path) -> list[str]:
    """Import the plug-ins a suite ran with (recorded in its manifest), so their analyses
    take part in reading it back. A plug-in file that is gone is an error naming it."""
    manifest = SuiteStore(root).read_manifest() or {}
    return load_plugins(manifest.get("plugins", []), where=f"{Path(root) / 'manifest.json'}: field 'plugins'")


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
    """Every analysis's figures: those over every task first, then each task's together."""
    figs = [f for a in all_analyses() if a.figures is not None and measured(a, tables) for f in a.figures(tables)]
    tasks = list(dict.fromkeys(f.task for f in figs if f.task is not None))
    return [f for f in figs if f.task is None] + [f for t in tasks for f in figs if f.task == t]


def build_report(root: str | Path, suite: Suite | None = None, *, figures: bool = True) -> tuple[str, Path]:
    """Write ``tables/`` (CSV, LaTeX), ``figures/`` (PNG, SVG) and ``report.html`` for a suite folder.

    Returns (the markdown comparison for the terminal, the report's path).
    """
    root = Path(root)
    clock = _Clock()
    tables = analysed_tables(root, suite)
    clock.lap("read_s")
    compared = comparison(tables)
    write_tables(compared, root / "tables")
    markdown = render_markdown(compared)
    clock.lap("tables_s")
    manifest = SuiteStore(root).read_manifest() or {}
    saved = []
    if figures:
        fig_dir = root / "figures"
        for f in suite_figures(tables):
            caption = f"{f.task}: {f.caption}" if f.task and not f.caption.startswith(f.task) else f.caption
            saved.append((caption, save(f.figure, fig_dir / f.file_stem)[0]))
    clock.lap("figures_s")
    sections = [(df.attrs.get("title", name), df) for name, df in compared.items()
                if not name.endswith("_long") and not df.empty]
    path = write_report(root, tables, title=f"Suite {manifest.get('suite', root.name)}", manifest=manifest,
                        table_sections=sections, figures=saved)
    clock.lap("html_s")
    write_timing(root, "report", clock.laps)
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
