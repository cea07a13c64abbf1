"""Issue 16's targets on this machine: a small transformer trained on linear-regression prompts
(d = 5, 20 examples) against the baselines on the same prompts, and one linear self-attention
layer against the one-step-GD optimum.

    python benchmarks/studies/icl_transformer.py [steps] [width] [depth] [curriculum_every]   (~80 s on 2 cores)
"""

from __future__ import annotations

import sys
import time

import pandas as pd

import testbed
from testbed.models.sequence import LinearAttention, Transformer
from testbed.training.prompt_train import train_prompts

D, K = 5, 20


def main(steps: int = 4000, width: int = 64, depth: int = 2, curriculum_every: int = 0) -> None:
    task = testbed.make_prompt_task("linear", d=D, points=K)
    t0 = time.perf_counter()
    lsa = train_prompts(task, LinearAttention(max_points=K), steps=3000, batch_size=128, seeds=2, loss_at="last",
                        optimizer=testbed.Optimizer(name="adam", lr=3e-3), evals=1, eval_prompts=1024)
    h = lsa.history
    print(f"linear self-attention, 3000 steps, {time.perf_counter() - t0:.1f} s: error at N={K} "
          f"{h[h.n == K]['error'].round(4).tolist()} (one-step-GD optimum {(D + 1) / (K + D + 1):.4f})")
    t0 = time.perf_counter()
    r = train_prompts(task, Transformer(width=width, depth=depth, heads=4, max_points=K + 1), steps=steps,
                      batch_size=64, seeds=1, optimizer=testbed.Optimizer(name="adam", lr=1e-3), evals=4,
                      eval_prompts=512, quiet=False,
                      curriculum=testbed.Curriculum(start_d=2, start_points=10, every=curriculum_every)
                      if curriculum_every else None)
    h = r.history
    model = h[h.step == steps].groupby("n")["error"].mean().rename("transformer")
    base = r.baselines.pivot_table(index="n", columns="baseline", values="error")
    print(f"transformer width {width} depth {depth}, {steps} steps of 64 prompts, {time.perf_counter() - t0:.1f} s")
    print(pd.concat([model, base], axis=1).loc[[1, 2, 5, 10, 15, 20]].round(3).to_string())
    c = r.closest[r.closest["n"].isin([1, 2, 5, 10, 20])].pivot_table(index="n", columns="baseline", values="fraction")
    print("which baseline the transformer's predictions are closest to (fraction of prompts):")
    print(c.round(2).to_string())


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:5]))
