"""The house style of every figure: size, colours, rc settings, header and saving.

Figures are about 1020 px wide at the PNG resolution (`WIDTH_IN` at `DPI`), drawn on
seaborn's whitegrid in a `style` context, with a bold title and grey lines of facts at
the top left (`Header`, laid out by `figure`) and legends outside the data. The train
region is grey (`TRAIN_SHADE` filled, `TRAIN_LINE` outlined) and each OOD split has its
colour (`ood_color`, `split_colors`) in every figure. `save` writes PNG and SVG.

`run_bounds` and `cell_edges` turn sampled masks and points into the spans and cells
the figures shade.

Only matplotlib, seaborn and numpy: no JAX, nothing of the package above `testbed.core`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.textpath import text_to_path

__all__ = ["DPI", "HALO", "LOG_FLOOR", "OOD_COLORS", "SPLIT_DASHES", "TRAIN_LINE", "TRAIN_SHADE", "WIDTH_IN",
           "Header", "cell_edges", "figure", "halo", "ood_color", "run_bounds", "save", "split_colors", "style",
           "tight_below", "wrap"]

DPI = 120
WIDTH_IN = 8.5  # ~1020 px at DPI
TRAIN_SHADE = "#9a9a9a"  # the train region's fill (drawn with a low alpha)
TRAIN_LINE = "#1a1a1a"  # the train region's outline
OOD_COLORS = ("#e7298a", "#e6ab02", "#1b9e77", "#7570b3", "#d95f02", "#66a61e", "#a6761d")
SPLIT_DASHES = ((0, (5, 2)), (0, (1.5, 1.5)), (0, (6, 2, 1.5, 2)), (0, (3, 1, 1, 1)), (0, (8, 3)))
LOG_FLOOR = 1e-12  # nonpositive values on log axes are lifted to the data's floor (>= this)
META_SEP = "   |   "  # between the parts of a line of facts


def halo(color: str = "white", width: float = 2.6) -> list:
    """Path effects that stroke a line or text with ``color`` underneath (a halo)."""
    return [patheffects.withStroke(linewidth=width, foreground=color)]


HALO = halo()


def ood_color(i: int) -> str:
    """The colour of the ``i``-th OOD split (0-based, in the task's order)."""
    return OOD_COLORS[i % len(OOD_COLORS)]


def split_colors(splits: Sequence[str]) -> dict[str, str]:
    """Split -> colour: ``train`` grey, the OOD splits `ood_color` in the order given."""
    ood = [s for s in splits if s != "train"]
    return {"train": TRAIN_SHADE, **{s: ood_color(i) for i, s in enumerate(ood)}}


def style(dense: bool = True):
    """The rc context every figure is drawn in (seaborn whitegrid, notebook context at 0.85).

    ``dense``: the smaller titles (9.5), ticks (8) and axis labels (9) of multi-panel
    figures; False: the context's own sizes with titles at 10 (a single large picture).
    """
    rc = dict(sns.axes_style("whitegrid"))
    rc.update(sns.plotting_context("notebook", font_scale=0.85))
    rc.update({"axes.titlesize": 10, "axes.titleweight": "normal", "legend.fontsize": 8.5,
               "legend.title_fontsize": 8.5, "figure.dpi": DPI, "savefig.dpi": DPI})
    if dense:
        rc.update({"axes.titlesize": 9.5, "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.labelsize": 9})
    return mpl.rc_context(rc)


# -- the header -----------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def _char_width(c: str, fontsize: float) -> float:
    """Advance width of one character in inches, in the default font (kerning ignored)."""
    prop = FontProperties(size=fontsize)
    return text_to_path.get_text_width_height_descent(c, prop, ismath=False)[0] / 72


def _text_width(s: str, fontsize: float) -> float:
    return sum(_char_width(c, fontsize) for c in s)


def wrap(text: str | Sequence[str], fontsize: float, width_in: float = WIDTH_IN - 0.3,
         sep: str = META_SEP) -> list[str]:
    """Greedy wrap to a width in inches, measuring the text in the default font.

    A string breaks between words (spaces inside a line kept as written, any other
    whitespace read as one space); a sequence of parts is joined with ``sep`` and breaks
    only between parts.
    """
    if isinstance(text, str):
        pairs = [(lead if not lead.strip(" ") else " ", word) for lead, word in re.findall(r"(\s*)(\S+)", text)]
    else:
        pairs = [("" if i == 0 else sep, part) for i, part in enumerate(text)]
    lines: list[str] = []
    for lead, word in pairs:
        if lines and _text_width(lines[-1] + lead + word, fontsize) <= width_in:
            lines[-1] += lead + word
        else:
            lines.append(word)
    return lines or [""]


class Header:
    """A bold title, an optional wrapped description, grey lines of facts and an optional
    italic note, at the top left of a figure.

    ``meta``: lines of facts, each a string (wrapped between words) or a sequence of
    parts (joined with ``"   |   "``, wrapped between parts).
    """

    TITLE, DESC, META = 14.0, 10.0, 8.5
    TOP, BOTTOM = 6.0, 8.0  # points above the title and below the last line

    def __init__(self, title: str, meta: Sequence[str | Sequence[str]] = (), *, desc: str = "",
                 note: str | None = None, width_in: float = WIDTH_IN, title_size: float = TITLE):
        width = width_in - 0.3
        self.title, self.title_size, self.width_in = title, title_size, width_in
        self.desc = wrap(desc, self.DESC, width) if desc else []
        self.meta = [ln for part in meta for ln in wrap(part, self.META, width)]
        self.note = wrap(note, self.META, width) if note else []

    def _lines(self) -> list[tuple[str, float, float, dict]]:
        """(text, font size, line height in points, text keywords) top to bottom."""
        bold = dict(fontweight="bold")
        return ([(self.title, self.title_size, self.title_size * 1.5, bold)]
                + [(ln, self.DESC, self.DESC * 1.35, dict(color="#222222")) for ln in self.desc]
                + [(ln, self.META, self.META * 1.35, dict(color="#6b6b6b")) for ln in self.meta]
                + [(ln, self.META, self.META * 1.35, dict(color="#9c4a00", style="italic")) for ln in self.note])

    @property
    def height_in(self) -> float:
        return (self.TOP + sum(h for _, _, h, _ in self._lines()) + self.BOTTOM) / 72

    def draw(self, fig: Figure) -> None:
        h = fig.get_figheight()
        y = 1 - self.TOP / 72 / h
        for text, size, line_h, kw in self._lines():
            fig.text(0.012, y, text, fontsize=size, va="top", ha="left", **kw)
            y -= line_h / 72 / h


def figure(header: Header, body_in: float, *, constrained: bool = True) -> Figure:
    """A white figure ``header.width_in`` wide, the header drawn at the top and ``body_in``
    inches below it for the axes.

    ``constrained``: the axes are laid out (constrained layout) below the header; False: no
    layout engine (call `tight_below` once the axes are in).
    """
    height = body_in + header.height_in
    engine = None
    if constrained:
        engine = ConstrainedLayoutEngine(rect=(0.0, 0.0, 1.0, 1.0 - header.height_in / height),
                                         h_pad=0.04, w_pad=0.04, hspace=0.03, wspace=0.03)
    fig = Figure(figsize=(header.width_in, height), dpi=DPI, layout=engine)
    fig.patch.set_facecolor("white")
    header.draw(fig)
    return fig


def tight_below(fig: Figure, header: Header, bottom_in: float = 0.0, pad: float = 0.6) -> Figure:
    """``tight_layout`` between the header and a strip of ``bottom_in`` inches at the bottom."""
    h = fig.get_figheight()
    fig.tight_layout(rect=(0.0, bottom_in / h, 1.0, 1.0 - header.height_in / h), pad=pad)
    return fig


def save(fig: Figure, path_without_suffix: str | Path, formats: tuple[str, ...] = ("png",)) -> list[Path]:
    """Write ``fig`` in each format (PNG at dpi 120; ``("png", "svg")`` adds a vector copy)
    next to each other, creating the folder; close it. Returns the paths, in order.
    """
    base = Path(path_without_suffix)
    base.parent.mkdir(parents=True, exist_ok=True)
    drop_unseen_minor_ticks(fig)
    out = []
    for ext in formats:
        p = base.with_name(base.name + "." + ext)
        if ext == "png":
            _save_png(fig, p)
        else:
            fig.savefig(p, format=ext, dpi=DPI, facecolor="white")
        out.append(p)
    plt.close(fig)
    return out


def drop_unseen_minor_ticks(fig: Figure) -> int:
    """Give every axis of ``fig`` whose minor ticks draw nothing and move nothing no minor ticks
    at all; returns how many minor tickers it changed.

    A log axis places ~8 minor ticks a decade. In this style their marks are off, no grid is
    drawn at them and the figures' log axes give them no labels (`NullFormatter`), yet the
    layout engine and the drawing still make, format and measure every one of them: 10-13%
    of the default report's drawing time. Minor ticks stay where they show anything (a log
    colour bar's marks, a minor grid, minor labels) and where their empty labels could move
    the axis label (an empty label still marks its place: kept unless a shown major label
    lies at least as far out on that side). Shared axes share one minor ticker: it goes only
    when none of them shows it. The image is the same."""
    from matplotlib.ticker import NullLocator

    groups: dict[int, list] = {}
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            groups.setdefault(id(axis.minor), []).append(axis)
    changed = 0
    for axes in groups.values():
        if isinstance(axes[0].get_minor_locator(), NullLocator) or not all(map(_minor_unseen, axes)):
            continue
        axes[0].set_minor_locator(NullLocator())
        changed += 1
    return changed


def _minor_unseen(axis) -> bool:
    """Whether ``axis``' minor ticks draw nothing (no marks, no grid, no text) and their empty
    labels lie no farther out than a shown major label on the same side."""
    from matplotlib.ticker import NullFormatter

    minor = axis.get_minor_ticks(1)[0]  # made from the axis's minor tick settings
    if any(a.get_visible() for a in (minor.tick1line, minor.tick2line, minor.gridline)):
        return False
    sides = [i for i, label in enumerate((minor.label1, minor.label2)) if label.get_visible()]
    if not sides:
        return True
    if not isinstance(axis.get_minor_formatter(), NullFormatter):
        return False
    major = axis.get_major_ticks(1)[0]
    if minor.get_pad() + minor.get_tick_padding() > major.get_pad() + major.get_tick_padding():
        return False
    locs = axis.get_majorticklocs()
    lo, hi = sorted(axis.get_view_interval())
    shown = any(text and lo <= loc <= hi for loc, text in zip(locs, axis.get_major_formatter().format_ticks(locs),
                                                               strict=True))
    return shown and all((major.label1, major.label2)[i].get_visible() for i in sides)


def _save_png(fig: Figure, path: Path) -> None:
    """``fig.savefig(path, dpi=DPI, facecolor="white")`` for PNG in one draw instead of two.

    With a layout engine, savefig draws the figure twice: once without rendering (to lay it
    out) and once into the image, and the drawing is most of a figure's time. Here the
    figure is drawn once with Agg, laid out on the way, and that image is written as
    savefig writes it (`matplotlib.image.imsave`, the same metadata): the same bytes (a
    second layout pass moves nothing: tests/figures hold every analysis's figures equal).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    fig.set_dpi(DPI)
    fig.patch.set_facecolor("white")
    canvas.draw()
    mpl.image.imsave(path, canvas.buffer_rgba(), format="png", origin="upper", dpi=fig.dpi)


# -- spans and cells of sampled points ---------------------------------------------------

def run_bounds(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of True in a bool vector, as inclusive index pairs."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    d = np.diff(m.astype(np.int8))
    return list(zip(np.flatnonzero(d == 1).tolist(), (np.flatnonzero(d == -1) - 1).tolist(), strict=True))


def cell_edges(xs: np.ndarray, integer: bool) -> np.ndarray:
    """Edges [n+1] of the cells around sorted sample points: midpoints inside; outside +-0.5
    (integers, or a single point) or the end points."""
    if len(xs) == 1:
        return np.array([xs[0] - 0.5, xs[0] + 0.5])
    mids = (xs[1:] + xs[:-1]) / 2
    if integer:
        return np.concatenate([[xs[0] - 0.5], mids, [xs[-1] + 0.5]])
    return np.concatenate([[xs[0]], mids, [xs[-1]]])
