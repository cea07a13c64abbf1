"""Fixtures of the figure tests: the synthetic suite tables, and no figure left open."""

import matplotlib.pyplot as plt
import pytest
from figure_tables import synthetic_tables


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


@pytest.fixture(autouse=True)
def _close_all():
    yield
    plt.close("all")
