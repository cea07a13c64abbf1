"""Faults a suite must survive, each checked against an uninterrupted run of the same suite:

- kills: SIGKILL at a random moment of `testbed bench` (the driver in-process; the driver of
  local submitit jobs, whose jobs then run on as orphans beside the re-run; or one worker
  job), then a re-run: the final results.parquet must equal the uninterrupted run's, with no
  partial or duplicate rows and every cell's checksums intact;
- concurrent: two `testbed bench` on one suite folder at once: one stops with the lock's
  message (exit 2), the other finishes, and the results equal the reference;
- disk full: the results folder on a small tmpfs (needs root for `mount`): the run stops with a
  clear error naming the folder, the finished cells stay finished, and after the disk grows
  the next run continues and ends equal to the reference.

    python benchmarks/reliability/faults.py [kills=20] [concurrent=5]      (~6 min on 2 cores)

Prints one table of what was tried and what was lost.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd

from testbed.suites.store import SuiteStore

SUITE = """
name = "faults"
seeds = 2

[train]
steps = 1500
batch_size = 64
evals = 4
eval_size = 128
probe_points = 16

[grid]
tasks = ["sine_line", "two_slopes", "step"]
methods = ["mse", "ce"]
models = [{ name = "mlp", width = 16, depth = 1 }]
"""

BIN = [sys.executable, "-m", "testbed.cli"]


def bench(suite: Path, results: Path, *extra: str) -> list[str]:
    return [*BIN, "bench", str(suite), "--results", str(results), "--no-report", "-q", *extra]


def results_of(results: Path) -> pd.DataFrame:
    return pd.read_parquet(results / "faults" / "results.parquet")


def check(results: Path, reference: pd.DataFrame) -> dict:
    """Compare a finished folder with the reference: rows lost, duplicated or different."""
    store = SuiteStore(results / "faults")
    got = results_of(results)
    key = ["cell", "run", "step", "split", "piece", "metric"]
    dup = int(got.duplicated(key).sum())
    merged = reference.merge(got, on=key, how="left", suffixes=("", "_got"), indicator=True)
    lost = int((merged["_merge"] != "both").sum())
    differ = int((merged["value"] != merged["value_got"]).sum()) - lost
    extra = len(got) - (len(reference) - lost) - dup
    bad = [k for k in store.done_keys() if store.verify_cell(k) is not None]
    equal = dup == 0 and lost == 0 and differ == 0 and extra == 0 and not bad
    if equal:
        pd.testing.assert_frame_equal(got, reference)
    return {"equal": equal, "lost": lost, "duplicated": dup, "different": differ, "extra": extra, "bad_cells": bad}


def descendants(pid: int) -> list[int]:
    out = []
    for f in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = [int(c) for c in f.read_text().split()]
        except OSError:
            continue
        for c in kids:
            out += [c, *descendants(c)]
    return out


def is_worker(pid: int) -> bool:
    try:
        return b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill(pid: int, t0: float) -> float | None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return None
    return time.time() - t0


def kill_trial(kind: str, suite: Path, work: Path, reference: pd.DataFrame, span: float, rng: random.Random) -> dict:
    """One kill and re-run; ``kind``: driver (in-process), jobs-driver or jobs-worker (local submitit)."""
    results = work / f"kill-{kind}-{rng.randrange(10**9)}"
    extra = () if kind == "driver" else ("--executor", "local", "--max-jobs", "2")
    proc = subprocess.Popen(bench(suite, results, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    t0 = time.time()
    killed_at = None
    if kind == "jobs-worker":  # a job's own Python process, as the OOM killer or a lost node would
        deadline = t0 + 120
        while time.time() < deadline and proc.poll() is None and killed_at is None:
            if any(is_worker(p) for p in descendants(proc.pid)):
                time.sleep(rng.uniform(0.0, 2.0))
                live = [p for p in descendants(proc.pid) if is_worker(p)]
                if live:
                    killed_at = _kill(rng.choice(live), t0)
            time.sleep(0.02)
    else:
        time.sleep(rng.uniform(0.05, 0.9) * span)
        if proc.poll() is None:
            killed_at = _kill(proc.pid, t0)
    proc.wait()
    done_at_kill = len(list((results / "faults").glob("*/DONE")))
    rerun = subprocess.run(bench(suite, results), capture_output=True, text=True)
    kill_group(proc.pid)  # orphaned jobs of a killed driver ran beside the re-run; stop what is left
    if rerun.returncode != 0:
        return {"kind": kind, "killed": killed_at is not None, "at_s": killed_at, "done_at_kill": done_at_kill,
                "equal": False, "error": rerun.stderr[-400:]}
    out = {"kind": kind, "killed": killed_at is not None, "at_s": killed_at, "done_at_kill": done_at_kill,
           "exit": proc.returncode, **check(results, reference)}
    shutil.rmtree(results, ignore_errors=True)
    return out


def concurrent_trial(suite: Path, work: Path, reference: pd.DataFrame, i: int) -> dict:
    results = work / f"concurrent-{i}"
    a = subprocess.Popen(bench(suite, results), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    b = subprocess.Popen(bench(suite, results), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = [(p.communicate(), p.returncode) for p in (a, b)]
    outs = [(code, out) for out, code in outs]
    codes = sorted(c for c, _ in outs)
    refused = [err for c, (_, err) in outs if c == 2]
    message = next((ln for ln in refused[0].splitlines() if "being written" in ln), "") if refused else ""
    out = {"codes": codes, "collided": codes == [0, 2], "message": message.strip()[:140],
           **check(results, reference)}
    shutil.rmtree(results, ignore_errors=True)
    return out


def disk_full_trial(suite: Path, work: Path, reference: pd.DataFrame) -> dict:
    mnt = work / "small-disk"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        return {"skipped": f"cannot mount a tmpfs here ({getattr(e, 'stderr', b'') or e}); needs root"}
    try:
        first = subprocess.run(bench(suite, mnt), capture_output=True, text=True)
        store = SuiteStore(mnt / "faults")
        done = store.done_keys()
        intact = all(store.verify_cell(k) is None for k in done)
        message = next((ln for ln in first.stderr.splitlines() if "error:" in ln), first.stderr[-200:])
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        second = subprocess.run(bench(suite, mnt), capture_output=True, text=True)
        result = check(mnt, reference) if second.returncode == 0 else {"equal": False, "error": second.stderr[-300:]}
        return {"first_exit": first.returncode, "message": message.strip()[:200], "done_when_full": len(done),
                "finished_cells_intact": intact, "second_exit": second.returncode, **result}
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def main(kills: int = 20, concurrent: int = 5) -> int:
    work = Path(tempfile.mkdtemp(prefix="testbed-faults-"))
    suite = work / "faults.toml"
    suite.write_text(textwrap.dedent(SUITE))
    t0 = time.time()
    subprocess.run(bench(suite, work / "warm"), check=True, capture_output=True)  # fills the compile cache
    t_ref = time.time()
    subprocess.run(bench(suite, work / "reference"), check=True, capture_output=True)
    span = time.time() - t_ref
    t_jobs = time.time()
    subprocess.run(bench(suite, work / "jobs", "--executor", "local", "--max-jobs", "2"), check=True,
                   capture_output=True)
    spans = {"driver": span, "jobs-driver": time.time() - t_jobs, "jobs-worker": 0.0}
    reference = results_of(work / "reference")
    print(f"reference: {len(reference)} rows, {reference['cell'].nunique()} cells, {span:.1f} s a run in-process, "
          f"{spans['jobs-driver']:.1f} s as local jobs (warm compile cache)", flush=True)

    rng = random.Random(0)
    kinds = ["driver", "jobs-driver", "jobs-worker"]
    trials = []
    for i in range(kills):
        kind = kinds[i % 3]
        for _ in range(5):  # a run that finished before its kill moment is tried again: every trial kills
            t = kill_trial(kind, suite, work, reference, spans[kind], rng)
            if t["killed"]:
                break
        trials.append(t)
        print(f"  kill {i + 1:2d} {t['kind']:<11} at {t['at_s'] or 0:5.1f} s, {t['done_at_kill']} cells done -> "
              f"re-run equal: {t['equal']}" + ("" if t["killed"] else " (finished before the kill)"), flush=True)
    kt = pd.DataFrame(trials)
    conc = [concurrent_trial(suite, work, reference, i) for i in range(concurrent)]
    full = disk_full_trial(suite, work, reference)

    print("\n| fault | tried | killed mid-run | re-runs equal | rows lost | duplicate rows | cells failing checksum |")
    print("|---|---|---|---|---|---|---|")
    for kind, g in kt.groupby("kind", sort=False):
        print(f"| SIGKILL {kind} | {len(g)} | {int(g['killed'].sum())} | {int(g['equal'].sum())} | "
              f"{int(g.get('lost', pd.Series([0])).fillna(0).sum())} | {int(g.get('duplicated', pd.Series([0])).fillna(0).sum())} | "
              f"{sum(len(b) for b in g.get('bad_cells', pd.Series([[]])) if isinstance(b, list))} |")
    print(f"| two writers at once | {len(conc)} | {sum(c['collided'] for c in conc)} collided (exit 0 + 2) | "
          f"{sum(c['equal'] for c in conc)} | {sum(c['lost'] for c in conc)} | {sum(c['duplicated'] for c in conc)} | "
          f"{sum(len(c['bad_cells']) for c in conc)} |")
    if "skipped" in full:
        print(f"| disk full | skipped: {full['skipped']} |")
    else:
        print(f"| disk full | 1 | exit {full['first_exit']} with {full['done_when_full']} cells finished "
              f"(intact: {full['finished_cells_intact']}) | {int(bool(full.get('equal')))} | {full.get('lost', '-')} | "
              f"{full.get('duplicated', '-')} | {len(full.get('bad_cells', []))} |")
        print(f"\ndisk full message: {full['message']}")
    if conc and conc[0]["message"]:
        print(f"lock message: {conc[0]['message']}")
    print(f"\n{time.time() - t0:.0f} s in all")
    ok = bool(kt["equal"].all()) and all(c["equal"] for c in conc) and ("skipped" in full or full.get("equal"))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(*(int(a) for a in sys.argv[1:3])))
