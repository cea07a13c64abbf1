"""Training throughput: testbed.train versus a plain PyTorch loop, and versus the matmul peak.

Measures, side by side in one run:
  * the machine's fp32 matmul peak (best of JAX and NumPy on large square matmuls);
  * testbed.train: a 64-seed sweep of MLP 1-64-64-1, batch 256, Adam, fresh data
    every step (task sine_line), in model-steps per second, with compile time apart;
  * the same training as a plain PyTorch loop, one model at a time, and as a hand-batched
    PyTorch ensemble of all the seeds' models (``torch.baddbmm``) (optional: needs the
    ``bench`` extra, ``pip install -e '.[bench]'``).
Prints both ratios to PyTorch, achieved GFLOP/s and the fraction of peak.

Run: ``make perf`` or ``python benchmarks/perf/train_speed.py [--steps N] [--seeds S]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

WIDTH, BATCH = 64, 256
# Multiply-adds of one forward pass per example: 1x64 + 64x64 + 64x1 weights.
MACS = 1 * WIDTH + WIDTH * WIDTH + WIDTH * 1
FLOPS_PER_MODEL_STEP = 3 * 2 * MACS * BATCH  # forward + backward (2x forward) per update


def matmul_peak(n: int = 2048, reps: int = 10, trials: int = 3) -> dict[str, float]:
    """Best sustained fp32 matmul GFLOP/s over a few trials, through JAX (all local
    devices) and NumPy. On a shared machine this moves by +-20% from run to run, so
    ``main`` measures it before and after the training and divides by the larger."""
    import jax
    import jax.numpy as jnp

    out = {}
    devs = jax.devices()
    a = jax.device_put(jnp.ones((len(devs), n, n), jnp.float32),
                       jax.sharding.NamedSharding(jax.sharding.Mesh(np.array(devs), ("d",)),
                                                  jax.sharding.PartitionSpec("d")))
    f = jax.jit(lambda x: jnp.einsum("dij,djk->dik", x, x))
    f(a).block_until_ready()
    b = np.ones((n, n), np.float32)
    b @ b
    out["jax"] = out["numpy"] = 0.0
    for _ in range(trials):
        t0 = time.perf_counter()
        for _ in range(reps):
            f(a).block_until_ready()
        out["jax"] = max(out["jax"], 2 * n**3 * len(devs) * reps / (time.perf_counter() - t0) / 1e9)
        t0 = time.perf_counter()
        for _ in range(reps):
            b @ b
        out["numpy"] = max(out["numpy"], 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9)
    out["peak"] = max(out.values())
    return out


def bench_testbed(seeds: int, steps: int) -> dict[str, float]:
    """Model-steps per second of one testbed.train call (compile excluded)."""
    import testbed

    model = testbed.MLP(width=WIDTH, depth=2)
    kw = dict(model=model, steps=steps, batch_size=BATCH, seeds=seeds, evals=2, eval_size=256,
              probe_points=16, quiet=True)
    first = testbed.train("sine_line", "mse", **kw)  # compiles
    again = testbed.train("sine_line", "mse", **kw)  # cached program: pure run time
    run_s = again.timing["wall_s"]
    return {"compile_s": first.timing["compile_s"], "run_s": run_s,
            "model_steps_per_s": seeds * steps / run_s, "devices": again.timing["devices"]}


def _torch(threads: int | None):
    """PyTorch, seeded, at ``threads`` threads (None: its default), or None when not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    return torch


def _target(torch, x):
    return torch.where(x < 0, torch.sin(2 * math.pi * x), x)  # sine_line


def _rate(torch, step, steps: int, warmup: int, models: int) -> dict[str, float]:
    """Model-steps per second of ``step`` (training ``models`` models) after a warm-up."""
    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t0
    return {"model_steps_per_s": models * steps / dt, "threads": torch.get_num_threads(), "version": torch.__version__}


