"""Tests for the attribution bars (`testbed.analyses.attribution.figures`)."""

from __future__ import annotations

import numpy as np
from figure_tables import TASKS

from testbed.analyses.attribution.figures import attribution_bars


def test_attribution_bars_sum_to_one(tables):
    fig = attribution_bars(tables)
    (ax,) = fig.axes
    bars: dict[str, float] = {}
    for p in ax.patches:
        gid = str(p.get_gid() or "")
        if gid.startswith("attr:"):
            key = gid.rsplit(":", 1)[0] if not gid.split(":")[-2] == "piece" else gid.rsplit(":", 2)[0]
            bars[key] = bars.get(key, 0.0) + p.get_width()
    expected = sum((len(v[1]) - 1) * len(v[4]) for v in TASKS.values())
    assert len(bars) == expected
    assert np.allclose(list(bars.values()), 1.0)
