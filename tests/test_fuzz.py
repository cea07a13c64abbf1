"""Fuzzed suite and task specs (`testbed.suites.fuzz.mutate`): every mutation of a valid spec
loads or raises the project's own error naming the file, never another exception, and never
writes a file. benchmarks/reliability/fuzz_specs.py runs 10,000 of them."""

import os
import random
import tomllib
from pathlib import Path

import pytest

from testbed.core.errors import TestbedError
from testbed.suites.fuzz import mutate
from testbed.suites.spec import suite_from_spec
from testbed.tasks.spec import task_from_spec

ROOT = Path(__file__).resolve().parents[1]
CASES = int(os.environ.get("TESTBED_FUZZ_CASES", 150))
SUITES = sorted((ROOT / "benchmarks").glob("*.toml"))
TASKS = sorted((ROOT / "tasks").glob("*.toml"))


def check(load, spec, where: str) -> str:
    try:
        load(spec)
        return "loaded"
    except TestbedError as e:
        assert where in str(e), f"the error does not name {where}: {e}"
        return "refused"


@pytest.mark.parametrize("kind", ["suite", "task"])
def test_mutated_specs_load_or_are_refused_cleanly(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written would land here
    files = SUITES if kind == "suite" else TASKS
    rng = random.Random(0 if kind == "suite" else 1)
    seen = {"loaded": 0, "refused": 0}
    for i in range(CASES):
        f = files[i % len(files)]
        spec = mutate(tomllib.loads(f.read_text()), rng)
        where = f"fuzz-{i}.toml"
        if kind == "suite":
            seen[check(lambda s, w=where: suite_from_spec(s, path=w, build=False), spec, where)] += 1
        else:
            seen[check(lambda s, w=where: task_from_spec(s, source=w), spec, where)] += 1
    assert seen["refused"] > CASES // 4  # the mutations do reach the checks
    assert list(tmp_path.iterdir()) == []  # no file written
