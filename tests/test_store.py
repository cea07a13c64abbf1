"""Tests for the crash-safe results store in `testbed.suites.store`."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import testbed.core.files as files_mod
import testbed.suites.store as store_mod
from testbed.core.errors import TestbedError
from testbed.suites.store import (
    CellExistsError,
    CellNotDoneError,
    CorruptCellError,
    StoreError,
    SuiteStore,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    atomic_write_text,
    canonical_json,
    cell_key,
)

PACKAGE_DIR = Path(store_mod.__file__).resolve().parent

CONFIG = {
    "task": "sine",
    "method": "sgd",
    "optimizer": {"name": "adamw", "b1": 0.9, "b2": 0.999, "eps": 1e-8},
    "grid": {"lr": [1e-3, 1e-2], "weight_decay": [0.0, 0.1]},
    "steps": 1000,
    "seeds": [0, 1, 2],
}


def history(n: int = 4, *, seed: int = 0, splits=("train", "test")) -> pd.DataFrame:
    """A small history table shaped like `testbed.training.result.build_history`'s."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "task": pd.Categorical(["sine"] * n),
        "run": np.arange(n, dtype=np.int64),
        "step": np.arange(n, dtype=np.int64) * 10,
        "split": pd.Categorical.from_codes(np.arange(n) % len(splits), list(splits)),
        "metric": pd.Categorical(["mse"] * n),
        "value": rng.normal(size=n),
    })


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------------- canonical_json / cell_key
def reorder(obj, rng: random.Random):
    """The same value with every dict's keys in a shuffled order, at every depth."""
    if isinstance(obj, dict):
        items = list(obj.items())
        rng.shuffle(items)
        return {k: reorder(v, rng) for k, v in items}
    if isinstance(obj, list):
        return [reorder(v, rng) for v in obj]
    return obj


def test_canonical_json_pins_the_format():
    # Changing this text orphans every stored result (keys change): do it on purpose only.
    assert canonical_json({"b": [1.0, 0.5, (2, "x")], "a": {"d": None, "c": True}}) == (
        '{"a":{"c":true,"d":null},"b":[1,0.5,[2,"x"]]}')
    assert cell_key({"a": 1}) == hashlib.sha256(b'{"a":1}').hexdigest()[:16]


def test_cell_key_is_stable_under_key_order_at_any_depth():
    rng = random.Random(0)
    keys = {cell_key(reorder(CONFIG, rng)) for _ in range(20)}
    assert len(keys) == 1
    (key,) = keys
    assert len(key) == 16 and all(c in "0123456789abcdef" for c in key)


@pytest.mark.parametrize("a, b", [
    (0.1, 0.10000000000000001),  # same double, two spellings
    (1, 1.0),
    (-3, -3.0),
    (2**60, 2.0**60),
    ((1, 2), [1, 2]),
    (np.float64(0.25), 0.25),
    (np.int64(7), 7),
    (np.float32(0.5), 0.5),  # exactly representable in float32
    (np.bool_(True), True),
    ({"x": (1.0, {"y": 2.0})}, {"x": [1, {"y": 2}]}),
])
def test_equal_values_hash_the_same(a, b):
    assert canonical_json({"v": a}) == canonical_json({"v": b})
    assert cell_key({"v": a}) == cell_key({"v": b})


@pytest.mark.parametrize("change", [
    lambda c: c.update(steps=1001),
    lambda c: c["optimizer"].update(eps=1e-7),
    lambda c: c["grid"]["lr"].__setitem__(1, 0.0100001),
    lambda c: c["seeds"].reverse(),  # list order matters
    lambda c: c.update(extra=None),  # a present None differs from absence
    lambda c: c.update(steps=True),
])
def test_cell_key_changes_when_a_value_changes(change):
    changed = json.loads(json.dumps(CONFIG))
    change(changed)
    assert cell_key(changed) != cell_key(CONFIG)


def test_bool_is_not_one():
    assert cell_key({"v": True}) != cell_key({"v": 1})
    assert cell_key({"v": False}) != cell_key({"v": 0.0})


