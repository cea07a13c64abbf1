"""JAX's random-bit hash on CPU: its own lowering (a while loop) against the unrolled one testbed uses.

Side by side in one process, for each lowering in turn: the seconds to compile, and the
microseconds to run, a few vmapped random draws (the shapes the engine draws: a model's
initialization, a training batch's candidates), then one default-suite training program
(`testbed.training.engine.prepare`, init and chunk). The bits are the same either way
(tests/test_platform.py); this measures what the choice costs.

    TESTBED_COMPILE_CACHE=off python benchmarks/perf/threefry_speed.py [--task checkerboard] [--reps 3]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="checkerboard")
    p.add_argument("--reps", type=int, default=3, help="compiles of each program (the best is kept)")
    args = p.parse_args()
    os.environ.setdefault("TESTBED_COMPILE_CACHE", "off")
    import jax
    import jax.numpy as jnp
    from jax._src.interpreters import mlir
    from jax._src.random import threefry2x32 as tf

    import testbed
    from testbed.training import engine

    lowerings = {"jax (while loop)": tf._threefry2x32_cpu_lowering_rule,
                 "unrolled (testbed)": tf._threefry2x32_lowering_rule}
    keys = jnp.stack([jax.random.key(s) for s in range(4)])
    draws = {
        "bits 64x64": lambda k: jax.random.bits(k, (64, 64)),
        "normal 3x 64x64": lambda k: [jax.random.normal(jax.random.fold_in(k, i), (64, 64)) for i in range(3)],
        "uniform 4096x2": lambda k: jax.random.uniform(k, (4096, 2)),
    }
    rows: dict[str, dict[str, tuple[float, float]]] = {}
    for name, rule in lowerings.items():
        mlir.register_lowering(tf.threefry2x32_p, rule, platform="cpu")
        for label, f in draws.items():
            best_c, best_r = float("inf"), float("inf")
            for _ in range(args.reps):
                lowered = jax.jit(jax.vmap(f)).trace(keys).lower()
                t0 = time.perf_counter()
                c = lowered.compile()
                best_c = min(best_c, time.perf_counter() - t0)
                jax.block_until_ready(c(keys))
                t0 = time.perf_counter()
                for _ in range(50):
                    out = c(keys)
                jax.block_until_ready(out)
                best_r = min(best_r, (time.perf_counter() - t0) / 50)
            rows.setdefault(label, {})[name] = (best_c, best_r * 1e6)
        best = float("inf")
        for rep in range(args.reps):  # a fresh program each time: the static config differs by steps
            engine.release_programs()
            t0 = time.perf_counter()
            engine.prepare(args.task, "mse", testbed.MLP(width=64, depth=2), steps=2000 + rep, batch_size=128,
                           seeds=4, evals=30, eval_size=512)
            best = min(best, time.perf_counter() - t0)
        rows.setdefault(f"training program ({args.task})", {})[name] = (best, float("nan"))
    names = list(lowerings)
    print("| program | " + " | ".join(f"{n}: compile s, run us" for n in names) + " | compile ratio |")
    print("|---|" + "---|" * (len(names) + 1))
    for label, r in rows.items():
        cells = [f"{r[n][0]:.2f}, {r[n][1]:.0f}" if r[n][1] == r[n][1] else f"{r[n][0]:.2f}, -" for n in names]
        print(f"| {label} | " + " | ".join(cells) + f" | {r[names[1]][0] / r[names[0]][0]:.2f} |")


if __name__ == "__main__":
    main()
