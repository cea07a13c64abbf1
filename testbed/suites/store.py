"""A crash-safe results store for a benchmark suite.

Layout of one suite (``root = results/<suite>``)::

    results/<suite>/
        manifest.json          # what the suite is (written by the runner)
        results.parquet        # `SuiteStore.aggregate`: history of every finished cell
        <key>/                 # one folder per cell; key = `cell_key(semantic config)`
            config.json
            history.parquet
            <name>.parquet     # optional extra tables
            <name>.json        # optional extra JSON documents
            DONE               # written LAST: the cell is complete
        .staging/              # cells being written, renamed into place when whole

Why it is shaped this way: a suite is long, and runs get killed (Ctrl-C, OOM,
pre-emption, power loss). Every file is written atomically (temp file in the
same folder, fsync, rename, fsync the folder), and ``DONE`` is written only
after everything else is on disk, all in a staging folder that is renamed into place
whole. So a cell folder either has ``DONE`` and is complete, or (left by an older
version, or changed by hand) has no ``DONE`` and is thrown away and recomputed. Readers
(`SuiteStore.aggregate`, `SuiteStore.done_keys`) trust nothing without ``DONE``.

The store assumes one writer per suite at a time (`SuiteStore.write_cell` clears an
unfinished folder for the same key, `SuiteStore.clean_unfinished` removes every unfinished
folder); `SuiteStore.lock` enforces it across processes, and `testbed.run_suite` holds it.
``DONE`` records every file's checksum; `SuiteStore.verify_cell` finds a file changed,
truncated or removed after the cell finished, and the runner redoes such a cell.

This module deliberately does not import JAX, so tools that only read results
stay fast to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.core.files import (  # noqa: F401  (re-exported: the store's own write primitives)
    TMP_SUFFIX,
    StoreError,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    canonical_json,
    cell_key,
    fsync_dir,
    plain_json,
)

__all__ = [
    "CellExistsError", "CellNotDoneError", "CorruptCellError", "StoreError", "SuiteLockedError", "SuiteStore",
    "atomic_write_bytes", "atomic_write_json", "atomic_write_parquet", "atomic_write_text",
    "canonical_json", "cell_key",
]

CONFIG_FILE = "config.json"
HISTORY_FILE = "history.parquet"
DONE_FILE = "DONE"
MANIFEST_FILE = "manifest.json"
STAGING_DIR = ".staging"  # cells being written (`SuiteStore.write_cell`), renamed into place when whole
LOCK_FILE = ".lock"  # held by the one process writing the suite (`SuiteStore.lock`)
RESULTS_FILE = "results.parquet"
CELL_COLUMN = "cell"

# Cell keys and table names become file names: allow only characters that are
# safe on every file system, and no leading dot (hidden names are reserved for
# temp files) so a key can never escape the suite folder.
_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_TMP_SUFFIX = TMP_SUFFIX
OUTPUT_DIRS = ("tables", "figures", "exports")  # what the report writes beside the cells: never a cell, never cleaned


# ---------------------------------------------------------------------------- errors
class CellNotDoneError(StoreError, KeyError):
    """The cell has no ``DONE`` marker (never run, or interrupted)."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class CellExistsError(StoreError, FileExistsError):
    """The cell is already finished and ``force`` was not given."""


class CorruptCellError(StoreError, ValueError):
    """A file of a finished cell (or the manifest) cannot be read."""


class SuiteLockedError(StoreError, RuntimeError):
    """Another process is writing the same suite folder."""


# ---------------------------------------------------------------------------- reading helpers
def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()



def _owner() -> str:
    """Who is writing, as part of a staging folder's name: host and process id."""
    import socket

    return f"{re.sub(r'[^A-Za-z0-9_-]', '-', socket.gethostname())}-{os.getpid()}"


STALE_ELSEWHERE_S = 3600.0  # a staging folder of another host older than this is a dead writer's