@pytest.mark.parametrize("bad, exc, where", [
    ({"lr": float("nan")}, ValueError, "['lr']"),
    ({"a": {"b": [1, float("inf")]}}, ValueError, "['a']['b'][1]"),
    ({"a": np.float64("-inf")}, ValueError, "['a']"),
    ({"a": object()}, TypeError, "['a']"),
    ({"a": {1, 2}}, TypeError, "['a']"),
    ({"a": np.zeros(3)}, TypeError, "['a']"),
    ({"a": {1: "x"}}, TypeError, "['a']"),
    ({"a": b"bytes"}, TypeError, "['a']"),
])
def test_canonical_json_refuses_ambiguous_values(bad, exc, where):
    with pytest.raises(exc) as info:
        canonical_json(bad)
    assert where in str(info.value)


def test_cell_key_needs_a_mapping():
    with pytest.raises(TypeError, match="mapping"):
        cell_key([1, 2])


json_leaves = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.text(max_size=5) | \
    st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=15)


@settings(max_examples=60, deadline=None)
@given(value=st.dictionaries(st.text(max_size=4), json_values, max_size=5), seed=st.integers(0, 99))
def test_canonical_json_property(value, seed):
    text = canonical_json(value)
    assert canonical_json(reorder(value, random.Random(seed))) == text
    assert text.isascii()
    # Canonical of the canonical form is itself: normalization is idempotent.
    assert canonical_json(json.loads(text)) == text


# ---------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_cleans_up(tmp_path):
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert tmp_files(tmp_path) == []
    # Same permissions as open() would give, not mkstemp's private 0600.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("fail_at", ["replace", "fsync", "write"])
def test_failed_atomic_write_keeps_old_content_and_no_temp(tmp_path, monkeypatch, fail_at):
    target = tmp_path / "data.bin"
    atomic_write_bytes(target, b"old content")

    def boom(*args, **kwargs):
        raise OSError(f"simulated failure in {fail_at}")

    if fail_at == "replace":
        monkeypatch.setattr(os, "replace", boom)
    elif fail_at == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    else:  # the write itself dies half-way (e.g. disk full after some bytes)
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                raise OSError("No space left on device")

            def __getattr__(self, name):
                return getattr(self.f, name)

        monkeypatch.setattr(os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="simulated|No space"):
        atomic_write_bytes(target, b"new content that never lands" * 1000)
    monkeypatch.undo()
    assert target.read_bytes() == b"old content"
    assert tmp_files(tmp_path) == []


def test_keyboard_interrupt_mid_write_removes_temp(tmp_path, monkeypatch):
    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(tmp_path / "x", b"data")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_needs_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write_bytes(tmp_path / "missing" / "f", b"x")


def test_atomic_write_json_refuses_nan_and_names_file(tmp_path):
    target = tmp_path / "doc.json"
    with pytest.raises(ValueError, match=r"doc\.json.*\['loss'\]"):
        atomic_write_json(target, {"loss": float("nan")})
    assert not target.exists()
    atomic_write_json(target, {"b": (1, 2.0), "a": np.float32(0.5)})
    assert json.loads(target.read_text()) == {"a": 0.5, "b": [1, 2.0]}
    assert isinstance(json.loads(target.read_text())["b"][1], float)  # floats stay floats


def test_atomic_write_parquet_unencodable_leaves_target(tmp_path):
    target = tmp_path / "t.parquet"
    atomic_write_parquet(target, pd.DataFrame({"a": [1, 2]}))
    with pytest.raises(StoreError, match=r"t\.parquet"):
        atomic_write_parquet(target, pd.DataFrame({"a": [object(), 1]}))
    pd.testing.assert_frame_equal(pd.read_parquet(target), pd.DataFrame({"a": [1, 2]}))
    assert tmp_files(tmp_path) == []


