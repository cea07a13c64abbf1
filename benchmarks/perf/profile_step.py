"""Where a training step's time goes: XLA:CPU's own per-op times for testbed.train.

Runs the speed benchmark's model (MLP 1-64-64-1, batch 256, Adam, sine_line, fresh
data) on ONE host device pinned to ONE core, under the JAX profiler with XLA:CPU's
per-thunk trace events, and prints microseconds per training step for each op of the
compiled step (top ``--top``), grouped into the matrix products (XLA's YNNPACK
fusions and dots) and everything else. It also measures the same core's fp32 matmul
peak (``train_speed.matmul_peak``, through JAX) in the same process, so the products' own GFLOP/s
and the bound they put on the whole step can be read against it:

    bound = step FLOPs / time of the products alone

A step does the products and more, so its fraction of the peak is below the bound's.

    python benchmarks/perf/profile_step.py [--seeds 32] [--steps 400] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import tempfile

from train_speed import FLOPS_PER_MODEL_STEP, matmul_peak  # same folder; imports no JAX


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    # Before JAX starts: one device, one core, per-op trace events.
    os.environ["TESTBED_HOST_DEVICES"] = "1"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_enable_xprof_traceme=true").strip()
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import jax
    from jax._src.lib import _profile_data

    import testbed

    kw = dict(model=testbed.MLP(width=64, depth=2), steps=args.steps, batch_size=256, seeds=args.seeds,
              evals=2, eval_size=256, probe_points=16, quiet=True)
    testbed.train("sine_line", "mse", **kw)  # compile
    trace_dir = tempfile.mkdtemp(prefix="testbed_profile_")
    with jax.profiler.trace(trace_dir):
        r = testbed.train("sine_line", "mse", **kw)
    step_us = r.timing["run_s"] / args.steps * 1e6

    # JAX's number: one device pinned to one core. (NumPy's BLAS threads started with
    # the import of train_speed, before the pinning, so they may use every core.)
    peak = matmul_peak()["jax"]

    tot, cnt = collections.Counter(), collections.Counter()
    path = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0]
    for plane in _profile_data.ProfileData.from_file(path).planes:
        for line in plane.lines:
            for ev in line.events:
                tot[ev.name] += ev.duration_ns
                cnt[ev.name] += 1
    # Per-op events of the step: those that run about once per step (not the Python
    # frames, the executor's own spans or the while loop that holds them).
    ops = {k: v / args.steps / 1e3 for k, v in tot.items()
           if abs(cnt[k] / args.steps - 1) < 0.2 and not k.startswith(("$", "while", "ThunkExecutor"))}
    if not ops:
        raise SystemExit("no per-op trace events: JAX was started before this script could set XLA_FLAGS "
                         "(run the script itself, not an import of it)")
    products = {k: v for k, v in ops.items() if k.startswith(("ynn_fusion", "dot"))}
    prod_us = sum(products.values())
    flop = args.seeds * FLOPS_PER_MODEL_STEP
    print(f"{args.seeds} seeds on one core: {step_us:,.0f} us per step "
          f"({args.seeds / step_us * 1e6:,.0f} model-steps/s, {flop / step_us / 1e3:.1f} GFLOP/s); "
          f"this core's matmul peak {peak:.1f} GFLOP/s")
    print(f"{'us/step':>9} {'share':>6}  op")
    for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]:
        print(f"{v:9.1f} {v / step_us:6.1%}  {k}{'  (product)' if k in products else ''}")
    print(f"products: {prod_us:,.0f} us ({prod_us / step_us:.0%} of the step), "
          f"other ops: {sum(ops.values()) - prod_us:,.0f} us")
    print(f"step: {flop / step_us / 1e3 / peak:.0%} of peak; bound from the products alone: "
          f"{flop / prod_us / 1e3:.1f} GFLOP/s = {flop / prod_us / 1e3 / peak:.0%} of peak")


if __name__ == "__main__":
    main()
