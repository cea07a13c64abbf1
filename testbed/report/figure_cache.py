"""A report's figures kept on disk under what they are drawn from, so that a report of the
same tables (a suite run again from an empty results folder: the same config and seeds give
the same numbers, bit for bit) copies its figures instead of drawing them again.

Drawing is most of a report's time (~10 s of the default suite's, on 2 cores); checking
the tables takes ~0.1 s. An analysis's figures are found under a hash (`keys`) of:

* its name and the formats asked for;
* every table of the report (`table_digest`: columns, dtypes and categories, the values
  row by row, ``attrs``): any change to any number draws every figure again;
* the code that draws (`testbed.core.durable.code_fingerprint`: the package and
  every module loaded from outside the installed packages, plug-ins included); an analysis
  whose figure function lives elsewhere (a notebook, a prompt, another installed package)
  is always drawn;
* matplotlib's settings (``rcParams``, a user's matplotlibrc included) and fonts, and the
  versions of Python, matplotlib, seaborn, numpy and pandas.

A figure function must depend on nothing but its tables and the code (no environment
variable, clock or file), as the report's figure processes already assume. SVG (``--svg``)
is always drawn: each SVG holds its date and random ids. ``--redraw`` (`build_report`'s
``reuse=False``) draws every figure again and keeps the new drawing.

Where: ``TESTBED_FIGURE_CACHE`` (a folder, or ``off``); by default ``figures/`` in the
compile cache's folder (`testbed.core.platform.compile_cache_dir`, which holds the machine's
CPU and package versions in its name), off with it (``TESTBED_COMPILE_CACHE=off``, the CLI's
``--no-compile-cache``). An entry is a folder of the figure files and a ``manifest.json``
with their digests: a damaged or partial entry is drawn again and replaced. Entries are
removed oldest-used first past `LIMIT_BYTES`.

Nothing here imports JAX.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ENV = "TESTBED_FIGURE_CACHE"
VERSION = "1"  # of the key and the entry layout
LIMIT_BYTES = 512 * 2**20
OFF = ("off", "0", "no", "false", "none")


def folder() -> Path | None:
    """Where figures are kept: ``TESTBED_FIGURE_CACHE``, else ``<compile cache>/figures``;
    None when off."""
    want = os.environ.get(ENV, "").strip()
    if want.lower() in OFF:
        return None
    if want:
        return Path(want).expanduser()
    from testbed.core.platform import compile_cache_dir

    root = compile_cache_dir()
    return None if root is None else root / "figures"


def table_digest(df) -> str | None:
    """A hash of a table's content: column names, dtypes (a categorical's categories in their
    order), every value in row order (numbers by their bits), the index unless it is the
    default one, and ``attrs``. None when something in it cannot be hashed."""
    import numpy as np
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        return None
    h = hashlib.blake2b(digest_size=20)
    try:
        h.update(json.dumps([list(map(str, df.columns)), [str(t) for t in df.dtypes], len(df)]).encode())
        h.update(_attrs_text(df.attrs).encode())
        if not (isinstance(df.index, pd.RangeIndex) and df.index.start == 0 and df.index.step == 1):
            h.update(pd.util.hash_pandas_object(df.index.to_frame(index=False), index=False).to_numpy().tobytes())
        for i in range(df.shape[1]):
            col = df.iloc[:, i]
            dtype = col.dtype
            if isinstance(dtype, pd.CategoricalDtype):
                h.update(repr((list(dtype.categories), dtype.ordered)).encode())
                h.update(np.ascontiguousarray(col.cat.codes.to_numpy()).tobytes())
            elif isinstance(dtype, np.dtype) and dtype.kind in "biufcmM":
                h.update(np.ascontiguousarray(col.to_numpy()).tobytes())  # the bits: -0.0 is not 0.0
            else:
                h.update(pd.util.hash_pandas_object(col, index=False).to_numpy().tobytes())
    except Exception:  # noqa: BLE001  (lists in an object column, odd attrs: not cached, drawn)
        return None
    return h.hexdigest()


def _attrs_text(attrs: dict) -> str:
    import numpy as np

    def exact(v):
        if isinstance(v, np.ndarray):
            return ["ndarray", str(v.dtype), list(v.shape), hashlib.blake2b(np.ascontiguousarray(v).tobytes()).hexdigest()]
        raise TypeError(f"attrs value of type {type(v).__name__}")

    return json.dumps(attrs, default=exact, sort_keys=True)


def _drawing_environment() -> str:
    import matplotlib as mpl
    from matplotlib import font_manager

    from testbed.core.platform import versions

    libs = versions()
    for pkg in ("matplotlib", "seaborn", "pillow"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            libs[pkg] = importlib.metadata.version(pkg)
    # the keys, then the values: reading rcParams["backend"] resolves the backend, which imports
    # pyplot and the backend (~0.35 s; a report whose figures are all copied never draws)
    rc = sorted((k, repr(mpl.rcParams[k])) for k in mpl.rcParams if k != "backend")
    fonts = sorted(f.fname for f in font_manager.fontManager.ttflist)
    return json.dumps([sorted(libs.items()), sys.version, rc, fonts])


def keys(analyses: Sequence, tables: dict, formats: Sequence[str]) -> dict[str, str | None]:
    """Analysis name -> its figures' key. None for every analysis when the cache is off, SVG is
    asked for (an SVG holds its date and random ids: drawn every time), a table cannot be
    hashed or a plug-in has no source file; None for an analysis whose figure function is not
    in a file `code_fingerprint` reads (one defined at a prompt, in a notebook or in an
    installed package other than testbed)."""
    names = [a.name for a in analyses]
    if folder() is None or "svg" in formats:
        return dict.fromkeys(names)
    from testbed.core.durable import code_fingerprint, defined_in_code, plugin_files

    digests = {name: table_digest(t) for name, t in tables.items()}
    try:
        files = plugin_files()
        code = code_fingerprint(files=files)
    except (OSError, ValueError):
        return dict.fromkeys(names)
    if any(d is None for d in digests.values()):
        return dict.fromkeys(names)
    base = json.dumps([VERSION, sorted(digests.items()), list(formats), code, _drawing_environment()])
    covered = set(files)
    return {a.name: hashlib.sha256(f"{base}|{a.name}".encode()).hexdigest()[:32]
            if defined_in_code(a.figures, covered) else None for a in analyses}


def load(key: str, fig_dir: Path) -> list[tuple[str | None, str, Path]] | None:
    """The figures kept under ``key``, copied into ``fig_dir``: (task, caption, first file) each,
    as `testbed.report.drawing` returns them; None when absent or damaged."""
    root = folder()
    if root is None:
        return None
    entry = root / key
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        files = {}
        for name, digest in manifest["files"].items():
            data = (entry / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != digest:
                return None
            files[name] = data
        fig_dir.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (fig_dir / name).write_bytes(data)
        os.utime(entry / "manifest.json")  # used now: evicted last
        return [(f["task"], f["caption"], fig_dir / f["file"]) for f in manifest["figures"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def store(key: str, figures: list[tuple[str | None, str, Path]], formats: Sequence[str]) -> None:
    """Keep ``figures`` (as `load` returns them; every format's file next to the first) under
    ``key``; then remove the oldest entries past `LIMIT_BYTES`. Failing to write is no error."""
    root = folder()
    if root is None:
        return
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        digests, listed = {}, []
        for task, caption, path in figures:
            for ext in formats:
                p = path.with_name(path.stem + "." + ext)
                data = p.read_bytes()
                (tmp / p.name).write_bytes(data)
                digests[p.name] = hashlib.sha256(data).hexdigest()
            listed.append({"task": task, "caption": caption, "file": path.name})
        (tmp / "manifest.json").write_text(json.dumps({"figures": listed, "files": digests}))
        target = root / key
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)  # damaged (a good one would have loaded)
        os.rename(tmp, target)
        tmp = None
    except OSError:
        return
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _evict(root)


def _evict(root: Path, limit: int = LIMIT_BYTES) -> None:
    entries = []
    try:
        listing = list(root.iterdir())
    except OSError:
        return
    for entry in listing:
        manifest = entry / "manifest.json"
        if entry.name.startswith(".") or not manifest.is_file():
            continue
        with contextlib.suppress(OSError):
            entries.append((manifest.stat().st_mtime, sum(f.stat().st_size for f in entry.iterdir()), entry))
    total = sum(size for _, size, _ in entries)
    for _, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        shutil.rmtree(entry, ignore_errors=True)
        total -= size