def bench_torch(steps: int, threads: int | None = None) -> dict[str, float] | None:
    """Model-steps per second of a plain PyTorch loop training one model at a time."""
    torch = _torch(threads)
    if torch is None:
        return None
    model = torch.nn.Sequential(torch.nn.Linear(1, WIDTH), torch.nn.ReLU(), torch.nn.Linear(WIDTH, WIDTH),
                                torch.nn.ReLU(), torch.nn.Linear(WIDTH, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        x = torch.rand(BATCH, 1) * 2 - 1  # fresh data each step, as testbed does
        loss = ((model(x) - _target(torch, x)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _rate(torch, step, steps, warmup=50, models=1)


def bench_torch_ensemble(models: int, steps: int, threads: int | None = None) -> dict[str, float] | None:
    """Model-steps per second of a hand-batched PyTorch ensemble: ``models`` MLPs as stacked
    weight tensors, trained together with batched products (``torch.baddbmm``), each on its
    own fresh batch: the strongest plain-PyTorch answer to a seed sweep."""
    torch = _torch(threads)
    if torch is None:
        return None

    def param(*shape, fan_in):
        return torch.nn.Parameter(torch.randn(*shape) / math.sqrt(fan_in))

    w1, b1 = param(models, 1, WIDTH, fan_in=1), torch.nn.Parameter(torch.zeros(models, 1, WIDTH))
    w2, b2 = param(models, WIDTH, WIDTH, fan_in=WIDTH), torch.nn.Parameter(torch.zeros(models, 1, WIDTH))
    w3, b3 = param(models, WIDTH, 1, fan_in=WIDTH), torch.nn.Parameter(torch.zeros(models, 1, 1))
    opt = torch.optim.Adam([w1, b1, w2, b2, w3, b3], lr=1e-3)

    def step():
        x = torch.rand(models, BATCH, 1) * 2 - 1  # a fresh batch per model and step
        h = torch.relu(torch.baddbmm(b1, x, w1))
        h = torch.relu(torch.baddbmm(b2, h, w2))
        out = torch.baddbmm(b3, h, w3)
        loss = ((out - _target(torch, x)) ** 2).mean(dim=(1, 2)).sum()  # each model's own mean loss
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _rate(torch, step, steps, warmup=20, models=models)


def bench_torch_clean(steps: int, ensemble: int = 0) -> dict[str, float] | None:
    """The PyTorch baseline in fresh processes (JAX's thread pools out of the way), at 1
    thread and at the default thread count; the faster is reported."""
    import subprocess
    import sys

    best = None
    for threads in (1, 0):
        out = subprocess.run([sys.executable, __file__, "--torch-only", str(steps), "--torch-threads", str(threads),
                              "--torch-ensemble", str(ensemble)], capture_output=True, text=True)
        if out.returncode != 0 or not out.stdout.strip():
            return None
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if res and (best is None or res["model_steps_per_s"] > best["model_steps_per_s"]):
            best = res
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--torch-steps", type=int, default=1000)
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--torch-only", type=int, help=argparse.SUPPRESS)
    p.add_argument("--torch-threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--torch-ensemble", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.torch_only:
        if args.torch_ensemble:
            print(json.dumps(bench_torch_ensemble(args.torch_ensemble, args.torch_only, args.torch_threads or None)))
        else:
            print(json.dumps(bench_torch(args.torch_only, args.torch_threads or None)))
        return

    import testbed  # noqa: F401  (first: sets one host device per core before JAX starts)

    before = matmul_peak()
    tb = bench_testbed(args.seeds, args.steps)
    after = matmul_peak()
    peak = max(before, after, key=lambda p: p["peak"])
    th = bench_torch_clean(args.torch_steps)
    te = bench_torch_clean(max(args.torch_steps // 4, 50), ensemble=args.seeds)
    gflops = tb["model_steps_per_s"] * FLOPS_PER_MODEL_STEP / 1e9
    print(f"matmul peak: {peak['peak']:.1f} GFLOP/s (jax {peak['jax']:.1f}, numpy {peak['numpy']:.1f}; "
          f"best of before {before['peak']:.1f} and after {after['peak']:.1f} the training)")
    print(f"testbed.train: {tb['model_steps_per_s']:,.0f} model-steps/s over {tb['devices']} device(s); "
          f"{args.seeds} seeds x {args.steps} steps in {tb['run_s']:.2f} s; compile {tb['compile_s']:.2f} s")
    print(f"  achieved {gflops:.1f} GFLOP/s = {gflops / peak['peak']:.0%} of the matmul peak "
          f"({FLOPS_PER_MODEL_STEP / 1e6:.2f} MFLOP per model-step)")
    result = {"peak": peak, "peak_before": before, "peak_after": after, "testbed": tb, "gflops": gflops, "fraction_of_peak": gflops / peak["peak"]}
    if th is None:
        print("pytorch: not installed (pip install -e '.[bench]'); no ratio")
    else:
        ratio = tb["model_steps_per_s"] / th["model_steps_per_s"]
        print(f"pytorch {th['version']} loop, one model at a time ({th['threads']} threads): "
              f"{th['model_steps_per_s']:,.0f} model-steps/s")
        print(f"  testbed / pytorch = {ratio:.1f}x")
        result.update(torch=th, ratio=ratio)
    if te is not None:
        ratio_e = tb["model_steps_per_s"] / te["model_steps_per_s"]
        print(f"pytorch hand-batched ensemble of {args.seeds} models (torch.baddbmm, {te['threads']} threads): "
              f"{te['model_steps_per_s']:,.0f} model-steps/s")
        print(f"  testbed / ensemble = {ratio_e:.1f}x")
        result.update(torch_ensemble=te, ratio_ensemble=ratio_e)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
