"""Training-batch sampling cost per step, as the engine pays it: 32 seeds on one device.

Compares, side by side in one run, ``task.sample`` (rejection sampling: a
running count (jnp.cumsum) ranks the accepted candidates and one scatter places them) with
the previous form (``jnp.nonzero`` then a gather), and with a bare ``uniform`` draw of
the same batch (the floor: no split, no targets). Both rejection forms return the same
points (checked here).

    python benchmarks/perf/sample_speed.py [--tasks sine_line checkerboard] [--batch 256]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["sine_line", "checkerboard", "radial"])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--reps", type=int, default=300)
    args = p.parse_args()
    os.environ.setdefault("TESTBED_HOST_DEVICES", "1")  # one device: the per-core cost
    import jax
    import jax.numpy as jnp

    import testbed
    from testbed.tasks.task import Batch, candidates_needed

    def previous(task, key, n, split):
        s = task.split(split)
        m = candidates_needed(n, s.rate, rate_floor=1.5e-4)
        low, high = jnp.asarray(s.low, jnp.float32), jnp.asarray(s.high, jnp.float32)
        cand = jax.random.uniform(key, (m, task.dim), jnp.float32, low[None, :], high[None, :])
        ok = s.where(cand)
        count = ok.sum()
        (idx,) = jnp.nonzero(ok, size=n, fill_value=0)
        j = jnp.arange(n)
        raw = cand[jnp.where(j < count, idx, idx[j % jnp.maximum(count, 1)])]
        piece = task.piece_of_raw(raw)
        return Batch(task.domain.encode(raw), task.target_of_raw(raw, piece), piece)

    keys = jax.random.split(jax.random.key(0), args.seeds)

    def per_step_us(draw) -> float:
        def body(i, acc):
            b = jax.vmap(lambda k: draw(jax.random.fold_in(k, i)))(keys)
            return acc + b.x[:, :2].sum() + jnp.nan_to_num(b.y.astype(jnp.float32)).reshape(args.seeds, -1)[:, :2].sum()
        run = jax.jit(lambda: jax.lax.fori_loop(0, args.reps, body, 0.0))
        run().block_until_ready()
        best = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            run().block_until_ready()
            best = min(best, (time.perf_counter() - t0) / args.reps * 1e6)
        return best

    n = args.batch
    print(f"{args.seeds} seeds x batch {n}, one device; microseconds per training step (best of 3)")
    print(f"{'task':14s} {'task.sample':>12s} {'previous':>10s} {'uniform':>9s}  same points")
    for name in args.tasks:
        task = testbed.make_task(name)
        k = jax.random.key(7)
        same = bool(jnp.all(task.sample(k, n, "train").x == previous(task, k, n, "train").x))
        now = per_step_us(lambda k, task=task: task.sample(k, n, "train"))
        old = per_step_us(lambda k, task=task: previous(task, k, n, "train"))
        floor = per_step_us(lambda k, task=task: Batch(jax.random.uniform(k, (n, task.in_dim)),
                                                       jnp.zeros(n), jnp.zeros(n, jnp.int32)))
        print(f"{name:14s} {now:12.1f} {old:10.1f} {floor:9.1f}  {same}")


if __name__ == "__main__":
    main()
