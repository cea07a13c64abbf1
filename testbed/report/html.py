"""One self-contained HTML report for a suite: header, contents, tables, figures.

`write_report` writes ``root/report.html`` with every image inlined as a base64 data URI
and a small embedded style sheet: no other files, no network (no CDN CSS, fonts or
scripts), so the file can be mailed, archived or opened offline. `figures_for_suite`
"""

from __future__ import annotations

import base64
import html
import io
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from testbed.core.files import atomic_write_text

# matplotlib and the figure style (seaborn) load only to render a Figure object: a report of
# figures already saved as files needs neither (~1-2 s of a warm bench)
if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["write_report"]


CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d8dee4; --soft: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.5;
       font: 15px/1.5 -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 28px 80px; }
h1 { font-size: 1.75em; margin: 0 0 6px; }
h2 { font-size: 1.3em; margin: 42px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: 30px 0 6px; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
.facts { color: var(--muted); font-size: 0.9em; margin: 0 0 4px; }
.facts b { color: var(--ink); font-weight: 600; }
.facts code { font-size: 0.95em; }
nav.toc { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 18px;
          margin: 20px 0 8px; font-size: 0.92em; }
nav.toc ol { margin: 4px 0; padding-left: 22px; } nav.toc > ol { columns: 2; column-gap: 36px; }
nav.toc li { break-inside: avoid; }
.tablewrap { overflow-x: auto; margin: 8px 0 18px; border: 1px solid var(--line); border-radius: 6px; }
table.data { border-collapse: collapse; font-size: 0.84em; width: 100%;
             font-variant-numeric: tabular-nums; }
table.data th, table.data td { padding: 4px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; }
table.data th { background: var(--soft); text-align: left; font-weight: 600; position: sticky; top: 0; }
table.data td.num, table.data th.num { text-align: right; }
table.data tr:nth-child(even) td { background: #fbfcfd; }
table.data tr:hover td { background: #eef4fb; }
figure { margin: 14px 0 34px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 0.92em; margin-top: 8px; max-width: 980px; }
figcaption p { margin: 4px 0; }
p.text { max-width: 980px; }
code { background: var(--soft); padding: 1px 4px; border-radius: 3px; font-size: 0.92em; }
footer { color: var(--muted); font-size: 0.85em; margin-top: 48px; border-top: 1px solid var(--line);
         padding-top: 10px; }
"""


# -- content to HTML -------------------------------------------------------------------

def _fmt_float(v: float) -> str:
    return f"{v:.4g}"


def _table_html(df: pd.DataFrame) -> str:
    out = df.to_html(classes="data", index=False, float_format=_fmt_float, border=0, na_rep="–", escape=True)
    # right-align numeric columns (pandas' HTML has no per-column classes)
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c]) for c in df.columns]
    if any(numeric):
        rows = out.split("<tr")
        fixed = [rows[0]]
        for row in rows[1:]:
            cells = re.split(r"(?=<t[dh][ >])", row)
            head, cells = cells[0], cells[1:]
            cells = [re.sub(r"^<(t[dh])", r'<\1 class="num"', c, count=1) if i < len(numeric) and numeric[i] else c
                     for i, c in enumerate(cells)]
            fixed.append(head + "".join(cells))
        out = "<tr".join(fixed)
    return f'<div class="tablewrap">{out}</div>'


def _inline(text: str) -> str:
    """Escape, then `code` and **bold**."""
    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)


def _markdown_table(lines: list[str]) -> str:
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines]
    rows = [r for r in rows if not all(re.fullmatch(r":?-{2,}:?", c) for c in r if c)]
    if not rows:
        return ""
    head, body = rows[0], rows[1:]

    def is_num(s: str) -> bool:
        return bool(re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?%?|nan|inf|-inf|–", s))

    numeric = [bool(body) and all(is_num(r[i]) for r in body if i < len(r)) for i in range(len(head))]

    def cell(tag: str, s: str, i: int) -> str:
        cls = ' class="num"' if i < len(numeric) and numeric[i] else ""
        return f"<{tag}{cls}>{_inline(s)}</{tag}>"

    th = "".join(cell("th", c, i) for i, c in enumerate(head))
    trs = "".join("<tr>" + "".join(cell("td", c, i) for i, c in enumerate(r)) + "</tr>" for r in body)
    return f'<div class="tablewrap"><table class="data"><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'


def _text_html(text: str) -> str:
    """HTML as is (text starting with '<'), else markdown-ish: tables, '- ' lists, '#' headings,
    ``` blocks and paragraphs."""
    if text.lstrip().startswith("<"):
        return text
    out: list[str] = []
    blocks = re.split(r"\n\s*\n", text.strip("\n"))
    for block in blocks:
        lines = block.splitlines()
        if not lines:
            continue
        if lines[0].startswith("```"):
            body = "\n".join(ln for ln in lines[1:] if not ln.startswith("```"))
            out.append(f"<pre><code>{html.escape(body)}</code></pre>")
        elif all(ln.strip().startswith("|") for ln in lines):
            out.append(_markdown_table(lines))
        elif all(ln.lstrip().startswith(("- ", "* ")) for ln in lines):
            out.append("<ul>" + "".join(f"<li>{_inline(ln.lstrip()[2:])}</li>" for ln in lines) + "</ul>")
        elif lines[0].startswith("#"):
            level = min(len(lines[0]) - len(lines[0].lstrip("#")) + 2, 4)
            out.append(f"<h{level}>{_inline(lines[0].lstrip('#').strip())}</h{level}>")
            if lines[1:]:
                out.append(_text_html("\n".join(lines[1:])))
        else:
            out.append(f'<p class="text">{_inline(" ".join(ln.strip() for ln in lines))}</p>')
    return "\n".join(out)


def _content_html(content) -> str:
    if isinstance(content, pd.DataFrame):
        return _table_html(content)
    return _text_html(str(content))


def _image_uri(fig: Figure | Path | str) -> str:
    """A base64 data URI: figures as PNG at the report resolution (then closed); files as they are
    (.png, .svg)."""
    if not isinstance(fig, str | os.PathLike):  # a matplotlib Figure
        import matplotlib.pyplot as plt

        from testbed.core.style import DPI

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
        plt.close(fig)
        return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    path = Path(fig)
    mime = {".png": "image/png", ".svg": "image/svg+xml"}.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"write_report: figure file {path} is not .png or .svg")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _split_caption(text: str) -> tuple[str, str]:
    """(heading, caption): the first line and the rest; a single line is split at its first
    sentence end ('. ') when longer than 90 characters."""
    text = text.strip()
    if "\n" in text:
        head, rest = text.split("\n", 1)
        return head.strip(), rest.strip()
    if len(text) > 90 and ". " in text:
        head, rest = text.split(". ", 1)
        return head.strip(), rest.strip()
    return text, ""


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "section"
    slug, i = base, 2
    while slug in used:
        slug, i = f"{base}-{i}", i + 1
    used.add(slug)
    return slug


# -- header -------------------------------------------------------------------------------

def _get(m: Mapping, *keys: str):
    """The first present key among ``keys`` in the manifest or its ``provenance``/``platform`` parts."""
    scopes = [m] + [m[k] for k in ("provenance", "platform_info", "host") if isinstance(m.get(k), Mapping)]
    for key in keys:
        for scope in scopes:
            v = scope.get(key)
            if v not in (None, "", [], {}):
                return v
    return None


def _header_facts(manifest: Mapping | None, tables: Mapping[str, pd.DataFrame]) -> list[str]:
    facts = []
    m = manifest or {}
    suite = _get(m, "suite", "name", "suite_name")
    date = _get(m, "created", "date", "started", "finished", "created_at", "timestamp")
    if suite:
        facts.append(f"<b>suite</b> {html.escape(str(suite))}")
    if date:
        facts.append(f"<b>run</b> {html.escape(str(date))}")
    facts.append(f"<b>report</b> {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    commit = _get(m, "git_commit", "commit", "git")
    if commit:
        facts.append(f"<b>commit</b> <code>{html.escape(str(commit))}</code>")
    lines = ["   ·   ".join(facts)]
    plat = _get(m, "platform", "os")
    extra = []
    if isinstance(plat, Mapping):
        plat = ", ".join(f"{k} {v}" for k, v in plat.items())
    if plat:
        extra.append(f"<b>platform</b> {html.escape(str(plat))}")
    backend = _get(m, "backend")
    devices = _get(m, "devices")
    if backend or devices:
        dev = f"{len(devices)} device(s)" if isinstance(devices, list | tuple) else (devices or "")
        extra.append(f"<b>backend</b> {html.escape(' '.join(str(x) for x in (backend, dev) if x))}")
    if extra:
        lines.append("   ·   ".join(extra))
    versions = _get(m, "versions")
    if isinstance(versions, Mapping) and versions:
        lines.append("<b>versions</b> " + html.escape(", ".join(f"{k} {v}" for k, v in versions.items())))
    size = _suite_size(tables)
    if size:
        lines.append(size)
    return lines


def _suite_size(tables: Mapping[str, pd.DataFrame]) -> str:
    src = tables.get("runs")
    if src is None or src.empty:
        src = tables.get("history")
    if src is None or src.empty:
        return ""
    parts = []
    for col, name in (("cell", "cells"), ("task", "tasks"), ("method", "methods"), ("model", "models"),
                      ("optimizer", "optimizers")):
        if col in src.columns:
            vals = sorted(map(str, src[col].unique()))
            shown = "" if col == "cell" or len(vals) > 8 else " (" + ", ".join(vals) + ")"
            parts.append(f"{len(vals)} {name}{shown}")
    if "run" in src.columns and "cell" in src.columns:
        parts.append(f"{len(src[['cell', 'run']].drop_duplicates())} runs")
    if "diverged_step" in src.columns:
        div = int((src.drop_duplicates(["cell", "run"])["diverged_step"] >= 0).sum())
        parts.append(f"{div} diverged")
    return "<b>size</b> " + html.escape(", ".join(parts))


# -- the report ------------------------------------------------------------------------------

def write_report(root: Path | str, tables: Mapping[str, pd.DataFrame], *, title: str,
                 manifest: Mapping | None = None,
                 table_sections: Sequence[tuple[str, str | pd.DataFrame]] = (),
                 figures: Sequence[tuple[str, Figure | Path]] = (), summary: str | None = None) -> Path:
    """Write one self-contained ``root/report.html`` and return its path.

    Args:
        root: folder to write into (created if missing).
        tables: the suite tables (their size goes into the header).
        title: the page title.
        manifest: the suite manifest; read for the suite name, date, git commit, platform,
            backend, devices and package versions (top level or under ``provenance``);
            missing keys are left out.
        table_sections: (title, content) in order; content a DataFrame (rendered with
            ``DataFrame.to_html``, numbers to 4 significant digits, numeric columns
            right-aligned), an HTML string (starting with '<', inserted as is) or
            markdown-ish text (pipe tables, '- ' lists, '#' headings, paragraphs).
        summary: markdown-ish text shown first, under "Findings" (what a person reads first).
        figures: (text, figure) in order; the figure a matplotlib Figure (rendered to PNG
            at dpi 120 and closed) or a .png/.svg file. The text's first line is the
            figure's heading, the rest its caption (a single long line: the first
            sentence is the heading).

    Every image is inlined as a base64 data URI; the page loads nothing else.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    toc: list[str] = []
    body: list[str] = []
    if summary:
        used.add("findings")
        body.append(f'<section id="findings"><h2>Findings</h2>\n{_content_html(summary)}\n</section>')
        toc.append('<li><a href="#findings">Findings</a></li>')
    if table_sections:
        body.append('<h2 id="tables">Tables</h2>')
        used.add("tables")
        sub = []
        for name, content in table_sections:
            sid = _slug(name, used)
            sub.append(f'<li><a href="#{sid}">{html.escape(name)}</a></li>')
            body.append(f'<section id="{sid}"><h3>{html.escape(name)}</h3>\n{_content_html(content)}\n</section>')
        toc.append(f'<li><a href="#tables">Tables</a><ol>{"".join(sub)}</ol></li>')
    if figures:
        body.append('<h2 id="figures">Figures</h2>')
        used.add("figures")
        sub = []
        for n, (text, fig) in enumerate(figures, 1):
            head, cap = _split_caption(text)
            fid = _slug(f"fig-{n}-{head}", used)
            sub.append(f'<li><a href="#{fid}">{html.escape(head)}</a></li>')
            caption = "".join(f"<p>{_inline(p)}</p>" for p in cap.split("\n") if p.strip())
            body.append(f'<figure id="{fid}"><h3>Figure {n}. {html.escape(head)}</h3>'
                        f'<img src="{_image_uri(fig)}" alt="{html.escape(head, quote=True)}">'
                        + (f"<figcaption>{caption}</figcaption>" if caption else "") + "</figure>")
        toc.append(f'<li><a href="#figures">Figures</a><ol>{"".join(sub)}</ol></li>')
    facts = "".join(f'<p class="facts">{line}</p>' for line in _header_facts(manifest, tables))
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<header><h1>{html.escape(title)}</h1>
{facts}
</header>
<nav class="toc"><b>Contents</b><ol>{"".join(toc)}</ol></nav>
{chr(10).join(body)}
<footer>Written by testbed.report.html. Self-contained: every image is embedded in this file.</footer>
</main>
</body>
</html>
"""
    path = root / "report.html"
    atomic_write_text(path, page)
    return path
