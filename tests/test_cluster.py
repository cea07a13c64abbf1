"""Cells as submitit jobs (`testbed.suites.cluster`): the local executor gives the in-process
numbers, a killed worker loses only its own cells, and the next run redoes exactly those.
The same code path runs on Slurm (`make test-cluster` runs it against a real one)."""

import os
import signal
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from test_suite import TINY_SUITE  # the tests folder is on the path under pytest

from testbed.suites.cluster import SubmititExecutor, make_executor
from testbed.suites.runner import InProcessExecutor, run_suite
from testbed.suites.spec import load_suite

pytest.importorskip("submitit")



def suite(tmp_path, steps=30):
    """test_suite's tiny suite (2 tasks, mse, MLP 8x1, 2 seeds), named "jobs", of ``steps`` steps."""
    p = tmp_path / "jobs.toml"
    p.write_text(textwrap.dedent(TINY_SUITE).replace('name = "tiny"', 'name = "jobs"')
                 .replace("steps = 30", f"steps = {steps}"))
    return load_suite(p)


def results(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "jobs" / "results.parquet")


def test_local_jobs_give_the_in_process_numbers(tmp_path):
    s = suite(tmp_path)
    run = run_suite(s, tmp_path / "jobs", executor=SubmititExecutor("local", max_jobs=2), quiet=True)
    assert sorted(run.ran) == sorted(c.key for c in s.cells) and not run.failed
    assert all(t.get("run_s", 0) > 0 for t in run.timing["cells"].values())  # the jobs' own timing came back
    run_suite(s, tmp_path / "here", quiet=True)
    pd.testing.assert_frame_equal(results(tmp_path / "jobs"), results(tmp_path / "here"))
    again = run_suite(s, tmp_path / "jobs", executor=SubmititExecutor("local"), quiet=True)
    assert not again.ran and len(again.skipped) == 2  # nothing submitted for finished cells


def _descendants(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task").glob("*/children"):
        for c in child.read_text().split():
            out += [int(c), *_descendants(int(c))]
    return out


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker through /proc")
def test_a_killed_worker_loses_only_its_cells_and_the_next_run_redoes_them(tmp_path):
    s = suite(tmp_path, steps=3000)
    ex = SubmititExecutor("local", max_jobs=1, poll_s=0.05)
    out = {}

    def drive():
        import warnings

        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            try:
                out["run"] = run_suite(s, tmp_path / "jobs", executor=ex, quiet=True)
            except BaseException as e:  # noqa: BLE001  (reported below, in the test's thread)
                out["error"] = e
        out["warnings"] = [str(w.message) for w in seen]

    t = threading.Thread(target=drive)
    t.start()
    deadline = time.time() + 120
    killed = None
    while time.time() < deadline and killed is None:
        if ex.jobs:
            workers = [p for p in _descendants(int(ex.jobs[0].job_id)) if b"submitit.core._submit" in _cmdline(p)]
            if workers:  # the job's Python process: kill it as the OOM killer or a lost node would
                time.sleep(0.5)
                for w in workers:
                    os.kill(w, signal.SIGKILL)
                killed = workers
        time.sleep(0.02)
    t.join(240)
    assert killed, "no worker process was seen"
    assert "error" not in out, out.get("error")
    assert any("did not finish" in w and "run the suite again" in w for w in out["warnings"]), out["warnings"]
    run = out["run"]
    assert len(run.failed) == 1 and len(run.ran) == 1, (run.failed, run.ran)
    (lost,) = run.failed
    assert lost in {c.key for c in s.cells} and "job" in run.failed[lost]
    assert not (tmp_path / "jobs" / "jobs" / lost / "DONE").exists()
    assert len(results(tmp_path / "jobs")["cell"].unique()) == 1  # the finished cell is aggregated

    again = run_suite(s, tmp_path / "jobs", executor=SubmititExecutor("local"), quiet=True)
    assert again.ran == [lost] and not again.failed
    run_suite(s, tmp_path / "here", quiet=True)
    a, b = results(tmp_path / "jobs"), results(tmp_path / "here")
    assert not a.duplicated().any()
    pd.testing.assert_frame_equal(a, b)


def test_executor_options_are_checked():
    assert isinstance(make_executor("inprocess"), InProcessExecutor)
    with pytest.raises(ValueError, match="--executor.*'ray'.*inprocess, local, slurm"):
        make_executor("ray")
    with pytest.raises(ValueError, match="max_jobs: 0"):
        SubmititExecutor("local", max_jobs=0)
    with pytest.raises(ValueError, match="gpus_per_job"):
        SubmititExecutor("slurm", gpus_per_job=-1)


def test_a_worker_with_another_device_count_refuses_to_run(tmp_path):
    from testbed.suites.runner import CellJob, host_device_count

    s = suite(tmp_path)
    with pytest.raises(RuntimeError, match=f"suite was started with {host_device_count() + 1}"):
        CellJob(str(tmp_path / "r"), host_device_count() + 1)([s.cells[0]])


def test_a_failed_job_counts_only_cells_this_run_wrote(tmp_path):
    """A --force run whose job dies must not count the cells' old DONE as done now; a cell the
    job wrote before dying counts; a cell's own error names the cell."""
    import time as _time

    from testbed.suites.runner import CellJob
    from testbed.suites.store import SuiteStore

    s = suite(tmp_path)
    a, b = s.cells
    store = SuiteStore(tmp_path / "r")
    for c in (a, b):
        store.write_cell(c.key, {"k": c.key}, pd.DataFrame({"step": [0]}))
    since = _time.time() + 5  # both DONE files are older than this run

    class Died:
        job_id, state = "7", "FAILED"

        def result(self):
            raise RuntimeError("killed")

    job = CellJob(str(store.root))
    out = list(SubmititExecutor._collect(job, [a, b], Died(), since=since))
    assert [(c.key, t, e is not None) for c, t, e in out] == [(a.key, None, True), (b.key, None, True)]
    assert "job 7 (FAILED): killed" in out[0][2]
    out = list(SubmititExecutor._collect(job, [a, b], Died(), since=0.0))  # written during this run
    assert [t for _, t, _ in out] == [{}, {}]

    class Raised:
        job_id = "8"

        def result(self):
            return [(a.key, {"error": f"cell {a.key} (sine_line/mse) raised ValueError: bad"}), (b.key, {"run_s": 1.0})]

    out = list(SubmititExecutor._collect(job, [a, b], Raised(), since=since))
    assert out[0][1] is None and "raised ValueError: bad" in out[0][2] and out[1][1:] == ({"run_s": 1.0}, None)


def test_choosing_an_executor_leaves_the_logging_handlers_installed():
    """submitit's import reconfigures logging and closes every handler already installed (pytest's
    log capture then fails with "I/O operation on closed file"); testbed imports it without that.
    A fresh interpreter: here submitit may be imported already."""
    import subprocess
    import sys

    code = textwrap.dedent("""
        import logging
        closed = []
        class Handler(logging.Handler):
            def close(self):
                closed.append(self)
                super().close()
        h = Handler()
        logging.getLogger().addHandler(h)
        from testbed.suites.cluster import make_executor
        make_executor("local")
        assert not closed and h in logging.getLogger().handlers, closed
        import os, sys
        assert "submitit" in sys.modules and "SUBMITIT_LOG_LEVEL" not in os.environ
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