# The writer runs in a child that imports testbed.suites.store without the package's
# __init__ (which starts JAX), so it starts fast and shows the store needs no JAX.
_CHILD = textwrap.dedent("""
    import os, sys, types
    pkg = types.ModuleType("testbed")
    pkg.__path__ = [sys.argv[1]]
    sys.modules["testbed"] = pkg
    from testbed.suites.store import atomic_write_bytes
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax"))
    assert not heavy, heavy
    size = int(sys.argv[3])
    body = os.urandom(size)
    import hashlib
    data = hashlib.sha256(body).digest() + body
    print("ready", flush=True)
    sys.stdin.readline()  # "go": start writing only when the test is ready to kill
    while True:
        atomic_write_bytes(sys.argv[2], data)
""")


def test_sigkill_mid_write_never_leaves_a_truncated_file(tmp_path):
    size = 8 << 20  # big enough that most of the child's time is spent inside a write
    n = 4
    rng = random.Random(1234)
    targets = [tmp_path / f"t{i}" / "big.bin" for i in range(n)]
    children = []
    for t in targets:
        t.parent.mkdir()
        children.append(subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(PACKAGE_DIR), str(t), str(size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    killed_mid_write = 0
    try:
        for child, target in zip(children, targets, strict=True):
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
            child.stdin.write("go\n")
            child.stdin.flush()
            time.sleep(rng.uniform(0.01, 0.2))
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            assert child.returncode == -signal.SIGKILL
            if target.exists():
                raw = target.read_bytes()
                assert len(raw) == 32 + size, f"truncated: {len(raw)} bytes"
                assert hashlib.sha256(raw[32:]).digest() == raw[:32], "corrupt content"
            left = tmp_files(target.parent)
            assert set(target.parent.iterdir()) <= {target, *left}
            killed_mid_write += bool(left)
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
            child.communicate(timeout=10)  # reap it and close its pipes
    # The check above is only meaningful if some kills landed inside a write.
    assert killed_mid_write >= 1


# ---------------------------------------------------------------------------- SuiteStore: cells
@pytest.fixture
def store(tmp_path) -> SuiteStore:
    return SuiteStore(tmp_path / "results" / "suite")


def make_unfinished(store: SuiteStore, key: str) -> Path:
    """What a run killed before DONE leaves: some files, no marker."""
    d = store.cell_dir(key)
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "history.parquet").write_bytes(b"PAR1 half a file")
    (d / "stale.parquet").write_bytes(b"from an old attempt")
    return d


def test_root_is_created_on_first_write(store):
    assert not store.root.exists()
    assert store.done_keys() == [] and store.clean_unfinished() == []
    assert store.read_manifest() is None
    key = cell_key(CONFIG)
    assert not store.is_done(key)
    store.write_cell(key, CONFIG, history())
    assert store.root.is_dir()


def test_write_cell_then_load(store):
    key = cell_key(CONFIG)
    h = history(6)
    runs = pd.DataFrame({"run": [0, 1], "diverged_step": [-1, 40]})
    d = store.write_cell(key, CONFIG, h, tables={"runs": runs}, extra_json={"timing": {"wall_s": 1.5}})
    assert d == store.cell_dir(key) == store.root / key
    assert store.is_done(key)
    assert store.done_keys() == [key]
    config, loaded = store.load_cell(key)
    assert config == json.loads(json.dumps(CONFIG))
    pd.testing.assert_frame_equal(loaded, h)  # categoricals survive the round trip
    pd.testing.assert_frame_equal(store.load_table(key, "runs"), runs)
    pd.testing.assert_frame_equal(store.load_table(key, "history"), h)
    assert store.load_json(key, "timing") == {"wall_s": 1.5}
    done = json.loads((d / "DONE").read_text())
    assert done["key"] == key and done["finished_utc"].endswith("+00:00")
    assert sorted(p.name for p in d.iterdir()) == [
        "DONE", "config.json", "history.parquet", "runs.parquet", "timing.json"]
    with pytest.raises(KeyError, match="runs"):
        store.load_table(key, "nope")
    with pytest.raises(KeyError, match="timing"):
        store.load_json(key, "nope")


def test_done_is_written_strictly_last(store, monkeypatch):
    order = []
    real = store_mod.atomic_write_bytes

    def spy(path, data):
        order.append(Path(path).name)
        real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", spy)
    monkeypatch.setattr(files_mod, "atomic_write_bytes", spy)  # the json and parquet writers call it there
    store.write_cell("k", CONFIG, history(), tables={"a": history()}, extra_json={"b": {}})
    assert order[-1] == "DONE" and order.count("DONE") == 1
    assert set(order[:-1]) == {"config.json", "history.parquet", "a.parquet", "b.json"}


def test_crash_before_done_leaves_no_cell(store, monkeypatch):
    real = store_mod.atomic_write_bytes

    def die_on_table(path, data):
        if Path(path).name == "runs.parquet":
            raise KeyboardInterrupt  # killed between files
        real(path, data)

    monkeypatch.setattr(store_mod, "atomic_write_bytes", die_on_table)
    monkeypatch.setattr(files_mod, "atomic_write_bytes", die_on_table)
    with pytest.raises(KeyboardInterrupt):
        store.write_cell("k", CONFIG, history(), tables={"runs": history()})
    monkeypatch.undo()
    assert not store.cell_dir("k").exists() and not store.is_done("k")  # written whole elsewhere, or not at all
    assert store.done_keys() == []
    with pytest.raises(CellNotDoneError, match="does not exist"):
        store.load_cell("k")


def test_staging_of_a_dead_writer_is_cleaned_and_a_live_ones_kept(store):
    import subprocess
    import sys

    from testbed.suites.store import STAGING_DIR, _owner

    store.write_cell("k", CONFIG, history())
    host = _owner().rpartition("-")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    staging = store.root / STAGING_DIR
    left = [staging / f"k.{host}-{dead}.ab12", staging / "k.old.cd34", staging / f"k.{host}-{os.getpid()}.ef56",
            staging / "k.elsewhere-7.aa00"]
    for p in left:
        p.mkdir()
        (p / "history.parquet").write_bytes(b"half")
    store.clean_unfinished()
    assert [p.exists() for p in left] == [False, False, True, True]  # this live process and another host's stay
    assert store.done_keys() == ["k"]


def test_concurrent_writers_of_one_cell_leave_one_whole_cell(store):
    from concurrent.futures import ThreadPoolExecutor

    h = history(5)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: store.write_cell("k", CONFIG, h, tables={"runs": h}, force=True), range(16)))
    assert store.is_done("k") and store.verify_cell("k") is None
    pd.testing.assert_frame_equal(store.load_cell("k")[1], h)
    assert not any((store.root / ".staging").iterdir())


