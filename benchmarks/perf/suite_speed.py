"""The main job against the script it replaces: `testbed bench` versus plain PyTorch, side by side.

Runs, one after another on this machine:
  1. the PyTorch script of the same workload (`torch_suite.py`: every cell of the suite,
     every seed, one model at a time; no tables or plots);
  2. ``testbed bench SUITE`` from an empty results folder and an empty compile cache (cold);
  3. the same with the compile cache warm (results removed): programs and figures copied
     (the same tables: `testbed.report.figure_cache`), then again with figures drawn;
  4. the finished suite again: ``testbed bench``, ``testbed compare``, ``testbed report``.
Prints one table: compile / train / analyses / tables / report / other / total seconds for
each (from the results folder's ``timing.json``: compile is the time cells waited for their
programs, compiled in their own call or on a thread ahead; other is the rest of the whole
command: start-up, the suite's checks, aggregating) and each total as a ratio of the PyTorch
script's.

Run: ``python benchmarks/perf/suite_speed.py [--suite benchmarks/default.toml]`` (needs the
``bench`` extra for PyTorch: ``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def torch_cells(suite_path: Path) -> dict:
    """The suite's cells as the PyTorch script needs them (dims, head, loss kind, optimizer)."""
    from testbed.methods import make_method
    from testbed.suites.spec import load_suite
    from testbed.tasks import make_task

    s = load_suite(suite_path)
    cells = []
    for c in s.cells:
        task, method = make_task(c.task, **dict(c.params)), make_method(c.method.name, **dict(c.method.kwargs))
        opt = dict(c.optimizer.kwargs)
        cells.append({"in_dim": task.in_dim, "head_dim": method.head_dim(task), "ce": method.name != "mse",
                      "lr": float(opt.get("lr", 1e-3)), "weight_decay": float(opt.get("weight_decay", 0.0))})
    tr = dict(s.cells[0].train)
    return {"cells": cells, "seeds": len(s.cells[0].seeds), "steps": tr["steps"], "batch_size": tr["batch_size"],
            "evals": tr["evals"], "eval_size": tr["eval_size"]}


def run_torch(spec: dict) -> dict | None:
    try:
        out = subprocess.run([sys.executable, str(HERE / "torch_suite.py")], input=json.dumps(spec),
                             capture_output=True, text=True, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        print(f"pytorch script failed: {getattr(e, 'stderr', e)}", file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def phases(root: Path, total: float) -> dict[str, float]:
    t = json.loads((root / "timing.json").read_text()) if (root / "timing.json").is_file() else {}
    run, rep = t.get("run", {}), t.get("report", {})
    parts = {"compile": run.get("compile_s", 0.0), "train": run.get("train_s", 0.0),
             "analyses": run.get("analyses_s", 0.0) + run.get("store_s", 0.0),
             "tables": rep.get("read_s", 0.0) + rep.get("tables_s", 0.0),
             "report": rep.get("figures_s", 0.0) + rep.get("html_s", 0.0)}
    return {**parts, "other": max(total - sum(parts.values()), 0.0), "total": total}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--suite", default="benchmarks/default.toml")
    p.add_argument("--json", help="also write the numbers here")
    p.add_argument("--skip-torch", action="store_true")
    args = p.parse_args()
    suite = Path(args.suite).resolve()
    testbed = [sys.executable, "-m", "testbed.cli"]
    work = Path(tempfile.mkdtemp(prefix="suite_speed_"))
    env = {**os.environ, "TESTBED_COMPILE_CACHE": str(work / "cache")}
    rows: dict[str, dict] = {}

    spec = torch_cells(suite)
    th = None if args.skip_torch else run_torch(spec)
    if th is not None:
        rows["pytorch script"] = {"compile": 0.0, "train": th["seconds"], "analyses": 0.0, "tables": 0.0,
                                  "report": 0.0, "other": 0.0, "total": th["seconds"]}
    res = work / "results"
    name = None
    for label, extra in (("testbed cold", {}), ("testbed warm cache", {}),
                         ("testbed warm, figures drawn", {"TESTBED_FIGURE_CACHE": "off"})):
        shutil.rmtree(res, ignore_errors=True)
        total = timed([*testbed, "bench", str(suite), "--results", str(res), "-q"], {**env, **extra})
        name = next(res.iterdir()).name
        rows[label] = phases(res / name, total)
    root = res / name
    for label, cmd in (("finished: bench", [*testbed, "bench", str(suite), "--results", str(res), "-q"]),
                       ("finished: compare", [*testbed, "compare", str(root)]),
                       ("finished: report", [*testbed, "report", str(root)])):
        total = timed(cmd, env)
        rows[label] = {"compile": 0.0, "train": 0.0, "analyses": 0.0, "tables": 0.0, "report": 0.0, "other": total,
                       "total": total}
    base = rows.get("pytorch script", {}).get("total")
    cols = ["compile", "train", "analyses", "tables", "report", "other", "total"]
    print(f"suite {suite.name}: {len(spec['cells'])} cells x {spec['seeds']} seeds x {spec['steps']} steps"
          + (f"; pytorch {th['version']} ({th['threads']} threads)" if th else ""))
    print("| run | " + " | ".join(f"{c} s" for c in cols) + " | / pytorch |")
    print("|---|" + "---:|" * (len(cols) + 1))
    for label, r in rows.items():
        ratio = f"{r['total'] / base:.2f}x" if base else "-"
        print(f"| {label} | " + " | ".join(f"{r[c]:.1f}" for c in cols) + f" | {ratio} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "torch": th}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