def _owner_alive(name: str, age_s: float | None = None) -> bool:
    """Whether the writer of staging folder ``name`` may still be running: a process of this host
    is checked; one of another host is assumed alive for an hour after it started writing
    (``age_s``; a cell is written in seconds, so an older folder is a killed job's). Folders moved
    aside for deletion (``.old.``) are never alive."""
    parts = name.split(".")
    if len(parts) < 3 or parts[1] == "old":
        return False
    host, _, pid = parts[1].rpartition("-")
    if host != _owner().rpartition("-")[0]:
        return age_s is None or age_s < STALE_ELSEWHERE_S  # a cell is written in seconds: older ones died
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _rmtree_done_first(d: Path) -> None:
    """Delete a cell folder, its DONE first: if we are killed halfway through, what is left is an
    unfinished cell (recomputed later), never a "finished" one missing files."""
    done = d / DONE_FILE
    if done.exists():
        done.unlink()
        fsync_dir(d)
    shutil.rmtree(d)


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CorruptCellError(f"{path} is not valid JSON ({exc}); delete the cell folder and "
                               "rerun it") from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise CorruptCellError(f"{path} is missing; delete the cell folder and rerun it")
    try:
        return pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # pyarrow's errors (ArrowInvalid, OSError, ...) share no base
        raise CorruptCellError(f"{path} is not a readable Parquet file ({exc}); delete the cell "
                               "folder and rerun it") from exc


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid {what} {name!r}: use letters, digits, '_' and '-' "
                         "(not starting with '-')")
    return name


