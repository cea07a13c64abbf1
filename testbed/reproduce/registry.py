"""The reproduction record and its registry (what an entry file imports); running them is
`testbed.reproduce.base`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from testbed.core.registry import Registry


class Measured(NamedTuple):
    """What one run of a reproduction measured: the value, a line about it, a figure (or None)."""

    value: float
    details: str
    figure: Any = None


class Reproduction(NamedTuple):
    """A published claim and how this machine re-measures it.

    Attributes:
        name: registry name. claim: the claim, in a sentence. source: paper and figure or table.
        band: (low, high) the measured value must fall in (inclusive). unit: what the value is.
        why: why the band is what it is (the published numbers, what the small setting can show).
        run: (quick) -> `Measured`.
        known_failure: when set, a value outside the band is reported as KNOWN FAIL with this
            reason (measured value shown), not as FAIL.
        quick_passes: whether the reduced version (``quick``) is expected inside the band too
            (tests/test_reproduce.py holds it to that); False where the small run is too short.
    """

    name: str
    claim: str
    source: str
    band: tuple[float, float]
    unit: str
    why: str
    run: Callable[[bool], Measured]
    known_failure: str | None = None
    quick_passes: bool = True


REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction", Reproduction)


def register_reproduction(name: str):
    """Register a reproduction factory ``() -> Reproduction``; refuses a name already taken."""
    return REPRODUCTIONS.register(name)