def test_unfinished_cell_is_not_done_and_is_cleared_by_write_cell(store):
    d = make_unfinished(store, "k")
    assert not store.is_done("k") and store.done_keys() == []
    h = history(3)
    store.write_cell("k", CONFIG, h)
    assert store.is_done("k")
    assert not (d / "stale.parquet").exists()  # nothing of the old attempt survives
    pd.testing.assert_frame_equal(store.load_cell("k")[1], h)


def test_done_without_its_files_is_not_done(store):
    d = store.write_cell("k", CONFIG, history())
    (d / "history.parquet").unlink()
    assert not store.is_done("k")


def test_clean_unfinished(store):
    store.write_cell("good", CONFIG, history())
    make_unfinished(store, "bad1")
    make_unfinished(store, "bad2")
    (store.root / ".manifest.json.abc123.tmp").write_text("left by a SIGKILL")
    (store.root / "notes.txt").write_text("not ours to delete")
    assert store.clean_unfinished() == ["bad1", "bad2"]
    assert store.done_keys() == ["good"]
    assert sorted(p.name for p in store.root.iterdir()) == ["good", "notes.txt"]
    assert store.clean_unfinished() == []


def test_refuses_to_overwrite_done_unless_forced(store):
    store.write_cell("k", CONFIG, history(), tables={"old": history()})
    with pytest.raises(CellExistsError, match="force=True") as info:
        store.write_cell("k", CONFIG, history(seed=1))
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, TestbedError)
    pd.testing.assert_frame_equal(store.load_cell("k")[1], history())  # untouched
    new = history(5, seed=1)
    store.write_cell("k", {"new": 1}, new, force=True)
    assert store.load_cell("k")[0] == {"new": 1}
    pd.testing.assert_frame_equal(store.load_cell("k")[1], new)
    assert not (store.cell_dir("k") / "old.parquet").exists()


