"""Crash-safe files and content hashes: what every writer of results uses.

Every file is written atomically (temp file in the same folder, fsync, rename, fsync the
folder), so a reader sees the old file or the new one, never half of one. `cell_key`
hashes a semantic config (canonical JSON) into the name of its results folder. No JAX.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import numbers
import os
import tempfile
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.core.errors import TestbedError

TMP_SUFFIX = ".tmp"  # suffix of files being written; a store removes leftovers


class StoreError(TestbedError):
    """A results file cannot be written or read (names the file)."""


def plain_json(obj: object, where: str, *, for_hash: bool) -> object:
    """Convert ``obj`` to plain JSON types, refusing anything ambiguous.

    Args:
        obj: the value to convert.
        where: its location, for error messages (e.g. ``config['optimizer']['lr']``).
        for_hash: also fold integral floats into ints so ``1`` and ``1.0`` hash
            the same; off when the value is stored, so a float stays a float.

    Raises:
        TypeError: for dict keys that are not strings, sets, arrays and other objects.
        ValueError: for NaN and infinities (not valid JSON, and NaN != NaN).
    """
    # bool before numbers: True is an Integral, but `true` and `1` mean different things.
    if obj is None or isinstance(obj, (bool, np.bool_)):
        return None if obj is None else bool(obj)
    if isinstance(obj, str):
        return str.__str__(obj)  # a str subclass (e.g. a str Enum member): its plain value
    if isinstance(obj, numbers.Integral):  # int and NumPy integers
        return int(obj)
    if isinstance(obj, numbers.Real):  # float and NumPy floats
        x = float(obj)
        if not math.isfinite(x):
            raise ValueError(f"{where}: {x!r} is not allowed (NaN and infinities are not valid JSON)")
        # Integral floats become ints for hashing: exact (int(x) == x), and the
        # json module then prints one spelling for one value. Other floats are
        # printed with repr, the shortest text that reads back to the same
        # double, so 0.1 and 0.10000000000000001 already print alike.
        return int(x) if for_hash and x.is_integer() else x
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                # json would turn 1 into "1" and silently merge {1: a, "1": b}.
                raise TypeError(f"{where}: dict keys must be strings, got {k!r} ({type(k).__name__})")
            out[str(k)] = plain_json(v, f"{where}[{k!r}]", for_hash=for_hash)
        return out
    if isinstance(obj, (list, tuple)):
        return [plain_json(v, f"{where}[{i}]", for_hash=for_hash) for i, v in enumerate(obj)]
    raise TypeError(
        f"{where}: cannot store {type(obj).__name__} {obj!r:.80} as JSON; use None, bool, int, "
        "float, str, list, tuple or a dict with string keys")


def canonical_json(obj: object) -> str:
    """The one canonical JSON text of a config, for hashing.

    Keys are sorted at every depth, separators carry no whitespace, tuples are
    lists, NumPy scalars are Python numbers, and numbers are normalized: a float
    equal to an integer is written as that integer (``1.0`` -> ``1``) and other
    floats use their shortest round-trip form (``0.10000000000000001`` -> ``0.1``).
    ``True`` stays distinct from ``1``. Non-ASCII text is escaped, so the
    result is pure ASCII.

    Args:
        obj: a JSON-like value: None, bool, int, float, str, list, tuple, or a
            mapping with string keys, nested freely.

    Returns:
        The canonical text.

    Raises:
        TypeError: for objects that are not JSON-like, or non-string dict keys.
        ValueError: for NaN or infinite floats.
    """
    plain = plain_json(obj, "config", for_hash=True)
    return json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def cell_key(config: Mapping) -> str:
    """The 16-hex-character key of a cell: a prefix of sha256(canonical_json(config)).

    64 bits make an accidental collision negligible for any realistic suite
    (about 1 in 10^10 with 60,000 cells) while keeping folder names short.

    Args:
        config: the semantic configuration of the cell (what changes the results).

    Returns:
        16 lowercase hex characters; equal configs give equal keys whatever the
        key order, tuple/list spelling or int/float spelling of numbers.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"cell_key needs a mapping, got {type(config).__name__}")
    return sha256(canonical_json(config).encode("ascii")).hexdigest()[:16]


# ---------------------------------------------------------------------------- atomic writes
def _read_umask() -> int:
    # mkstemp creates files with mode 0600; give them the mode open() would
    # have (0666 minus the umask) so results stay readable by the group. The
    # umask can only be read by setting it, so do that once, at import.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_read_umask()


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries, so a rename or new file in it survives a power loss."""
    if os.name == "nt":  # Windows cannot open a folder for fsync; NTFS journals renames
        return
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old file or the new one, never a part.

    Writes a temp file in the same folder (a rename is only atomic within one
    file system), flushes and fsyncs it, renames it over ``path`` with
    `os.replace`, then fsyncs the folder so the rename itself is durable. On any
    failure, including KeyboardInterrupt, the temp file is removed and ``path``
    is untouched. A process killed outright (SIGKILL) can leave a hidden
    ``.<name>.*.tmp`` file behind, but never a partial ``path``.

    Args:
        path: the target file; its folder must exist.
        data: the complete new content.

    Raises:
        FileNotFoundError: if the folder of ``path`` does not exist.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # not on Windows
                os.fchmod(f.fileno(), _FILE_MODE)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # data on disk before the rename makes it visible
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write ``text`` as UTF-8 (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: object) -> None:
    """Atomically write ``obj`` as readable, strict JSON (sorted keys, indent 2).

    Tuples become lists and NumPy scalars Python numbers; ints and floats keep
    their type (unlike `canonical_json`), so the file reads back as written.

    Raises:
        TypeError, ValueError: the value is not JSON-like, or holds NaN or an
            infinity; the message names the file and the location inside it.
            Nothing is written then.
    """
    try:
        plain = plain_json(obj, "value", for_hash=False)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"cannot write {path}: {exc}") from exc
    text = json.dumps(plain, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_parquet(path: str | os.PathLike, df: pd.DataFrame) -> None:
    """Atomically write ``df`` as Parquet (pyarrow, index dropped).

    The table is serialized to memory first, so a DataFrame pyarrow cannot
    encode fails before the target is touched.

    Raises:
        StoreError: the DataFrame cannot be written as Parquet (names the file).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"cannot write {path}: expected a pandas DataFrame, got {type(df).__name__}")
    buf = io.BytesIO()
    try:
        df.to_parquet(buf, engine="pyarrow", index=False)
    except Exception as exc:  # pyarrow raises several unrelated types for unencodable columns
        raise StoreError(f"cannot write {path} as Parquet: {exc}") from exc
    atomic_write_bytes(path, buf.getvalue())


