"""Against a running Slurm (started by tests/cluster/slurm.sh, `make test-cluster`): a suite runs
through `--executor slurm` (one job array), one running job is cancelled with scancel mid-suite,
the suite is run again, and its results must equal an in-process run of the same suite."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd

from testbed.suites.cluster import SubmititExecutor
from testbed.suites.runner import run_suite
from testbed.suites.spec import load_suite

SUITE = """
name = "cluster"
seeds = 2

[train]
steps = 60000
batch_size = 256
evals = 3
eval_size = 64
probe_points = 16

[grid]
tasks = ["sine_line", "two_slopes"]
methods = ["mse", "ce"]
models = [{ name = "mlp", width = 64, depth = 2 }]
"""


def squeue_running() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def main() -> int:
    import logging

    logging.getLogger("submitit").setLevel(logging.ERROR)  # "sacct failed": this Slurm keeps no accounting
    tmp = Path(tempfile.mkdtemp(prefix="testbed-cluster-"))
    path = tmp / "cluster.toml"
    path.write_text(textwrap.dedent(SUITE))
    suite = load_suite(path)
    ex = SubmititExecutor("slurm", max_jobs=2, time_min=10, poll_s=0.5)
    out: dict = {}
    t0 = time.time()
    th = threading.Thread(target=lambda: out.update(run=run_suite(suite, tmp / "slurm", executor=ex, quiet=True)))
    th.start()
    cancelled = None
    while th.is_alive() and cancelled is None and time.time() - t0 < 300:
        running = squeue_running()
        if running:
            time.sleep(3.0)  # let it start training (imports and compiling take ~3 s)
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], check=True)
            print(f"scancel {cancelled} (running: {running})", flush=True)
        time.sleep(0.2)
    th.join()
    first = out["run"]
    print(f"first run: {len(first.ran)} cells finished, {len(first.failed)} lost "
          f"({time.time() - t0:.1f} s)", flush=True)
    for key, why in first.failed.items():
        print(f"  lost {key}: {why[:160]}")
    assert cancelled is not None, "no job was seen running"
    assert first.failed, "the cancelled job's cells should not have finished"

    t1 = time.time()
    second = run_suite(suite, tmp / "slurm", executor=SubmititExecutor("slurm", max_jobs=2, time_min=10), quiet=True)
    print(f"second run: redid {len(second.ran)} cells, skipped {len(second.skipped)} ({time.time() - t1:.1f} s)")
    assert sorted(second.ran) == sorted(first.failed) and not second.failed

    run_suite(suite, tmp / "here", quiet=True)
    a = pd.read_parquet(tmp / "slurm" / "cluster" / "results.parquet")
    b = pd.read_parquet(tmp / "here" / "cluster" / "results.parquet")
    assert not a.duplicated().any()
    pd.testing.assert_frame_equal(a, b)
    print(f"results through Slurm equal the in-process run: {len(a)} rows, {a['cell'].nunique()} cells")
    print("test-cluster: PASS")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
