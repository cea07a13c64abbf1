"""Plain-text tables: markdown for the terminal, beside CSV and LaTeX files."""

from __future__ import annotations

import math

import pandas as pd


def _fmt(v, floatfmt: str) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else format(v, floatfmt)
    return str(v)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured markdown table of ``df`` (index dropped), numbers right-aligned."""
    cols = [str(c) for c in df.columns]
    body = [[_fmt(v, floatfmt) for v in row] for row in df.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    widths = [max([len(c)] + [len(r[i]) for r in body]) for i, c in enumerate(cols)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric, strict=True)) + " |"

    sep = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                         for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(cols), sep, *(line(r) for r in body)])
