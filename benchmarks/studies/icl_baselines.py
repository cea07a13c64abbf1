"""Normalized error (squared error / d) of the in-context baselines against the number of
in-context examples N, per function class (and per shift for linear regression), on the very
same prompts: the baseline half of Garg et al.'s main figure, with the closed forms beside.

    python benchmarks/studies/icl_baselines.py [d] [points] [prompts]
"""

from __future__ import annotations

import sys

import jax
import numpy as np

import testbed

NS = (1, 2, 5, 10, 20)


def main(d: int = 5, points: int = 20, n: int = 2000) -> None:
    ns = [k for k in NS if k <= points]
    print(f"d = {d}, {n} prompts; columns: N = {', '.join(map(str, ns))}")
    rows = [(cls, "none") for cls in testbed.list_function_classes()]
    rows += [("linear", s) for s in ("scale_0.5", "scale_2", "skewed", "orthogonal", "half_space", "noisy_y")]
    for cls, shift in rows:
        p = testbed.make_prompt_task(cls, d=d, points=points).sample(jax.random.key(0), n, shift)
        for name, pred in testbed.baseline_predictions(p).items():
            err = np.asarray(testbed.normalized_error(pred, p).mean(0))
            print(f"{cls:17s} {shift:11s} {name:14s}", " ".join(f"{err[k]:8.3f}" for k in ns))
    print(f"{'closed form':29s} {'averaging':14s}", " ".join(f"{(d + 1) / k:8.3f}" for k in ns))
    print(f"{'closed form':29s} {'one_step_gd':14s}", " ".join(f"{(d + 1) / (k + d + 1):8.3f}" for k in ns))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
