"""What a suite's training programs cost to compile, part by part: would sharing them pay?

Each cell of a suite compiles one chunk program (`testbed.training.engine`): a scan over
training steps that samples the task's batch, takes the method's gradient step and, at the
evaluation steps, evaluates. A cold suite spends most of its time there. The way in that
notes on issue 14 kept naming is to compile the gradient step once for every cell with the
same model, layer widths, method and optimizer, with the data drawn by a per-task program
and the evaluation as a per-cell program. This measures what that could save before anyone
builds it.

For every distinct program of the suite (``--suite``, default the main job's), in a fresh
process per variant, with the compile cache off and the tasks, evaluation sets
and init programs built first (not counted), it compiles the chunk program four ways:

- ``whole``: as the engine compiles it;
- ``no sampler``: ``Task.sample`` replaced by a draw of the same shapes (no rejection, no
  targets): what is left when the data come from elsewhere;
- ``no evaluation``: the evaluation branch replaced by the identity;
- ``step only``: both: the part that sharing would compile once per group.

and prints, per variant, the seconds spent in `engine.prepare` (tracing, lowering and
XLA) and XLA's share for the chunk program. The estimate for sharing adds up the step
once per group (the mean of its cells), each task's sampler once (``whole - no sampler``)
and each cell's evaluation (``whole - no evaluation``), for both measures. The stand-ins
change what XLA fuses, so the parts are estimates, not a build; nothing runs. One run on a
busy machine moves the prepare totals by ~10 s: read the XLA line, or run it twice.

Measured 2026-12-08 on the 2-core machine (default suite, 20 programs, 12 groups): XLA
29.5 s now, ~19.4 s shared (~10 s less); prepare 42.5 s now, ~27 s shared (~15 s less).
The cold suite spends ~200 s of CPU in all, so sharing alone would not bring it near 0.4x
of the PyTorch script.

    python benchmarks/perf/compile_parts.py [--suite benchmarks/default.toml]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("whole", "no sampler", "no evaluation", "step only")
ROOT = Path(__file__).resolve().parents[2]


def measure(suite: str, variant: str) -> list[dict]:
    """In this process: compile every distinct program of ``suite`` as ``variant``; one row each."""
    import jax
    from jax._src import compiler

    from testbed.suites.runner import cell_call, program_key
    from testbed.suites.spec import load_suite
    from testbed.tasks.task import Batch, Task
    from testbed.training import engine

    xla: dict[str, float] = {}
    backend_compile = compiler.backend_compile_and_load

    def timed(backend, module, *args, **kwargs):
        t0 = time.perf_counter()
        out = backend_compile(backend, module, *args, **kwargs)
        name = str(module.operation.attributes["sym_name"]).strip('"')
        xla[name] = xla.get(name, 0.0) + time.perf_counter() - t0
        return out

    compiler.backend_compile_and_load = timed
    cells, seen = [], set()
    for cell in load_suite(suite, build=False).cells:
        if cell.kind == "rows" and program_key(cell) not in seen:
            seen.add(program_key(cell))
            cells.append(cell)
    calls = [cell_call(c) for c in cells]
    # tasks, evaluation sets (a plan holds them) and init programs first: every variant has them
    plans = [engine._plan(*args, **{**engine._train_defaults(), **kwargs}) for args, kwargs in calls]
    for plan in plans:
        engine._init_program(plan.st, plan.keys, plan.hp, plan.p0, plan.by_run)
    if variant in ("no sampler", "step only"):
        sample = Task.sample

        def stand_in(self, key, n, split="train"):
            shapes = jax.eval_shape(lambda k: sample(self, k, n, split), key)
            u = jax.random.uniform(key, (n,))
            return Batch(*(jax.numpy.broadcast_to(u.reshape((n,) + (1,) * (len(s.shape) - 1)), s.shape).astype(s.dtype)
                           for s in shapes))

        Task.sample = stand_in
    if variant in ("no evaluation", "step only"):
        cond = jax.lax.cond

        def no_evaluation(pred, true_fn, false_fn, *operands, **kw):
            if getattr(true_fn, "__name__", "") == "evaluate" and true_fn.__module__ == engine.__name__:
                return false_fn(*operands)
            return cond(pred, true_fn, false_fn, *operands, **kw)

        jax.lax.cond = no_evaluation
    rows = []
    for cell, (args, kwargs), plan in zip(cells, calls, plans, strict=True):
        xla.clear()
        t0 = time.perf_counter()
        engine.prepare(*args, **kwargs)
        st = plan.st
        in_dim, out_dim = engine._dims(st)
        # what a shared step could not differ in: the model and its widths, the method with its
        # options, the optimizer and its schedule, the batch and the runs vmapped
        group = (st.model, in_dim, out_dim, st.method.name, st.method.hparams, st.method.tx, st.optimizer, st.steps,
                 st.batch_size, len(plan.keys))
        rows.append({"cell": f"{cell.task}/{cell.labels.get('method', cell.method.name)}", "task": cell.task,
                     "group": repr(group), "prepare_s": time.perf_counter() - t0,
                     "chunk_xla_s": xla.get("jit_chunk_run", 0.0)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default=str(ROOT / "benchmarks" / "default.toml"))
    p.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant, in this process
    p.add_argument("--json", help="write every row here")
    args = p.parse_args()
    if args.variant is not None:
        os.environ["TESTBED_COMPILE_CACHE"] = "off"
        print(json.dumps(measure(args.suite, args.variant)))
        return
    env = {**os.environ, "TESTBED_COMPILE_CACHE": "off"}
    results: dict[str, list[dict]] = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, "--suite", args.suite, "--variant", variant],
                             env=env, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
        total = sum(r["prepare_s"] for r in results[variant])
        print(f"{variant:>14}: {len(results[variant])} programs, prepare {total:6.1f} s, "
              f"chunk XLA {sum(r['chunk_xla_s'] for r in results[variant]):6.1f} s", flush=True)
    whole, no_sampler, no_eval, step = (results[v] for v in VARIANTS)
    for what, col in (("prepare (trace, lower, XLA)", "prepare_s"), ("the chunk program's XLA", "chunk_xla_s")):
        groups: dict[str, list[float]] = {}
        for r in step:
            groups.setdefault(r["group"], []).append(r[col])
        sampler: dict[str, list[float]] = {}
        for w, n in zip(whole, no_sampler, strict=True):
            sampler.setdefault(w["task"], []).append(w[col] - n[col])
        evaluation = sum(w[col] - n[col] for w, n in zip(whole, no_eval, strict=True))
        shared = (sum(sum(v) / len(v) for v in groups.values()) + sum(sum(v) / len(v) for v in sampler.values())
                  + evaluation)
        now = sum(r[col] for r in whole)
        print(f"\n{what}: now {len(whole)} programs, {now:.1f} s. Steps shared ({len(groups)} groups), samplers "
              f"per task ({len(sampler)}), evaluation per cell: ~{shared:.1f} s ({shared / now:.2f}x), "
              f"~{now - shared:.1f} s less.")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
