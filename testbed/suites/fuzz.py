"""Mutations of valid suite and task specs, for fuzzing the loaders (tests/test_fuzz.py and
benchmarks/reliability/fuzz_specs.py): every input must load, or raise the project's own
error naming the file and field, never another exception.

`mutate(spec, rng)` applies one to three random edits to a parsed spec (a dict of TOML
values): delete a key, add an unknown one, replace a value by one of another type or a
strange value of the same type (negative, zero, huge, NaN, empty, very long text, a nested
table), or drop or duplicate a list item. Plain data, no JAX.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any

STRANGE = [None, 0, -1, 1, 10**12, -(10**12), 0.0, -0.5, 1e308, math.inf, -math.inf, math.nan, True, False, "",
           "x", "all", "mse", "../../etc/passwd", "a" * 300, "__import__('os').system('true')", "x < 0 and",
           "sin(", "1e999", [], [1, 2], ["x"], [[1]], {}, {"name": "x"}, {"a": {"b": {"c": 1}}}]


def _paths(v: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*prefix, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*prefix, i))
    return out


def _get(v: Any, path: tuple) -> Any:
    for p in path:
        v = v[p]
    return v


def mutate(spec: dict, rng: random.Random) -> dict:
    """A copy of ``spec`` with one to three random edits."""
    out = copy.deepcopy(spec)
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _paths(out) if p]
        if not paths:
            out["x"] = rng.choice(STRANGE)
            continue
        path = rng.choice(paths)
        parent, key = _get(out, path[:-1]), path[-1]
        op = rng.random()
        if op < 0.2 and isinstance(parent, dict):
            del parent[key]
        elif op < 0.3 and isinstance(parent, dict):
            parent[f"unknown_{rng.randint(0, 99)}"] = rng.choice(STRANGE)
        elif op < 0.4 and isinstance(parent, list):
            if rng.random() < 0.5:
                parent.pop(key)
            else:
                parent.append(copy.deepcopy(parent[key]))
        else:
            parent[key] = copy.deepcopy(rng.choice(STRANGE))
    return out
