"""``probes``: the model's predictions at fixed probe inputs over training, and how fast they move.

Per cell: the ``probes`` table (`testbed.training.tables.probe_table`, first seed of each
grid point). Derived when read: ``probe_velocity`` (`testbed.analyses.probes.velocity`).
Figures: per task, the predictions over training next to the loss, one row per method;
and the probe velocity under the loss with the stall escapes marked.
"""

from __future__ import annotations

import pandas as pd

from testbed.analyses.base import Analysis, Figure, register_analysis


def _measure(task, method, result) -> dict[str, pd.DataFrame]:
    from testbed.training.tables import probe_table

    return {"probes": probe_table(task, result)}


def _derive(tables: dict) -> dict[str, pd.DataFrame]:
    from testbed.analyses.probes.velocity import probe_velocity

    p = tables.get("probes")
    if p is None or p.empty:
        return {}
    kinds = p["target"].astype(str) if "target" in p.columns and "y" in p.columns else None
    parts = []
    for kind, sub in ([(None, p)] if kinds is None else p.groupby(kinds, observed=True)):
        parts.append(probe_velocity(sub, by=("cell",), target=kind or "scalar"))
    return {"probe_velocity": pd.concat(parts, ignore_index=True)}


def _figures(tables: dict) -> list[Figure]:
    from testbed.analyses.figkit import method_labels
    from testbed.analyses.probes import figures

    if "probes" not in tables or tables["probes"].empty:
        return []
    out = []
    for task in dict.fromkeys(method_labels(tables)["task"]):
        for name, draw, caption in (("probe_trajectory", figures.probe_trajectory, figures.CAPTION),
                                    ("probe_velocity", figures.velocity_curves, figures.VELOCITY_CAPTION)):
            try:
                fig = draw(tables, task)
            except ValueError:
                continue
            if fig is not None:
                out.append(Figure(name, caption.format(task=task), fig, task))
    return out


@register_analysis("probes")
def probes() -> Analysis:
    """Predictions at the probe inputs over training (runs on every cell)."""
    return Analysis("probes", default=True, tables=("probes",), measure=_measure, derive=_derive,
                    figures=_figures)
