"""How often the plateau detector counts right, the numbers quoted in
testbed/analyses/plateaus/detect.py's docstring:

* two-layer linear networks (`testbed.tasks.deep_linear.two_layer_descent`), singular values
  2^k for 2 to 5 modes, 8 seeds: full-batch and per-update minibatch (128) losses, and
  log-spaced evaluations of both (`log_points` of them); one stall per mode expected, drop
  times against the closed form of Saxe et al. 2014;
* staircases of 3 sigmoid drops in log space (tests/test_plateaus.py's `sigmoid_curve`),
  20 seeds, at several noise levels and spacings.

    python benchmarks/studies/plateau_accuracy.py [log_points]     (about 10 s)
"""

from __future__ import annotations

import sys

import numpy as np

import testbed
from testbed.tasks.deep_linear import two_layer_descent

T, CENTERS, WIDTHS, DROPS = 4000.0, (800.0, 2000.0, 3000.0), (30.0, 60.0, 40.0), (1.5, 1.0, 2.0)


def sigmoid_curve(t, noise, seed):
    y = np.full(len(t), 0.5)
    for c, w, d in zip(CENTERS, WIDTHS, DROPS, strict=True):
        y = y - d / (1.0 + np.exp(-(t - c) / w))
    return np.exp(y + np.random.default_rng(seed).normal(0.0, noise, len(t)))


def grid(spacing: str, n: int) -> np.ndarray:
    return np.linspace(0.0, T, n) if spacing == "linear" else np.concatenate([[0.0], np.geomspace(1.0, T, n - 1)])


def main(log_points: int = 200) -> None:
    print("two-layer linear networks: runs with one stall per mode (of 8), worst relative drop-time error")
    for k in (2, 3, 4, 5):
        values = tuple(2.0 ** np.arange(k)[::-1])
        for batch in (0, 128):
            for spacing in ("every update", "log-spaced"):
                good, errs = 0, []
                for seed in range(8):
                    loss, predicted = two_layer_descent(values, steps=3000, batch=batch, seed=seed)
                    t = np.arange(len(loss), dtype=np.float64)
                    if spacing == "log-spaced":
                        idx = np.unique(np.geomspace(1, len(loss), log_points).astype(int) - 1)
                        t, loss = t[idx], loss[idx]
                    stalls = testbed.read_curve(t, loss).stalls
                    if len(stalls) == k:
                        good += 1
                        errs.append(np.max(np.abs(np.array([p.drop_step for p in stalls]) / predicted - 1)))
                worst = f"{max(errs):.2f}" if errs else "-"
                print(f"  {k} modes, batch {batch or 'full':>4}, {spacing:12s}: {good}/8, {worst}")
    print("3 sigmoid drops: seeds (of 20) with the count wrong")
    for spacing, n, noise, smooth in (("linear", 200, 0.1, 5), ("log", 200, 0.1, 5), ("linear", 200, 0.2, 5),
                                      ("log", 200, 0.2, 5), ("linear", 4000, 0.3, 15)):
        t = grid(spacing, n)
        bad = sum(len(testbed.read_curve(t, sigmoid_curve(t, noise, s), smooth=smooth).stalls) != 3 for s in range(20))
        print(f"  {n} {spacing} points, noise SD {noise}, smooth {smooth}: {bad}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
