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


def test_error_vs_n_draws_one_curve_per_label():
    ns = np.arange(6)
    hist = pd.concat([pd.DataFrame({"seed": s, "step": 10, "shift": "none", "n": ns, "error": (1 + i) / (ns + 1),
                                    "label": lab}) for s in range(2) for i, lab in enumerate(("a", "b"))],
                     ignore_index=True)
    fig = error_vs_n(hist, None, title="t")
    a, b = with_gid(fig, "model:a"), with_gid(fig, "model:b")
    assert len(a) == len(b) == 1
    np.testing.assert_allclose(b[0].get_ydata(), 2 * a[0].get_ydata())


def test_probe_predictions_draw_the_loss_and_each_prompt_with_its_true_value():
    from testbed.analyses.icl.figures import probe_predictions

    steps = [10, 20, 30]
    probes = pd.DataFrame([{"seed": s, "step": t, "prompt": p, "n": n, "prediction": p + t / 30 * (n / 4),
                            "truth": p + 1.0} for s in range(2) for t in steps for p in range(4) for n in (1, 2, 4)])
    loss = pd.DataFrame({"seed": np.repeat([0, 1], 30), "step": np.tile(np.arange(1, 31), 2),
                         "value": np.tile(np.exp(-np.arange(30) / 10), 2)})
    fig = probe_predictions(probes, loss, title="t", max_prompts=3)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 4  # the loss, then three of the four prompts
    assert axes[0].get_yscale() == "log"
    for j, ax in enumerate(axes[1:]):
        truth = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [0, 1]]
        assert truth and truth[0].get_ydata()[0] == j + 1.0  # the true value, dashed across the panel
        solid = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]  # N = K
        np.testing.assert_allclose(solid[0].get_ydata(), [j + t / 30 for t in steps])
    assert probe_predictions(probes.iloc[:0], loss, title="t") is None
