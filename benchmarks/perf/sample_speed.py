"""Training-batch sampling cost per step, as the engine pays it: 32 seeds on one device.

Compares, side by side in one run, ``task.sample`` (rejection sampling: a
running count (jnp.cumsum) ranks the accepted candidates and one scatter places them) with
the form before it (an associative scan ranks them), the one before that (``jnp.nonzero``
then a gather), and a bare ``uniform`` draw of the same batch (the floor: no split, no
targets); ``task.sample`` with the step's key derived in the same fusion as the draw (the
engine fences the key off with an optimization barrier: XLA otherwise recomputes the key's
threefry hash for every candidate); and the seconds to compile a draw, with cumsum and with
the scan. All rejection forms return the same points (checked here).

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

    def scanned(task, key, n, split):  # task.sample as it was before jnp.cumsum: an associative scan ranks
        s = task.split(split)
        m = candidates_needed(n, s.rate, rate_floor=1.5e-4)
        low, high = jnp.asarray(s.low, jnp.float32), jnp.asarray(s.high, jnp.float32)
        cand = jax.random.uniform(key, (m, task.dim), jnp.float32, low[None, :], high[None, :])
        ok = s.where(cand)
        rank = jax.lax.associative_scan(jnp.add, ok.astype(jnp.int32)) - 1
        count = rank[-1] + 1
        slot = jnp.where(ok & (rank < n), rank, n)
        out = jnp.zeros((n, task.dim), jnp.float32).at[slot].set(cand, mode="drop")
        j = jnp.arange(n)
        reused = jnp.where(count > 0, out[j % jnp.maximum(count, 1)], cand[j % m])
        raw = jnp.where((j < count)[:, None], out, reused)
        piece = task.piece_of_raw(raw)
        return Batch(task.domain.encode(raw), task.target_of_raw(raw, piece), piece)

    keys = jax.random.split(jax.random.key(0), args.seeds)

    def compile_s(draw) -> float:
        """Seconds to compile a program drawing one batch per seed (best of 3, fresh each time)."""
        best = float("inf")
        for _ in range(3):
            fn = jax.jit(jax.vmap(lambda k: draw(k)))  # a new function: nothing cached
            t0 = time.perf_counter()
            fn.lower(keys).compile()
            best = min(best, time.perf_counter() - t0)
        return best

    def per_step_us(draw, fence: bool = True) -> float:
        """Per step, the key folded in as the engine does (behind an optimization barrier unless
        ``fence`` is False)."""
        def step_key(k, i):
            k = jax.random.fold_in(k, i)
            return jax.lax.optimization_barrier(k) if fence else k

        def body(i, acc):
            b = jax.vmap(lambda k: draw(step_key(k, i)))(keys)
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
    print(f"{args.seeds} seeds x batch {n}, one device; microseconds per training step (best of 3), and "
          "seconds to compile one draw (best of 3)")
    print(f"{'task':14s} {'task.sample':>12s} {'key fused':>10s} {'assoc scan':>11s} {'nonzero':>9s} {'uniform':>9s} "
          f"{'compile s':>10s} {'assoc scan':>11s}  same points")
    for name in args.tasks:
        task = testbed.make_task(name)
        k = jax.random.key(7)
        x = task.sample(k, n, "train").x
        same = bool(jnp.all(x == previous(task, k, n, "train").x) & jnp.all(x == scanned(task, k, n, "train").x))
        forms = {f: (lambda k, task=task, f=f: f(task, k, n, "train")) for f in (previous, scanned)}
        now = per_step_us(lambda k, task=task: task.sample(k, n, "train"))
        fused = per_step_us(lambda k, task=task: task.sample(k, n, "train"), fence=False)
        scan, old = per_step_us(forms[scanned]), per_step_us(forms[previous])
        floor = per_step_us(lambda k, task=task: Batch(jax.random.uniform(k, (n, task.in_dim)),
                                                       jnp.zeros(n), jnp.zeros(n, jnp.int32)))
        c_now, c_scan = compile_s(lambda k, task=task: task._sample(k, n, "train")), compile_s(forms[scanned])
        print(f"{name:14s} {now:12.1f} {fused:10.1f} {scan:11.1f} {old:9.1f} {floor:9.1f} {c_now:10.3f} {c_scan:11.3f}  {same}")


if __name__ == "__main__":
    main()
