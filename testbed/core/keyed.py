"""Defaults that enter a suite cell's key.

A cell's key hashes the configuration the suite file gives (`testbed.suites.cells.Cell.config`),
not the defaults the code fills in, so a results folder keeps its cells across versions. When a
method's default changes what it computes, the old cells would be reused silently under the new
meaning. A default listed here is written into the key of every cell of that method that does
not set it, so such cells are recomputed once, and the factory reads its default from here (one
definition). Adding an entry changes the keys of that method's cells only.

This module imports nothing heavy: reading a results folder needs it without JAX.
"""

from __future__ import annotations

KEYED_DEFAULTS: dict[str, dict[str, object]] = {
    # 2026-12: routing's default recipe holds each block silent on other pieces' inputs
    # (`foreign_l1`; before, 0) and shares half of each routed layer among all pieces
    # (`shared`: a fraction of the width; before, 0 units), which localizes every
    # built-in multi-piece task (issue 19).
    "routing": {"foreign_l1": 1.0, "shared": 0.5},
}


def keyed_default(method: str, name: str) -> object:
    return KEYED_DEFAULTS[method][name]