def test_bad_input_is_refused_before_a_finished_cell_is_touched(store):
    store.write_cell("k", CONFIG, history())
    with pytest.raises(ValueError, match=r"nan"):
        store.write_cell("k", {"lr": float("nan")}, history(), force=True)
    with pytest.raises(ValueError, match="'cell' column"):
        store.write_cell("k", CONFIG, history().assign(cell="x"), force=True)
    with pytest.raises(ValueError, match="history"):
        store.write_cell("k", CONFIG, history(), tables={"history": history()}, force=True)
    with pytest.raises(ValueError, match="config"):
        store.write_cell("k", CONFIG, history(), extra_json={"config": {}}, force=True)
    with pytest.raises(TypeError, match="DataFrame"):
        store.write_cell("k", CONFIG, [1, 2], force=True)
    assert store.is_done("k")
    pd.testing.assert_frame_equal(store.load_cell("k")[1], history())


@pytest.mark.parametrize("key", ["../escape", ".hidden", "a/b", "", "-x", "a b"])
def test_unsafe_keys_are_refused(store, key):
    with pytest.raises(ValueError, match="invalid cell key"):
        store.cell_dir(key)


def test_remove_cell(store):
    store.write_cell("k", CONFIG, history())
    store.remove_cell("k")
    assert not store.cell_dir("k").exists() and store.done_keys() == []
    store.remove_cell("k")  # absent: no error


@pytest.mark.parametrize("victim, content", [
    ("config.json", b"{not json"),
    ("config.json", b"[1, 2]"),
    ("history.parquet", b"PAR1 garbage"),
])
def test_corrupt_files_give_an_error_naming_the_file(store, victim, content):
    d = store.write_cell("k", CONFIG, history())
    (d / victim).write_bytes(content)
    with pytest.raises(CorruptCellError, match=victim.replace(".", r"\.")) as info:
        store.load_cell("k")
    assert str(d) in str(info.value)
    with pytest.raises(CorruptCellError, match=victim.replace(".", r"\.")):
        store.aggregate()


def test_corrupt_extra_table(store):
    d = store.write_cell("k", CONFIG, history(), tables={"runs": history()})
    (d / "runs.parquet").write_bytes(b"")
    with pytest.raises(CorruptCellError, match=r"runs\.parquet"):
        store.load_table("k", "runs")


# ---------------------------------------------------------------------------- SuiteStore: aggregate
def test_aggregate_equals_direct_concat(store):
    hs = {f"c{i}": history(3 + i, seed=i) for i in range(4)}
    for k in ["c2", "c0", "c3", "c1"]:  # written out of order: result is by sorted key
        store.write_cell(k, {"i": k}, hs[k])
    make_unfinished(store, "c9")
    out = store.aggregate()
    assert list(out.columns) == ["cell", *history().columns]
    expected = pd.concat([h.assign(cell=k) for k, h in sorted(hs.items())], ignore_index=True)
    expected = expected[["cell", *history().columns]]
    pd.testing.assert_frame_equal(out.astype({"cell": str}), expected.astype({"cell": str}))
    assert not out.duplicated().any()
    assert len(out) == sum(map(len, hs.values()))
    assert "c9" not in set(out["cell"])
    pd.testing.assert_frame_equal(pd.read_parquet(store.root / "results.parquet"), out)


