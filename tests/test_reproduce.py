"""Reproductions (`testbed.reproduce`): every registered one is described, its reduced version
runs and, where it is meant to, lands inside its band; verdicts and the command line."""

import math

import pytest

from testbed.core.errors import ConfigError
from testbed.reproduce.base import (
    Reproduction,
    list_reproductions,
    make_reproduction,
    run_reproductions,
    verdict,
)

NAMES = list_reproductions()


def test_the_built_in_reproductions_are_registered():
    assert {"saxe_modes", "xu_linear_rays", "spectral_bias", "superposition", "linear_attention_gd",
            "gradient_routing", "myopic_shutdown", "task_health"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_reproduction_says_what_it_claims_and_why_its_band(name):
    r = make_reproduction(name)
    assert r.claim and r.source and r.unit and len(r.why) > 20
    assert r.band[0] <= r.band[1]


# Reduced reproductions that train for thousands of steps: compiled with XLA's optimizations
# (tests/conftest.py), 1.5-5x faster than without (2026-12-07); the others are mostly compiling.
TRAIN_LONG = {"superposition", "myopic_shutdown", "grokking", "linear_attention_gd", "spectral_bias"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.optimized) if n in TRAIN_LONG else n
                                  for n in NAMES])
def test_every_reduced_reproduction_runs(name):
    table, figures = run_reproductions([name], quick=True)
    row = table.iloc[0]
    assert math.isfinite(row["measured"]) and row["details"] and row["seconds"] > 0
    if make_reproduction(name).quick_passes:
        assert row["verdict"] == "PASS", row["details"]


def test_verdicts():
    r = Reproduction("x", "c", "s", (0.5, 1.0), "u", "why it is so", lambda quick: None)
    assert verdict(r, 0.7) == "PASS" and verdict(r, 1.2) == "FAIL" and verdict(r, float("nan")) == "FAIL"
    assert verdict(r._replace(known_failure="too small a budget"), 0.1) == "KNOWN FAIL"


def test_an_unknown_reproduction_is_named():
    with pytest.raises(ConfigError, match="unknown reproduction 'saxe'; known: saxe_modes"):
        run_reproductions(["saxe"])
