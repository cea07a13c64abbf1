"""Tests for the HTML report (`testbed.report.html`) and the suite's figures (`testbed.report.build`)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest
from figure_tables import TASKS, png_ok
from matplotlib.figure import Figure

from testbed.analyses.attribution.figures import attribution_bars
from testbed.analyses.ood.figures import piece_heatmap
from testbed.analyses.probes.figures import probe_trajectory
from testbed.core.style import DPI
from testbed.report import html as rhtml
from testbed.report.build import suite_figures


def test_write_report_self_contained(tables, tmp_path):
    extra_png = tmp_path / "attr.png"
    attribution_bars(tables).savefig(extra_png, dpi=DPI)
    summary = pd.DataFrame({"task": ["line1d", "grid2d"], "final_mse": [0.0123456, 2.5e-7]})
    md = "Notes on the run.\n\n| task | value |\n|---|---:|\n| dist1d | 0.5 |\n\n- one\n- two"
    figs = [("Loss of line1d\nLook for the drop.", probe_trajectory(tables, "dist1d")),
            ("Piece heatmap", piece_heatmap(tables)), ("From a file", extra_png)]
    manifest = {"suite": "tiny", "created": "2025-01-02", "provenance": {
        "git_commit": "0123abc", "platform": "Linux-test", "versions": {"jax": "0.10.2", "numpy": "2.4"}}}
    path = rhtml.write_report(tmp_path / "rep", tables, title="Tiny suite", manifest=manifest,
                              table_sections=[("Summary", summary), ("Notes", md)], figures=figs)
    assert path == tmp_path / "rep" / "report.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    text = path.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 3
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert len(data) > 5000
        png_ok(data)
    for needle in ("tiny", "0123abc", "Linux-test", "jax 0.10.2", "Tiny suite", "final_mse", "0.01235", "2.5e-07",
                   "Notes on the run.", "dist1d", "<li>one</li>", "Look for the drop.", "Loss of line1d"):
        assert needle in text, needle
    assert text.count('<table class="') == 2
    assert text.count("<figure") == 3
    for sid in re.findall(r'<a href="#([^"]+)"', text):  # the contents link to ids that exist
        assert f'id="{sid}"' in text


def test_suite_figures(tables):
    figs = suite_figures(tables)
    heads = [f.caption.split("\n", 1)[0] for f in figs]
    assert heads[:3] == ["Final OOD vs train error", "Final error per piece",
                         "OOD attribution: which behaviour the final predictions follow"]
    assert len(figs) == 3 + 4 * len(TASKS)  # per task: loss curves, run curves, predictions, probe velocity
    assert heads[3:7] == ["line1d: mse over training",
                          "line1d: every run's per-update training loss, with what the plateau detector found",
                          "line1d: predictions over training", "line1d: how fast the predictions move, under the loss"]
    assert all(isinstance(f.figure, Figure) for f in figs)
    assert all("Look for" in f.caption for f in figs)


def test_the_report_opens_with_the_findings(tmp_path):
    path = rhtml.write_report(tmp_path, {}, title="t", summary="- **task**: lowest OOD mse: a.\n- No run diverged.",
                              table_sections=[("T", "text")])
    page = path.read_text()
    assert page.index('id="findings"') < page.index('id="tables"')
    assert "<li><b>task</b>: lowest OOD mse: a.</li>" in page


def test_figures_drawn_in_processes_are_the_same_files_in_the_same_order(tables, tmp_path, monkeypatch):
    from testbed.analyses.base import all_analyses
    from testbed.report.build import suite_figures
    from testbed.report.compare import measured
    from testbed.report.drawing import draw_figures, figure_workers

    analyses = [a for a in all_analyses() if a.figures is not None and measured(a, tables)]
    from testbed.report import drawing

    one = draw_figures(tables, analyses, tmp_path / "one", ("png",), workers=1)
    here = []  # what this process draws with one worker beside it: some, not all
    real = drawing._draw
    monkeypatch.setattr(drawing, "_draw", lambda a, *args: here.append(a.name) or real(a, *args))
    two = draw_figures(tables, analyses, tmp_path / "two", ("png",), workers=2)
    assert len(analyses) >= 2 and 0 < len(here) < len(analyses), here
    assert [c for c, _ in one] == [c for c, _ in two] == [f.caption for f in suite_figures(tables)]
    for (_, a), (_, b) in zip(one, two, strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    monkeypatch.setenv("TESTBED_FIGURE_WORKERS", "3")
    assert figure_workers(10) == 3 and figure_workers(2) == 2
    monkeypatch.setenv("TESTBED_FIGURE_WORKERS", "many")
    with pytest.raises(ValueError, match="TESTBED_FIGURE_WORKERS='many'"):
        figure_workers(4)


PLUGIN = '''
import matplotlib.pyplot as plt
import testbed
from testbed.analyses.base import Analysis, Figure

for i in range(4):  # figures done at once: a worker's job ends before its callback is added
    testbed.register_analysis(f"quick{i}")(lambda i=i: Analysis(f"quick{i}", figures=lambda tables: []))


@testbed.register_analysis("peek")
def peek():  # reads the probes analysis's table without declaring it (Analysis.tables)
    def figures(tables):
        fig, ax = plt.subplots()
        ax.plot(range(min(10, len(tables["probes"]))))
        return [Figure("peek", "peek: probes rows", fig)]
    return Analysis("peek", figures=figures)
'''

SCRIPT = '''
import sys, warnings
from pathlib import Path
sys.path.insert(0, {tests!r})
from figure_tables import synthetic_tables
from testbed.analyses.base import all_analyses, make_analysis
from testbed.core.plugins import load_plugins
from testbed.report import drawing
from testbed.report.compare import measured

if __name__ == "__main__":
    load_plugins([{plugin!r}])  # a plug-in file: its module has no package
    tables = synthetic_tables()
    quick = [make_analysis(f"quick{{i}}") for i in range(4)]
    pool = drawing.FigurePool.start(3)
    for _ in range(300):  # once hung within ~100 rounds (a lock taken twice by one thread)
        drawing.draw_figures(tables, quick, Path({out!r}), ("png",), pool=pool)
    pool.close()
    # a few (the bytes of every analysis's figures in processes: the test above); peek ships the
    # fewest bytes, so a worker takes it
    analyses = [a for a in all_analyses() if a.name in ("ood", "attribution", "peek") and measured(a, tables)]
    assert len(analyses) == 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one = drawing.draw_figures(tables, analyses, Path({out!r}) / "one", ("png",), workers=1)
        three = drawing.draw_figures(tables, analyses, Path({out!r}) / "three", ("png",), workers=3)
    assert [c for c, _ in one] == [c for c, _ in three] and "peek: probes rows" in [c for c, _ in one]
    assert all(a.read_bytes() == b.read_bytes() for (_, a), (_, b) in zip(one, three))
    said = [str(w.message) for w in caught]
    assert not any("failed" in m for m in said), said  # the workers started (no package is fine)
    print("ok", said)
'''


def test_the_figure_pool_survives_instant_jobs_plugin_files_and_undeclared_tables(tmp_path):
    """Three things a review of the figure pool found, each once broken: jobs that finish before
    their callback is added (a hang), analyses from a plug-in file (their workers failed to start),
    and a figure reading a table it does not declare (a KeyError in a worker: now drawn here, with a
    warning naming the table)."""
    import subprocess
    import sys

    plugin = tmp_path / "figure_plugin.py"
    plugin.write_text(PLUGIN)
    code = SCRIPT.format(tests=str(Path(__file__).parent), plugin=str(plugin), out=str(tmp_path / "figs"))
    (tmp_path / "run.py").write_text(code)
    out = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
    assert "the table 'probes' that its Analysis.tables does not name" in out.stdout