def test_aggregate_given_keys_order_and_duplicates(store):
    for k in ["a", "b", "c"]:
        store.write_cell(k, {"k": k}, history(2, seed=ord(k)))
    out = store.aggregate(["c", "a", "c"])
    assert list(out["cell"]) == ["c", "c", "a", "a"]
    assert list(out["run"]) == [0, 1, 0, 1]  # original row order inside a cell
    assert list(out["cell"].cat.categories) == ["c", "a"]
    with pytest.raises(TypeError, match="single string"):
        store.aggregate("abc")


def test_aggregate_never_includes_unfinished_cells(store):
    store.write_cell("done", CONFIG, history())
    make_unfinished(store, "half")
    with pytest.raises(CellNotDoneError, match="half"):
        store.aggregate(["done", "half"])
    out = store.aggregate(["done", "half", "never"], skip_missing=True)
    assert set(out["cell"]) == {"done"}
    assert set(store.aggregate()["cell"]) == {"done"}


def test_aggregate_of_nothing(store):
    out = store.aggregate()
    assert list(out.columns) == ["cell"] and len(out) == 0
    assert (store.root / "results.parquet").is_file()


def test_aggregate_categoricals_with_different_categories(store):
    a = history(4, splits=("train", "test"))
    b = history(3, splits=("test", "ood"))  # different categories, different order
    c = history(2).astype({"metric": str})  # the same column plain in one cell
    store.write_cell("a", {"c": "a"}, a)
    store.write_cell("b", {"c": "b"}, b)
    store.write_cell("c", {"c": "c"}, c)
    out = store.aggregate()
    for col in ["task", "split", "metric"]:
        assert isinstance(out[col].dtype, pd.CategoricalDtype), col
    # The union of categories, in order of first appearance (keeps each cell's order).
    assert list(out["split"].cat.categories) == ["train", "test", "ood"]
    # Values, not codes, survive: compare as plain strings with a direct concat.
    expected = pd.concat([a, b, c], ignore_index=True).astype(
        {"task": str, "split": str, "metric": str})
    got = out.drop(columns="cell").astype({"task": str, "split": str, "metric": str})
    pd.testing.assert_frame_equal(got, expected)
    assert list(out["split"]) == ["train", "test", "train", "test", "test", "ood", "test",
                                  "train", "test"]
    back = pd.read_parquet(store.root / "results.parquet")
    assert isinstance(back["split"].dtype, pd.CategoricalDtype)
    pd.testing.assert_frame_equal(back, out)


def test_aggregate_keeps_order_when_all_cells_agree(store):
    dtype = pd.CategoricalDtype(["small", "large"], ordered=True)
    for k in ["a", "b"]:
        store.write_cell(k, {}, pd.DataFrame({"size": pd.Categorical(["large", "small"], dtype=dtype)}))
    assert store.aggregate()["size"].dtype == dtype


# ---------------------------------------------------------------------------- manifest
def test_manifest_round_trip(store):
    manifest = {"suite": "default", "cells": {cell_key(CONFIG): CONFIG}, "version": 1,
                "grid": (1e-3, 1.0)}
    store.write_manifest(manifest)
    assert store.read_manifest() == json.loads(json.dumps(manifest))
    store.write_manifest({"suite": "v2"})
    assert store.read_manifest() == {"suite": "v2"}
    assert tmp_files(store.root) == []


def test_corrupt_manifest(store):
    store.write_manifest({"a": 1})
    (store.root / "manifest.json").write_text("{")
    with pytest.raises(CorruptCellError, match=r"manifest\.json"):
        store.read_manifest()


def test_the_report_outputs_beside_the_cells_survive_a_rerun(tmp_path):
    """tables/ and figures/ are not unfinished cells: cleaning keeps them (a finished suite's
    report is reused, not rebuilt from nothing)."""
    store = SuiteStore(tmp_path / "suite")
    store.write_cell("k", CONFIG, history())
    for d in ("tables", "figures"):
        (store.root / d).mkdir()
        (store.root / d / "x.csv").write_text("a\n")
    (store.root / "stale").mkdir()  # an interrupted cell: no DONE
    assert store.clean_unfinished() == ["stale"]
    assert (store.root / "tables" / "x.csv").is_file() and (store.root / "figures" / "x.csv").is_file()
