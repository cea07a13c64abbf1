"""Compiled programs on disk under a durable name: a warm suite loads them without tracing, with
the same numbers; a name changes with the code that builds the program, and a program built by
code no file hash covers gets none."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from test_suite import TINY_SUITE, write  # the tests folder is on the path under pytest

from testbed.core import durable
from testbed.suites.runner import durable_key, run_suite
from testbed.suites.spec import load_suite
from testbed.training import engine, executables

pytestmark = pytest.mark.skipif(executables.folder() is None, reason="the compile cache is off")


def _count_compiles(monkeypatch) -> list:
    calls = []
    real = engine._compile

    def counting(*a, **k):
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(engine, "_compile", counting)
    return calls


def test_a_warm_suite_loads_its_programs_without_tracing_and_gives_the_same_numbers(tmp_path, monkeypatch):
    suite = load_suite(write(tmp_path, TINY_SUITE))
    assert all(durable_key(c) for c in suite.cells)
    first = run_suite(suite, tmp_path / "a", quiet=True)  # compiles, or loads what an earlier run stored
    engine.release_programs()  # as a new process would start
    compiles, loaded = _count_compiles(monkeypatch), executables.STATS["loaded"]
    values = dict(durable.STATS)
    second = run_suite(suite, tmp_path / "b", quiet=True)
    assert compiles == [] and executables.STATS["loaded"] - loaded == len(suite.cells)
    # the tasks' evaluation sets and candidates are read, not computed (`testbed.core.durable.kept`)
    assert durable.STATS["saved"] == values["saved"] and durable.STATS["loaded"] - values["loaded"] >= 2 * 2
    for key in first.ran:
        a = pd.read_parquet(first.root / key / "history.parquet")
        b = pd.read_parquet(second.root / key / "history.parquet")
        pd.testing.assert_frame_equal(a, b)


def test_a_stored_program_for_other_shapes_or_a_damaged_file_is_compiled_again(tmp_path, monkeypatch):
    suite = load_suite(write(tmp_path, TINY_SUITE.replace('"sine_line", "two_slopes"', '"step"')))
    run_suite(suite, tmp_path / "a", quiet=True)
    cell = suite.cells[0]
    key, devices = durable_key(cell), engine.jax.devices()
    path = executables._path(key, len(cell.seeds) + (-len(cell.seeds) % len(devices)), devices)
    assert path.is_file()
    assert executables.load(key, 2 + (-2 % len(devices)), devices, "other shapes") is None
    path.write_bytes(b"not a program")
    engine.release_programs()
    compiles = _count_compiles(monkeypatch)
    run_suite(suite, tmp_path / "b", quiet=True)
    assert len(compiles) == 1 and path.read_bytes() != b"not a program"  # compiled and stored again


RUN = """
import json, sys
from testbed.suites.runner import run_suite
from testbed.suites.spec import load_suite
from testbed.training import engine, executables
run = run_suite(load_suite(sys.argv[1]), sys.argv[2], quiet=True)
print(json.dumps({"compiles": engine.COMPILES["count"], **executables.STATS}))
"""


def test_a_program_jax_loaded_from_its_cache_is_stored_and_loads_in_another_process(tmp_path):
    """JAX's cache answers the first run here; the program is stored with the bytes JAX read (an
    executable JAX loaded re-serializes without its machine code, and another process then
    fails with "Function ... not found"), and a third process loads it and gets the same numbers."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    suite = write(tmp_path, TINY_SUITE.replace('"sine_line", "two_slopes"', '"parity"'))
    env = {**os.environ, "TESTBED_COMPILE_CACHE": str(tmp_path / "cache")}

    def run(results: str) -> dict:
        out = subprocess.run([sys.executable, "-c", RUN, str(suite), str(tmp_path / results)], env=env,
                             capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert run("a")["compiles"] == 1
    shutil.rmtree(tmp_path / "cache" / "executables")  # as after an edit: new names, JAX's cache still holds it
    second = run("b")
    assert second["compiles"] == 1 and second["saved"] == 1
    third = run("c")
    assert third["compiles"] == 0 and third["loaded"] == 1
    key = next(p.name for p in (tmp_path / "a" / "tiny").iterdir() if (p / "DONE").exists())
    for other in ("b", "c"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / "tiny" / key / "history.parquet"),
                                      pd.read_parquet(tmp_path / other / "tiny" / key / "history.parquet"))


PLUGIN = '''
import jax.numpy as jnp

import testbed
from testbed.tasks.task import Domain, Piece


@testbed.register_task
def durable_ramp_{n}(slope: float = 2.0) -> testbed.Task:
    return testbed.build_task(
        name="durable_ramp_{n}", description="a ramp", domain=Domain("box", (-1.0,), (1.0,)),
        pieces=[Piece("ramp", lambda raw: jnp.ones(raw.shape[0], bool), lambda raw: slope * raw[:, 0])],
        splits={{"train": (lambda raw: jnp.abs(raw[:, 0]) <= 0.5, None, None),
                "outside": (lambda raw: jnp.abs(raw[:, 0]) > 0.5, None, None)}},
        target="scalar", params={{"slope": slope}})
'''


def test_the_name_changes_with_a_plugin_file_and_code_in_no_file_gets_none(tmp_path, monkeypatch):
    import testbed
    from testbed.tasks.registry import _FACTORIES

    plug = tmp_path / "ramp_plugin.py"
    plug.write_text(PLUGIN.format(n=1))
    text = TINY_SUITE.replace('"sine_line", "two_slopes"', '"durable_ramp_1"')
    suite = load_suite(write(tmp_path, f'plugins = ["{plug}"]\n' + textwrap.dedent(text)))
    before = durable_key(suite.cells[0])
    assert before is not None
    plug.write_text(PLUGIN.format(n=1) + "\n# an edit\n")  # the code changed: another name
    assert durable_key(suite.cells[0]) not in (None, before)

    def made_here(slope: float = 1.0) -> testbed.Task:  # defined in this (hashed) file
        return testbed.make_task("sine_line")

    monkeypatch.setitem(_FACTORIES, "durable_here", made_here)  # registered for this test only
    here = load_suite(write(tmp_path, textwrap.dedent(TINY_SUITE.replace('"sine_line", "two_slopes"',
                                                                          '"durable_here"')), "here.toml"))
    assert durable_key(here.cells[0]) is not None  # this test file is hashed: a module loaded from a file
    plain = load_suite(write(tmp_path, TINY_SUITE, "plain.toml")).cells[0]
    assert durable_key(plain) is not None
    monkeypatch.setitem(_FACTORIES, "durable_sourceless", print)  # a factory no file holds (as in a notebook)
    assert durable_key(plain) is None  # for every cell: another method or task may build on it (routing's base)


def test_the_order_of_a_method_option_is_part_of_the_name(tmp_path):
    """Routing's blocks in another order give other units to each piece: another program."""
    base = TINY_SUITE.replace('"sine_line", "two_slopes"', '"sine_line"')
    names = []
    for i, blocks in enumerate(('{ s = ["sine"], l = ["line"] }', '{ l = ["line"], s = ["sine"] }')):
        text = base.replace('methods = ["mse"]', f'methods = [{{ name = "routing", blocks = {blocks}, sizes = [1, 3], '
                                                 'shared = 0 }]')
        names.append(durable_key(load_suite(write(tmp_path, text, f"order{i}.toml")).cells[0]))
    assert None not in names and names[0] != names[1]
