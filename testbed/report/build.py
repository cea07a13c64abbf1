"""Everything a finished suite produces for people: tables, figures and report.html."""

from __future__ import annotations

from pathlib import Path

from testbed.analysis.plateaus import run_plateaus, with_final_loss
from testbed.report.compare import comparison, render_markdown, write_tables
from testbed.report.html import figures_for_suite, write_report
from testbed.report.myopia_plots import reward_curves, shutdown_heatmap
from testbed.report.plots import save
from testbed.report.routing_plots import routing_figure
from testbed.store import SuiteStore
from testbed.suite import Suite, load_tables

# (table whose presence marks the analysis, figure(tables, task) -> Figure | None, caption after "<task>: ")
ANALYSIS_FIGURES = (
    ("ablation", routing_figure,
     "gradient routing\nLeft: per-piece train loss with each block ablated; a localized model loses only the "
     "ablated block's piece. Right: per-piece loss while fine-tuning after the first block was zeroed."),
    ("profile", shutdown_heatmap,
     "shutdown probability by epoch index over training\nEach panel: mean P(shutdown) on train inputs (colour) "
     "for every epoch index fed to the model (y) at every evaluation (x, training time in epochs). A myopic "
     "model's probability jumps when the current epoch (dotted diagonal) reaches the turn epoch (dashed); a "
     "long-horizon model that keeps it low through a negative window is avoiding shutdown to collect the later "
     "bonus, and one that is high on future indices before reaching them anticipates the turn. Rows above the "
     "white line were never seen in training."),
    ("profile", reward_curves,
     "reward and shutdown probability over training\nLeft: mean reward per update (0 once a run has shut "
     "down); right: P(shutdown) at the current epoch (held at its last value after shutdown); quarter-epoch "
     "bins, mean over runs. A model that shuts down at the turn stops the loss; one that runs through the "
     "window pays the penalty there and collects the bonus after it."),
)


def analysed_tables(root: str | Path, suite: Suite | None = None) -> dict:
    """The suite's tables (docs/suite_tables.md) plus ``plateau_rows`` (one row per detected
    plateau of each run's per-update training loss) and ``plateaus`` (per run: plateau count
    and time, final train loss and whether it reached zero)."""
    tables = load_tables(root, suite)
    cell_cols = ["cell", "task", "method", "model", "optimizer", "lr", "weight_decay", "init_scale"]
    tables["plateau_rows"], per_run = run_plateaus(tables["batch_loss"], by=cell_cols)
    tables["plateaus"] = with_final_loss(per_run, tables["history"])
    return tables


def build_report(root: str | Path, suite: Suite | None = None, *, figures: bool = True) -> tuple[str, Path]:
    """Write ``tables/`` (CSV, LaTeX), ``figures/`` (PNG, SVG) and ``report.html`` for a suite folder.

    Returns (the markdown comparison for the terminal, the report's path).
    """
    root = Path(root)
    tables = analysed_tables(root, suite)
    compared = comparison(tables)
    write_tables(compared, root / "tables")
    markdown = render_markdown(compared)
    manifest = SuiteStore(root).read_manifest() or {}
    figs = figures_for_suite(tables, plateaus=tables["plateau_rows"]) if figures else []
    if figures:
        for source, make, caption in ANALYSIS_FIGURES:
            if source not in tables:
                continue
            for task in dict.fromkeys(tables[source]["task"].astype(str)):
                fig = make(tables, task)
                if fig is not None:
                    figs.append((f"{task}: {caption}", fig))
    fig_dir = root / "figures"
    saved = []
    for i, (caption, fig) in enumerate(figs):
        paths = save(fig, fig_dir / f"{i:02d}")
        saved.append((caption, paths[0]))
    sections = [(df.attrs.get("title", name), df) for name, df in compared.items()
                if not name.endswith("_long") and not df.empty]
    path = write_report(root, tables, title=f"Suite {manifest.get('suite', root.name)}", manifest=manifest,
                        table_sections=sections, figures=saved)
    return markdown, path
