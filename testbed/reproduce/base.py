"""The reproduction record, its registry, and running them.

A reproduction is one file (`testbed.reproduce.<name>`) that registers a factory returning a
`Reproduction`: the published claim and its source, a small experiment that runs on this
machine, the band the measured value must fall in and why. `run_reproductions` runs them and
returns one row each: claim, source, measured, band, verdict (PASS, FAIL, or KNOWN FAIL with
the reason, never silently), seconds::

    @register_reproduction("my_claim")
    def my_claim() -> Reproduction:
        def run(quick: bool) -> Measured:
            ...
            return Measured(value, "one line of what was measured", figure)
        return Reproduction("my_claim", claim="...", source="Author et al. 2024, Fig. 2", band=(0.9, 1.0),
                            why="...", run=run)

``quick`` is the reduced version `make test` runs: the same experiment, smaller; its value must
be finite and, where ``quick_passes``, inside the band (only the full run's verdict is the record).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from testbed.core.errors import ConfigError
from testbed.reproduce.registry import REPRODUCTIONS, Measured, Reproduction, register_reproduction  # noqa: F401

COLUMNS = ["name", "claim", "source", "measured", "unit", "band", "verdict", "seconds", "details"]


def list_reproductions() -> list[str]:
    """Names of the registered reproductions, in registration order."""
    _load()
    return REPRODUCTIONS.ordered()


def make_reproduction(name: str) -> Reproduction:
    _load()
    return REPRODUCTIONS.make(name)


def verdict(r: Reproduction, value: float) -> str:
    lo, hi = r.band
    if math.isfinite(value) and lo <= value <= hi:
        return "PASS"
    return "KNOWN FAIL" if r.known_failure else "FAIL"


def run_reproductions(names: Sequence[str] | None = None, *, quick: bool = False,
                      on_done: Callable[[dict], None] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run reproductions (default all); returns (one row each, {name: figure})."""
    known = list_reproductions()
    names = list(names) if names else known
    bad = [n for n in names if n not in known]
    if bad:
        raise ConfigError(f"reproduce: unknown reproduction {bad[0]!r}; known: {', '.join(known)}")
    rows, figures = [], {}
    for n in names:
        r = make_reproduction(n)
        t0 = time.perf_counter()
        m = r.run(quick)
        v = verdict(r, float(m.value))
        row = {"name": n, "claim": r.claim, "source": r.source, "measured": float(m.value), "unit": r.unit,
               "band": f"[{r.band[0]:g}, {r.band[1]:g}]", "verdict": v, "seconds": time.perf_counter() - t0,
               "details": m.details + (f" Known failure: {r.known_failure}" if v == "KNOWN FAIL" else "")}
        rows.append(row)
        if m.figure is not None:
            figures[n] = m.figure
        if on_done is not None:
            on_done(row)
    return pd.DataFrame(rows, columns=COLUMNS), figures


def _load() -> None:
    """Import the built-in reproductions (each registers itself)."""
    import testbed.reproduce.entries  # noqa: F401
