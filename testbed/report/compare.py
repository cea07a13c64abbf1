"""Method comparison tables of a suite: every registered analysis's, in registration order.

`comparison` reads the suite's tables once into a `testbed.analyses.kit.View` and asks
each analysis for its tables (see each analysis's module for what they hold: ``ood``,
``train``, ``ratio``, ... from `testbed.analyses.ood.analysis`, ``attribution`` from
`testbed.analyses.attribution.analysis`, and so on). The headline table (the first table
of the first analysis) gets the columns analyses add to it (``headline``). Nothing here
knows an analysis by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from testbed.analyses.base import all_analyses
from testbed.analyses.kit import view
from testbed.report.tables import markdown_table


def comparison(tables: dict[str, pd.DataFrame], *, metric: str | None = None,
               level: float = 0.95, digits: int = 3) -> dict[str, pd.DataFrame]:
    """Comparison tables from suite tables (`testbed.load_tables` plus derived tables).

    Args:
        tables: the suite tables; ``history`` is required.
        metric: the metric compared on every task; default each task's ``primary``.
        level: confidence level of the bootstrap intervals.
        digits: significant digits of the display strings (``0.0123 [0.0101, 0.0150]``).

    Returns:
        Named DataFrames with plain columns; ``attrs["title"]`` and ``attrs["note"]``
        describe each.
    """
    v = view(tables, metric=metric, level=level, digits=digits)
    out: dict[str, pd.DataFrame] = {}
    analyses = all_analyses()
    for a in analyses:
        if a.compare is not None and measured(a, tables):
            for name, df in a.compare(v).items():
                if name in out:
                    raise ValueError(f"analysis {a.name!r}: comparison table {name!r} is already made by another")
                out[name] = df
    if out:
        head = next(iter(out))
        for a in analyses:
            extra = a.headline(v) if a.headline is not None and measured(a, tables) else None
            if extra is not None and len(extra):
                out[head] = _add_columns(out[head], extra)
    lines = [s for a in analyses if a.findings is not None and measured(a, tables) for s in a.findings(v, out)]
    found = pd.DataFrame({"task": [s[0] if isinstance(s, tuple) else "" for s in lines],
                          "finding": [s[1] if isinstance(s, tuple) else s for s in lines]})
    found.attrs.update(title="Findings", note="What the tables say, in short; the tables and figures hold the rest.")
    return {FINDINGS: found, **out}


FINDINGS = "findings"  # the comparison's own first table: every analysis's findings, in order


def measured(analysis, tables: dict) -> bool:
    """Whether a suite's tables hold what an analysis measures per cell (all of its
    ``tables``; an analysis without per-cell tables reads whatever is there)."""
    return all(name in tables for name in analysis.tables)


def _add_columns(table: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    attrs = dict(table.attrs)
    merged = table.merge(extra, on="label", how="left")
    for c in extra.columns:
        if c != "label" and merged[c].dtype == object:
            merged[c] = merged[c].fillna("-")
    merged.attrs.update(attrs)
    return merged


def printed_tables() -> list[str]:
    """Names of the comparison tables `testbed compare` prints, in order."""
    return [name for a in all_analyses() for name in a.printed]


def render_findings(tables: dict[str, pd.DataFrame], *, heading: bool = True) -> str:
    """The findings as a markdown list (under a heading), what a person reads first."""
    found = tables.get(FINDINGS)
    lines = []
    if found is not None and len(found):
        for task, g in found.groupby("task", sort=False):  # a task's findings on one line; the suite's after
            if task:
                lines.append(f"**{task}**: " + "; ".join(g["finding"]) + ".")
        lines += [s if s.endswith(".") else s + "." for s in found.loc[found["task"] == "", "finding"]]
    items = "\n".join(f"- {s}" for s in lines) if lines else "- (nothing measured)"
    return ("## Findings\n\n" if heading else "") + items + "\n"


def render_markdown(tables: dict[str, pd.DataFrame], which: Sequence[str] | None = None, *,
                    full: bool = True) -> str:
    """Markdown for the terminal: the findings, then (``full``) sections (title, note,
    table) for the named tables that were made (default `printed_tables`). A table marked
    ``attrs["per_task"]`` is shown per task, with only the columns that task has."""
    parts = [render_findings(tables).rstrip()] if which is None else []
    if not full:
        return parts[0] + "\n"
    for name in printed_tables() if which is None else which:
        if name not in tables:
            if which is not None:
                raise KeyError(f"no table {name!r}; have {sorted(tables)}")
            continue
        df = tables[name]
        parts.append(f"## {df.attrs.get('title', name)}")
        if df.attrs.get("note"):
            parts.append(df.attrs["note"])
        if df.empty:
            parts.append("(no rows)")
        elif df.attrs.get("per_task") and "task" in df.columns:
            for task, g in df.groupby("task", sort=False):
                g = g.drop(columns="task").dropna(axis=1, how="all")
                parts.append(f"### {task}\n\n{markdown_table(g, floatfmt='.1f')}")
        else:
            parts.append(markdown_table(df))
    return "\n\n".join(parts) + "\n"


def findings_part(markdown: str) -> str:
    """The findings section of a `render_markdown` text (it comes first)."""
    head, _, _ = markdown.partition("\n\n## ")
    return head.rstrip() + "\n"
