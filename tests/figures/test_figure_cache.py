"""The figure cache: a report of the same tables copies its figures; any change draws them again."""

import json

import pytest

from testbed.analyses.base import all_analyses
from testbed.report import drawing, figure_cache
from testbed.report.compare import measured


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(figure_cache.ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def counted(monkeypatch):
    """Analyses drawn (not copied) in this process."""
    names, real = [], drawing._draw
    monkeypatch.setattr(drawing, "_draw", lambda a, *args: names.append(a.name) or real(a, *args))
    return names


def _analyses(tables):
    return [a for a in all_analyses() if a.figures is not None and measured(a, tables)]


def _two(tables):
    """Two analyses that draw in ~2 s together (ood, attribution; plateaus and probes take
    ~3-4 s each): what a test needs of "some figures" it draws several times."""
    two = [a for a in _analyses(tables) if a.name in ("ood", "attribution")]
    assert len(two) == 2
    return two


def test_the_same_tables_copy_the_same_files_and_a_changed_number_draws_again(tables, cache, counted, tmp_path):
    analyses = _analyses(tables)
    first = drawing.draw_figures(tables, analyses, tmp_path / "a", ("png",), workers=1)
    assert sorted(counted) == sorted(a.name for a in analyses) and len(first) > 5
    counted.clear()
    again = drawing.draw_figures({k: v.copy() for k, v in tables.items()}, analyses, tmp_path / "b", ("png",),
                                 workers=1)
    assert counted == []  # nothing drawn
    assert [c for c, _ in again] == [c for c, _ in first]
    assert [p.name for _, p in again] == [p.name for _, p in first]
    assert all(a.read_bytes() == b.read_bytes() for (_, a), (_, b) in zip(first, again, strict=True))
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(p.name for p in (tmp_path / "a").iterdir())

    # The key hashes every table of the report, whichever an analysis reads: two analyses
    # show what a change does to all of them (drawing all four more times took ~20 s).
    some = _two(tables)
    drawing.draw_figures(tables, some, tmp_path / "e", ("png",), workers=1, kept=False)  # --redraw
    assert sorted(counted) == sorted(a.name for a in some)
    counted.clear()

    changed = {k: v.copy() for k, v in tables.items()}
    h = changed["history"]
    h.loc[h.index[0], "value"] = h["value"].iloc[0] * 1.5  # one number
    drawing.draw_figures(changed, some, tmp_path / "c", ("png",), workers=1)
    assert sorted(counted) == sorted(a.name for a in some)  # drawn again
    counted.clear()
    drawing.draw_figures(tables, some, tmp_path / "d", ("png", "svg"), workers=1)
    assert sorted(counted) == sorted(a.name for a in some)  # another format: drawn


def test_a_damaged_entry_is_drawn_again_and_replaced(tables, cache, counted, tmp_path):
    analyses = _analyses(tables)[:1]
    drawing.draw_figures(tables, analyses, tmp_path / "a", ("png",), workers=1)
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    png = next(p for p in entry.iterdir() if p.suffix == ".png")
    png.write_bytes(png.read_bytes()[:100])  # truncated
    counted.clear()
    out = drawing.draw_figures(tables, analyses, tmp_path / "b", ("png",), workers=1)
    assert counted == [analyses[0].name]
    assert out[0][1].read_bytes() == (tmp_path / "a" / out[0][1].name).read_bytes()
    counted.clear()
    drawing.draw_figures(tables, analyses, tmp_path / "c", ("png",), workers=1)
    assert counted == []  # the replaced entry loads


def test_off_and_eviction(tables, cache, counted, tmp_path, monkeypatch):
    analyses = _two(tables)
    monkeypatch.setenv(figure_cache.ENV, "off")
    drawing.draw_figures(tables, analyses, tmp_path / "a", ("png",), workers=1)
    drawing.draw_figures(tables, analyses, tmp_path / "b", ("png",), workers=1)
    assert len(counted) == 4 and not cache.exists()
    monkeypatch.setenv(figure_cache.ENV, str(cache))
    drawing.draw_figures(tables, analyses, tmp_path / "c", ("png",), workers=1)
    entries = sorted(p for p in cache.iterdir() if not p.name.startswith("."))
    assert len(entries) == 2 and all(json.loads((e / "manifest.json").read_text())["files"] for e in entries)
    size = max(sum(f.stat().st_size for f in e.iterdir()) for e in entries)
    figure_cache._evict(cache, limit=size)  # room for one: the one used longest ago goes
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_a_table_that_cannot_be_hashed_turns_the_cache_off_for_that_report(tables, cache):
    odd = {**tables, "odd": tables["runs"].assign(lists=[[1]] * len(tables["runs"]))}
    assert figure_cache.table_digest(odd["odd"]) is None
    ood = [a for a in all_analyses() if a.name == "ood"]
    assert set(figure_cache.keys(ood, odd, ("png",)).values()) == {None}
    assert figure_cache.keys(ood, tables, ("png",))["ood"] is not None
    assert figure_cache.keys(ood, tables, ("png", "svg"))["ood"] is None  # an SVG is drawn every time
    assert figure_cache.table_digest(tables["runs"]) == figure_cache.table_digest(tables["runs"].copy())
    cats = tables["runs"].astype({"method": "category"})
    flipped = cats.assign(method=cats["method"].cat.reorder_categories(list(cats["method"].cat.categories)[::-1]))
    assert figure_cache.table_digest(flipped) != figure_cache.table_digest(cats)  # the order can matter


def test_digests_see_bits_index_attrs_and_survive_odd_tables():
    import numpy as np
    import pandas as pd

    d = figure_cache.table_digest
    base = pd.DataFrame({"a": [0.0, 1.0], "b": ["x", "y"]})
    assert d(base) == d(base.copy())
    assert d(base.assign(a=[-0.0, 1.0])) != d(base)  # labels print -0.00
    assert d(base.set_axis([5, 6])) != d(base)
    big = base.copy()
    big.attrs["w"] = np.zeros(2000)
    bigger = base.copy()
    bigger.attrs["w"] = np.zeros(2000)
    bigger.attrs["w"][1500] = 1.0  # str() of the array would hide it
    assert d(big) != d(bigger) and d(big) == d(big.copy())
    assert d(pd.DataFrame([[1, 2]], columns=["a", "a"])) is not None  # duplicate names: hashed, no error
    weird = base.copy()
    weird.attrs["f"] = object()
    assert d(weird) is None


def test_a_figure_function_without_a_source_file_is_never_kept(tables, cache):
    from testbed.analyses.base import Analysis

    keys = figure_cache.keys([Analysis("nofile", figures=len), *_analyses(tables)[:1]], tables, ("png",))
    assert keys["nofile"] is None and keys[_analyses(tables)[0].name] is not None


class _InlinePool:
    """A stand-in for `FigurePool`: draws here what it is given, and says what it was given."""

    workers, failed = 1, None

    def __init__(self):
        self.asked = []

    def draw(self, tables, names, fig_dir, formats, draw_here):
        self.asked += names
        return {name: draw_here(name) for name in names}


def test_with_a_pool_only_what_is_missing_is_drawn(tables, cache, counted, tmp_path):
    import shutil

    analyses = _analyses(tables)
    first = drawing.draw_figures(tables, analyses, tmp_path / "a", ("png",), workers=1)
    keys = figure_cache.keys(analyses, tables, ("png",))
    gone = [a.name for a in analyses[:2]]
    for name in gone:
        shutil.rmtree(cache / keys[name])
    counted.clear()
    pool = _InlinePool()
    again = drawing.draw_figures(tables, analyses, tmp_path / "b", ("png",), pool=pool)
    assert sorted(pool.asked) == sorted(gone) and sorted(counted) == sorted(gone)
    assert [c for c, _ in again] == [c for c, _ in first]
    assert all(a.read_bytes() == b.read_bytes() for (_, a), (_, b) in zip(first, again, strict=True))


def test_keys_are_made_without_starting_pyplot():
    """A report whose figures are all copied draws nothing, so making the keys must not start
    pyplot: reading ``rcParams["backend"]`` (left to matplotlib to choose) imports pyplot and
    the backend, ~0.35 s of a warm run's report."""
    import os
    import subprocess
    import sys

    code = ("import sys; from testbed.report import figure_cache; figure_cache._drawing_environment(); "
            "print('matplotlib.pyplot' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the backend matplotlib picks
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
