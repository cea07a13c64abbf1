"""Table files and text: markdown for the terminal, CSV and LaTeX files beside it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
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


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A booktabs ``tabular`` of ``df`` (index dropped; numbers right-aligned; NaN as --)."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in df.columns]

    def cell(v) -> str:
        if isinstance(v, float | np.floating):
            return "--" if math.isnan(v) else latex_escape(format(float(v), floatfmt))
        return latex_escape(v)

    lines = [r"% needs \usepackage{booktabs}",
             r"\begin{tabular}{" + "".join("r" if n else "l" for n in numeric) + "}",
             r"\toprule",
             " & ".join(latex_escape(c) for c in df.columns) + r" \\",
             r"\midrule"]
    lines += [" & ".join(cell(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Path]:
    """Write each table as ``<name>.csv`` and ``<name>.tex`` in ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"table name {name!r} is not a plain file name")
        csv, tex = out_dir / f"{name}.csv", out_dir / f"{name}.tex"
        df.to_csv(csv, index=False)
        tex.write_text(latex_table(df))
        paths += [csv, tex]
    return paths
