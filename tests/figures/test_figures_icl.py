"""The in-context error figure (`testbed.analyses.icl.figures.error_vs_n`) on made-up tables."""

import numpy as np
import pandas as pd
from figure_tables import with_gid

from testbed.analyses.icl.figures import FLOOR, error_vs_n


def test_error_vs_n_draws_the_model_and_every_baseline_per_shift():
    ns = np.arange(11)
    hist = pd.concat([pd.DataFrame({"seed": s, "step": 100, "shift": sh, "n": ns, "error": 1.0 / (ns + 1) + 0.01 * s})
                      for s in range(3) for sh in ("none", "skewed")], ignore_index=True)
    base = pd.concat([pd.DataFrame({"shift": sh, "baseline": b, "n": ns, "error": v})
                      for sh in ("none", "skewed") for b, v in (("least_squares", np.where(ns >= 5, 1e-13, 0.5)),
                                                                ("averaging", 6.0 / np.maximum(ns, 1)))],
                     ignore_index=True)
    fig = error_vs_n(hist, base, title="t", model="transformer")
    models = with_gid(fig, "model")
    assert len(models) == 2  # one panel per shift
    np.testing.assert_allclose(models[0].get_ydata(), [1.0 / (n + 1) + 0.01 for n in ns])  # the mean over seeds
    ls = with_gid(fig, "baseline:least_squares")
    assert len(ls) == 2 and ls[0].get_ydata().min() == FLOOR  # exact zeros drawn at the floor
    assert len(with_gid(fig, "baseline:averaging")) == 2
