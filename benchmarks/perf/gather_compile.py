"""Compiling one draw of points from a list: JAX's plain ``points[randint(key)]`` against testbed's.

XLA:CPU fuses the code computing gather indices into the gather; with the random bits as
straight-line code (what testbed uses, `testbed.core.platform.unrolled_threefry`) and a
power-of-two number of points its gather emitter then compiles for seconds.
`testbed.tasks.task.draw_indices` sends those indices through a reduction first. Side by
side in one process, for lists of ``--sizes`` random points and for each integer task's
``train`` split: the seconds XLA:CPU takes to compile a draw of ``n`` points written both
ways (the best of ``--reps``), and whether both draw the same points.

    python benchmarks/perf/gather_compile.py [--n 128 8192] [--sizes 255 256 257 512] [--reps 2]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[128, 8192])
    p.add_argument("--sizes", type=int, nargs="+", default=[255, 256, 257, 512])
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    os.environ.setdefault("TESTBED_COMPILE_CACHE", "off")
    import jax
    import jax.numpy as jnp
    import numpy as np

    import testbed
    from testbed.core.platform import unrolled_threefry
    from testbed.tasks.task import draw_indices

    unrolled_threefry()
    key = jax.random.key(0)

    def compile_s(fn) -> tuple[float, np.ndarray]:
        best = float("inf")
        for _ in range(args.reps):
            jax.clear_caches()
            lowered = jax.jit(fn).lower(key)
            t0 = time.perf_counter()
            compiled = lowered.compile()
            best = min(best, time.perf_counter() - t0)
        return best, np.asarray(compiled(key))

    lists = {f"{m} random points": jnp.asarray(np.random.default_rng(0).random((m, 1)), jnp.float32)
             for m in args.sizes}
    for name in testbed.list_tasks():
        task = testbed.make_task(name)
        if task.domain.kind == "integers":
            pts = task.split("train").points
            lists[f"{name} train ({len(pts)} points)"] = jnp.asarray(pts, jnp.float32)
    print("| points | n | plain s | testbed s | testbed / plain | same points |")
    print("|---|---:|---:|---:|---:|---|")
    for label, pts in lists.items():
        m = pts.shape[0]
        for n in args.n:
            plain, a = compile_s(lambda k, pts=pts, n=n, m=m: pts[jax.random.randint(k, (n,), 0, m)])
            ours, b = compile_s(lambda k, pts=pts, n=n, m=m: pts[draw_indices(k, n, m)])
            print(f"| {label} | {n} | {plain:.2f} | {ours:.2f} | {ours / plain:.2f} | {np.array_equal(a, b)} |",
                  flush=True)


if __name__ == "__main__":
    main()