# ---------------------------------------------------------------------------- concatenation
def _concat_histories(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate tables whose categorical columns may have different categories.

    pandas only keeps a categorical dtype through `pd.concat` when every frame
    has exactly the same categories; otherwise the column silently becomes
    object (or a mix when the column is plain in some frames). So categorical
    columns are made plain objects first, then string columns get a category
    dtype back whose categories are the union in order of first appearance
    (each cell's own category order, e.g. split and piece order, is kept).
    """
    cats: dict[str, list] = {}  # column -> union of categories, first appearance first
    for f in frames:
        for col in f.columns:
            dtype = f[col].dtype
            if isinstance(dtype, pd.CategoricalDtype):
                union = cats.setdefault(col, [])
                union += [c for c in dtype.categories if c not in union]
    # Keep `ordered` only when every frame agrees on it: same categories, same order.
    ordered = {}
    for col in cats:
        dtypes = [f[col].dtype for f in frames if col in f.columns]
        ordered[col] = all(isinstance(t, pd.CategoricalDtype) and t.ordered
                           and list(t.categories) == cats[col] for t in dtypes)
    plain = [f.astype({c: object for c in f.columns if c in cats}) if cats else f for f in frames]
    out = pd.concat(plain, ignore_index=True, sort=False)
    for col, union in cats.items():
        values = out[col]
        if pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty"):
            continue  # mixed or non-string values: leave as object rather than guess
        categories = [c for c in union if isinstance(c, str)]
        known = set(categories)
        categories += [v for v in pd.unique(values.dropna()) if v not in known]
        out[col] = pd.Categorical(values, categories=categories, ordered=ordered[col])
    return out


# ---------------------------------------------------------------------------- the store
class SuiteStore:
    """The results of one suite, one folder per cell, safe against interrupted runs.

    Args:
        root: the suite folder (``results/<suite>``); created on the first write.

    Attributes:
        root: the suite folder as a `Path`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"SuiteStore({str(self.root)!r})"

    # ------------------------------------------------------------------ paths and state
    def cell_dir(self, key: str) -> Path:
        """The folder of cell ``key`` (which may not exist)."""
        return self.root / _check_name(key, "cell key")

    def is_done(self, key: str) -> bool:
        """Whether cell ``key`` finished: its ``DONE``, ``config.json`` and ``history.parquet`` exist."""
        d = self.cell_dir(key)
        return all((d / name).is_file() for name in (DONE_FILE, CONFIG_FILE, HISTORY_FILE))

    def done_keys(self) -> list[str]:
        """Keys of all finished cells, sorted."""
        return [k for k in self._cell_names() if self.is_done(k)]

    def _cell_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _NAME_RE.fullmatch(p.name) and p.name not in OUTPUT_DIRS)

    def _ensure_root(self) -> None:
        if not self.root.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.root.parent)

    # ------------------------------------------------------------------ writing
    def write_cell(self, key: str, config: Mapping, history: pd.DataFrame,
                   tables: Mapping[str, pd.DataFrame] | None = None,
                   extra_json: Mapping[str, object] | None = None, *, force: bool = False) -> Path:
        """Write a finished cell: every file atomically, then ``DONE`` last.

        A folder left by an earlier, interrupted attempt (no ``DONE``) is
        cleared first, so no stale file from it can outlive this attempt.

        Args:
            key: the cell key, usually ``cell_key(semantic config)``; not checked
                against ``config`` so a cell may store more than it is keyed by.
            config: written to ``config.json`` (must be JSON-like, no NaN).
            history: written to ``history.parquet``; must not have a ``cell`` column
                (`aggregate` adds it).
            tables: extra tables, each written to ``<name>.parquet`` (not ``history``).
            extra_json: extra documents, each written to ``<name>.json`` (not ``config``).
            force: replace a finished cell instead of refusing.

        Returns:
            The cell folder.

        Raises:
            CellExistsError: the cell is finished and ``force`` is False.
            ValueError, TypeError: a bad key or name, a ``cell`` column, or a
                config / document that is not strict JSON. Checked before
                anything is written.
            StoreError: the folder cannot be written (disk full, permissions); nothing of
                this cell is left in place and every other cell is untouched.
        """
        d = self.cell_dir(key)
        tables = dict(tables or {})
        extra_json = dict(extra_json or {})
        # Validate everything up front, so bad input never costs a finished cell.
        if not isinstance(config, Mapping):
            raise TypeError(f"cell {key}: config must be a mapping, got {type(config).__name__}")
        plain_json(config, f"cell {key} config", for_hash=False)
        for name, df in [("history", history), *tables.items()]:
            if not isinstance(df, pd.DataFrame):
                raise TypeError(f"cell {key}: table {name!r} must be a pandas DataFrame, "
                                f"got {type(df).__name__}")
        if CELL_COLUMN in history.columns:
            raise ValueError(f"cell {key}: history has a {CELL_COLUMN!r} column, which "
                             "aggregate() adds itself; rename it")
        for name in tables:
            if _check_name(name, "table name") == "history":
                raise ValueError(f"cell {key}: a table may not be named 'history' (the history "
                                 "is its own argument)")
        for name in extra_json:
            if _check_name(name, "JSON document name") == "config":
                raise ValueError(f"cell {key}: a JSON document may not be named 'config' (the "
                                 "config is its own argument)")

        if self.is_done(key) and not force:
            raise CellExistsError(f"cell {key} is already finished in {d}; pass force=True to "
                                  "replace it")

        # Written whole in a staging folder, DONE last, then renamed into place: a cell folder
        # is never half-written, even when two processes write the same cell at once (a job
        # left running by a killed driver, and the next run's job for the same cell).
        self._ensure_root()
        staging = self.root / STAGING_DIR
        staging.mkdir(exist_ok=True)
        tmp = staging / f"{key}.{_owner()}.{os.urandom(4).hex()}"
        try:
            tmp.mkdir()
            atomic_write_json(tmp / CONFIG_FILE, config)
            atomic_write_parquet(tmp / HISTORY_FILE, history)
            for name, df in tables.items():
                atomic_write_parquet(tmp / f"{name}.parquet", df)
            for name, doc in extra_json.items():
                atomic_write_json(tmp / f"{name}.json", doc)
            # Strictly last: DONE promises every file above is complete and on disk, and records
            # each file's checksum so a file changed afterwards is caught (`verify_cell`).
            atomic_write_json(tmp / DONE_FILE, {
                "key": key,
                "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "sha256": {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.name != DONE_FILE},
            })
            for attempt in range(20):  # other writers of the same cell may move it at the same moment
                old = None
                if d.exists():  # finished (force) or an interrupted attempt: moved aside in one step
                    old = staging / f"{key}.old.{os.urandom(4).hex()}"
                    try:
                        os.rename(d, old)
                    except FileNotFoundError:
                        old = None
                try:
                    os.rename(tmp, d)  # the cell is missing only between these two renames
                    placed = True
                except OSError:
                    placed = False  # another writer put the same cell in place meanwhile
                if old is not None:
                    _rmtree_done_first(old)
                if placed or self.is_done(key):  # ours, or theirs, whole: either is the same cell
                    break
                if attempt == 19:
                    raise OSError(f"cell folder {d} kept changing under other writers")
            fsync_dir(self.root)
        except OSError as e:  # disk full, quota, permissions: name the folder; finished cells are untouched
            raise StoreError(f"cannot write cell {key} into {self.root}: {e.strerror or e} "
                             f"({getattr(e, 'filename', None) or tmp}); the cells finished before it are kept: "
                             "free space (or give another --results folder) and run the suite again") from e
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return d

    def verify_cell(self, key: str) -> str | None:
        """What is wrong with finished cell ``key``'s files, or None: a file missing, changed
        or added since its ``DONE`` recorded their checksums (cells finished before checksums
        were recorded are trusted as they are)."""
        d = self.cell_dir(key)
        try:
            done = _read_json(d / DONE_FILE)
        except (FileNotFoundError, CorruptCellError):
            return "its DONE marker is missing or unreadable"
        sums = done.get("sha256") if isinstance(done, dict) else None
        if not isinstance(sums, dict):
            return None
        for name, digest in sums.items():
            f = d / name
            if not f.is_file():
                return f"{name} is missing"
            if _sha256(f) != digest:
                return f"{name} changed after the cell finished (checksum mismatch)"
        extra = sorted(p.name for p in d.iterdir() if p.name != DONE_FILE and p.name not in sums)
        return f"{extra[0]} was added after the cell finished" if extra else None

    def remove_cell(self, key: str) -> None:
        """Delete cell ``key`` (finished or not); no error if it does not exist."""
        d = self.cell_dir(key)
        if not d.exists():
            return
        _rmtree_done_first(d)
        fsync_dir(self.root)

    def clean_unfinished(self) -> list[str]:
        """Remove every cell folder without ``DONE``, and stray temp files in the suite folder.

        Temp files are what a write killed outright leaves (see
        `atomic_write_bytes`). Run this only while no other process writes to
        the suite.

        Returns:
            The keys of the removed cells, sorted.
        """
        removed = [k for k in self._cell_names() if not self.is_done(k)]
        for k in removed:
            self.remove_cell(k)
        staging = self.root / STAGING_DIR
        if staging.is_dir():  # what killed writers left (a live writer, here or on another host, is left alone)
            import time

            for p in staging.iterdir():
                try:
                    age = time.time() - p.stat().st_mtime
                except OSError:
                    continue
                if not _owner_alive(p.name, age):
                    shutil.rmtree(p, ignore_errors=True)
            with contextlib.suppress(OSError):
                staging.rmdir()  # only when empty
        if self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_file() and p.name.startswith(".") and p.name.endswith(_TMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        p.unlink()
        return removed

    @contextlib.contextmanager
    def lock(self):
        """Hold the suite folder for one writer: a second `testbed bench` on the same folder
        stops with `SuiteLockedError` naming the process that holds it, before it touches
        anything. The lock (``.lock``, an OS file lock) is released when the holder exits,
        even if it is killed. Where file locks are not available (no ``fcntl``) it is a no-op."""
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks here
            yield
            return
        self._ensure_root()
        path = self.root / LOCK_FILE
        f = open(path, "a+")  # noqa: SIM115  (held open for the lock's lifetime)
        try:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise SuiteLockedError(f"{self.root} is being written by {holder}; wait for it to finish, or give "
                                       "another --results folder") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} since {datetime.now(UTC).isoformat(timespec='seconds')}")
            f.flush()
            yield
        finally:
            f.close()  # closing releases the lock

    def write_manifest(self, manifest: Mapping) -> None:
        """Atomically write ``manifest.json`` (strict JSON)."""
        if not isinstance(manifest, Mapping):
            raise TypeError(f"the manifest must be a mapping, got {type(manifest).__name__}")
        self._ensure_root()
        atomic_write_json(self.root / MANIFEST_FILE, manifest)

    def read_manifest(self) -> dict | None:
        """The manifest, or None if none was written.

        Raises:
            CorruptCellError: ``manifest.json`` is not a JSON object.
        """
        path = self.root / MANIFEST_FILE
        try:
            manifest = _read_json(path)
        except FileNotFoundError:
            return None
        if not isinstance(manifest, dict):
            raise CorruptCellError(f"{path} does not hold a JSON object")
        return manifest

    # ------------------------------------------------------------------ reading
    def _require_done(self, key: str) -> Path:
        d = self.cell_dir(key)
        if not self.is_done(key):
            state = "is unfinished (no DONE marker)" if d.exists() else "does not exist"
            raise CellNotDoneError(f"cell {key} {state} in {self.root}")
        return d

    def load_cell(self, key: str) -> tuple[dict, pd.DataFrame]:
        """The config and history of a finished cell.

        Raises:
            CellNotDoneError: the cell is missing or unfinished.
            CorruptCellError: ``config.json`` or ``history.parquet`` cannot be read
                (the message names the file).
        """
        d = self._require_done(key)
        path = d / CONFIG_FILE
        try:
            config = _read_json(path)
        except FileNotFoundError as exc:  # removed between the check and the read
            raise CorruptCellError(f"{path} is missing") from exc
        if not isinstance(config, dict):
            raise CorruptCellError(f"{path} does not hold a JSON object")
        return config, _read_parquet(d / HISTORY_FILE)

    def load_table(self, key: str, name: str) -> pd.DataFrame:
        """Table ``name`` of a finished cell (``"history"`` works too).

        Raises:
            CellNotDoneError: the cell is missing or unfinished.
            KeyError: the cell has no such table (the message lists those it has).
            CorruptCellError: the file cannot be read.
        """
        d = self._require_done(key)
        path = d / f"{_check_name(name, 'table name')}.parquet"
        if not path.is_file():
            have = sorted(p.stem for p in d.glob("*.parquet"))
            raise KeyError(f"cell {key} has no table {name!r}; it has: {', '.join(have)}")
        return _read_parquet(path)

    def load_json(self, key: str, name: str) -> object:
        """JSON document ``name`` of a finished cell (``"config"`` works too).

        Raises:
            CellNotDoneError: the cell is missing or unfinished.
            KeyError: the cell has no such document.
            CorruptCellError: the file cannot be read.
        """
        d = self._require_done(key)
        path = d / f"{_check_name(name, 'JSON document name')}.json"
        try:
            return _read_json(path)
        except FileNotFoundError:
            have = sorted(p.stem for p in d.glob("*.json"))
            raise KeyError(f"cell {key} has no JSON document {name!r}; it has: "
                           f"{', '.join(have)}") from None

    def aggregate(self, keys: Sequence[str] | None = None, *,
                  skip_missing: bool = False) -> pd.DataFrame:
        """Concatenate the histories of finished cells and write ``results.parquet``.

        Args:
            keys: the cells to include, in this order (duplicates ignored); None
                means every finished cell, sorted by key.
            skip_missing: leave out requested keys that are not finished instead
                of raising.

        Returns:
            The combined table: a categorical ``cell`` column (the key) first,
            then the history columns; rows ordered by cell (in ``keys`` order),
            then by their order in the cell's history. Categorical columns whose
            categories differ between cells come back categorical with the union
            of categories. The same table is written atomically to
            ``<root>/results.parquet``.

        Raises:
            CellNotDoneError: a requested key is not finished (unless ``skip_missing``).
            CorruptCellError: a finished cell's files cannot be read.
        """
        if keys is None:
            keys = self.done_keys()
        else:
            if isinstance(keys, str):  # a lone key would otherwise be split into characters
                raise TypeError("aggregate() takes a sequence of keys, not a single string")
            keys = list(dict.fromkeys(keys))
            missing = [k for k in keys if not self.is_done(k)]
            if missing and not skip_missing:
                raise CellNotDoneError(f"{len(missing)} requested cell(s) are not finished in "
                                       f"{self.root}: {', '.join(missing[:10])}"
                                       f"{' ...' if len(missing) > 10 else ''}")
            keys = [k for k in keys if k not in missing]
        frames = [self.load_cell(k)[1] for k in keys]
        if frames:
            out = _concat_histories(frames)
        else:
            out = pd.DataFrame()
        cells = np.repeat(np.asarray(keys, dtype=object), [len(f) for f in frames])
        out.insert(0, CELL_COLUMN, pd.Categorical(cells, categories=keys))
        self._ensure_root()
        atomic_write_parquet(self.root / RESULTS_FILE, out)
        return out
