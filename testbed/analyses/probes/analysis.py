"""``probes``: the model's predictions at fixed probe inputs over training.

Per cell: the ``probes`` table (`testbed.training.tables.probe_table`, first seed of each
grid point). Figure: per task, the predictions over training next to the loss, one row
per method.
"""

from __future__ import annotations

import pandas as pd

from testbed.analyses.base import Analysis, Figure, register_analysis


def _measure(task, method, result) -> dict[str, pd.DataFrame]:
    from testbed.training.tables import probe_table

    return {"probes": probe_table(task, result)}


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.figkit import method_labels
    from testbed.analyses.probes import figures

    if "probes" not in tables or tables["probes"].empty:
        return []
    out = []
    for task in dict.fromkeys(method_labels(tables)["task"]):
        try:
            fig = figures.probe_trajectory(tables, task)
        except ValueError:
            continue
        if fig is not None:
            out.append(Figure("probe_trajectory", figures.CAPTION.format(task=task), fig, task))
    return out


@register_analysis("probes")
def probes() -> Analysis:
    """Predictions at the probe inputs over training (runs on every cell)."""
    return Analysis("probes", default=True, tables=("probes",), measure=_measure, figures=_figures)
