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


# An analysis that measures a cell of another method on this method's defaults: the routing
# analysis measures a plain model on the blocks of a default `routing` method, so the cells it
# runs on are keyed by routing's defaults too (a changed default redoes them).
ANALYSIS_DEFAULTS: dict[str, str] = {"routing": "routing"}  # analysis -> method


def analysis_defaults(analyses, method: str) -> dict[str, dict[str, object]]:
    """The keyed defaults ``analyses`` measure a ``method`` cell with (none for its own method's)."""
    return {a: KEYED_DEFAULTS[m] for a in analyses if (m := ANALYSIS_DEFAULTS.get(a)) and m != method
            and m in KEYED_DEFAULTS}


# Options whose table order means something (routing: the first blocks take the spare units, and
# ``sizes`` go by position). A key's JSON sorts table keys, so such a table out of sorted order is
# keyed as its list of [name, value] pairs, which the method reads the same way; in sorted order it
# is keyed as the table, as before.
ORDERED_OPTIONS: dict[str, tuple[str, ...]] = {"routing": ("blocks",)}


def with_defaults(method: dict) -> dict:
    """A method's config (``{"name": ..., options...}``) with its keyed defaults filled in under
    the options it gives: what a cell's key hashes."""
    name = method["name"]
    out = {"name": name, **KEYED_DEFAULTS.get(name, {}), **{k: v for k, v in method.items() if k != "name"}}
    for option in ORDERED_OPTIONS.get(name, ()):
        table = out.get(option)
        if isinstance(table, dict) and list(table) != sorted(table):
            out[option] = [[k, v] for k, v in table.items()]
    return out


def keyed_default(method: str, name: str) -> object:
    return KEYED_DEFAULTS[method][name]
