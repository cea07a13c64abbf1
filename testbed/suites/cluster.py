"""Cells as jobs through submitit: on a Slurm cluster, or as local processes on one code path.

`SubmititExecutor` is an `testbed.suites.runner.Executor`: the suite runner hands it groups of
cells that share a compiled program, and it submits one job per group (a Slurm job array,
at most ``max_jobs`` running at once; locally, at most ``max_jobs`` processes). Each job runs
a picklable `testbed.suites.runner.CellJob`, which writes every cell's folder itself, DONE
last, so a job that is killed, pre-empted or timed out leaves its finished cells finished
and the others without DONE: the next `testbed bench` redoes exactly those.

Workers start as new processes (submitit starts a fresh interpreter; nothing is forked
after JAX starts), pinned to the driver's CPU device count (the numbers depend on it:
``TESTBED_HOST_DEVICES`` is exported to them and each job checks it), and they share the
compile cache: the default cache folder is keyed by CPU model and package versions
(`testbed.core.platform.compile_cache_dir`), so nodes of one kind share one sub-folder.

submitit is an optional extra (``pip install 'testbed[slurm]'``); this module imports it only
when a suite runs through it.
"""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

CLUSTERS = ("local", "slurm")
JOBS_DIR = ".jobs"  # submitit's pickles and logs, inside the suite folder (hidden: never a cell)


@dataclass
class SubmititExecutor:
    """Run a suite's cells as submitit jobs.

    Args:
        cluster: ``"slurm"`` (sbatch job arrays) or ``"local"`` (the same jobs as local processes).
        folder: where submitit keeps job files and logs; default ``results/<suite>/.jobs``.
        partition: the Slurm partition (None: the cluster's default).
        time_min: each job's time limit in minutes (Slurm kills it past this; its cells are redone
            by the next run).
        cpus_per_job: CPUs per job (None: the driver's CPU device count).
        gpus_per_job: GPUs per job.
        max_jobs: jobs running at once (the array's ``%`` limit; locally, processes at once);
            None: as many as there are groups on Slurm, one locally.
        slurm_args: further sbatch options by name (``{"mem": "8G", "account": "lab"}``).
        poll_s: how often the driver looks at the jobs.
    """

    cluster: str = "local"
    folder: str | os.PathLike | None = None
    partition: str | None = None
    time_min: int = 60
    cpus_per_job: int | None = None
    gpus_per_job: int = 0
    max_jobs: int | None = None
    slurm_args: dict = field(default_factory=dict)
    poll_s: float = 0.5
    jobs: list = field(default_factory=list, repr=False)  # the submitted jobs of the last map

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise ValueError(f"--executor: unknown cluster {self.cluster!r}; accepted: inprocess, "
                             f"{', '.join(CLUSTERS)}")
        for name in ("time_min", "cpus_per_job", "max_jobs"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name}: {v!r} is not a whole number >= 1")
        if not isinstance(self.gpus_per_job, int) or self.gpus_per_job < 0:
            raise ValueError(f"gpus_per_job: {self.gpus_per_job!r} is not a whole number >= 0")

    # ------------------------------------------------------------------ submitting
    def _executor(self, job, n_groups: int):
        try:
            submitit = import_submitit()
        except ImportError:
            raise ImportError("running cells as jobs needs submitit: pip install 'testbed[slurm]'") from None
        folder = Path(self.folder) if self.folder is not None else Path(job.root) / JOBS_DIR
        env = {"TESTBED_HOST_DEVICES": str(job.host_devices)} if job.host_devices else {}
        for name in ("TESTBED_COMPILE_CACHE", "XLA_FLAGS"):  # not JAX_PLATFORMS: a login node's "cpu" would
            if os.environ.get(name):                         # keep GPU jobs off their GPUs
                env[name] = os.environ[name]
        setup = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
        self._env = env
        ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        params = {"timeout_min": self.time_min, "name": f"testbed-{Path(job.root).name}",
                  "cpus_per_task": self.cpus_per_job or job.host_devices or (os.cpu_count() or 1)}
        if self.gpus_per_job:
            params["gpus_per_node"] = self.gpus_per_job
        if self.cluster == "slurm":
            params["slurm_array_parallelism"] = self.max_jobs or max(1, n_groups)
            params["slurm_setup"] = setup
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.slurm_args:
                params["slurm_additional_parameters"] = dict(self.slurm_args)
        # local jobs inherit this process's environment (set around each submission, `_submit`):
        # a setup line would run them under a shell that submitit's cancel does not reach
        ex.update_parameters(**params)
        return ex

    def _submit(self, ex, job, group):
        old = {k: os.environ.get(k) for k in self._env}
        os.environ.update(self._env)
        try:
            return ex.submit(job, group)
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def map(self, job, groups: Sequence[Sequence], on_steps=None):
        """Submit one job per group and yield ``(cell, timing, error)`` as the jobs finish."""
        groups = [list(g) for g in groups if g]
        if not groups:
            return
        limit = self.max_jobs or (sum(map(len, groups)) if self.cluster == "slurm" else 1)
        groups = split_to(groups, limit)  # a program shared by many cells must not serialize them all
        ex = self._executor(job, len(groups))
        started = time.time()
        pending = list(range(len(groups)))  # groups not yet submitted (local: at most max_jobs at once)
        running: dict[int, object] = {}
        self.jobs = []
        checked, lost, missing = time.monotonic(), set(), {}
        try:
            if self.cluster == "slurm":  # one array; Slurm enforces the limit
                jobs = ex.map_array(job, groups)
                running = dict(enumerate(jobs))
                pending = []
                self.jobs = list(jobs)
            while pending or running:
                while pending and len(running) < limit:
                    i = pending.pop(0)
                    running[i] = self._submit(ex, job, groups[i])
                    self.jobs.append(running[i])
                finished = [i for i, j in running.items() if j.done()]
                if self.cluster == "slurm" and not finished and time.monotonic() - checked > 5.0:
                    checked = time.monotonic()
                    gone = set(_left_the_queue(running))
                    missing = {i: missing.get(i, 0) + 1 for i in gone}  # twice in a row, 5 s apart: a
                    lost.update(i for i, n in missing.items() if n >= 2)  # shared file system may lag
                    finished = [i for i in lost if i in running]
                if not finished:
                    time.sleep(self.poll_s)
                    continue
                for i in finished:
                    yield from self._collect(job, groups[i], running.pop(i), lost=i in lost, since=started)
        finally:
            for j in running.values():  # the driver stopped early (Ctrl-C, an error): stop its jobs
                try:
                    j.cancel(check=False)
                except Exception:  # noqa: BLE001, S110  (best effort; a job left running writes whole cells)
                    pass

    @staticmethod
    def _collect(job, group, submitted, lost: bool = False, since: float = 0.0):
        from testbed.suites.store import DONE_FILE, SuiteStore

        if lost:
            results, error = {}, (f"job {submitted.job_id} left the Slurm queue without a result (cancelled, "
                                  "killed, pre-empted or timed out)")
        else:
            try:
                results = dict(submitted.result())
                error = None
            except Exception as e:  # noqa: BLE001  (killed, timed out, pre-empted or failed: reported per cell)
                results, error = {}, f"job {submitted.job_id} ({_state(submitted)}): {_tail(e)}"
        store = SuiteStore(job.root)
        for cell in group:
            got = results.get(cell.key)
            if isinstance(got, dict) and "error" in got:
                yield cell, None, f"job {submitted.job_id}: {got['error']}"
            elif got is not None:
                yield cell, got, None
            elif store.is_done(cell.key) and _done_since(store.cell_dir(cell.key) / DONE_FILE, since):
                yield cell, {}, None  # written by this run's job before it died (not a --force run's old one)
            else:
                yield cell, None, error or f"job {submitted.job_id} returned without cell {cell.key}"


def split_to(groups: list[list], n: int) -> list[list]:
    """Split the largest groups in halves until there are ``n`` groups (or every group holds
    one cell): cells sharing a program compile it once per job, but ``n`` jobs may run at once."""
    groups = [list(g) for g in groups]
    while len(groups) < n:
        big = max(range(len(groups)), key=lambda i: len(groups[i]))
        if len(groups[big]) < 2:
            break
        g = groups.pop(big)
        groups[big:big] = [g[: len(g) // 2], g[len(g) // 2:]]
    return groups


def _left_the_queue(running: dict) -> list:
    """Slurm jobs among ``running`` that are no longer queued or running and left no result.

    submitit learns a job's end from ``sacct``, which needs Slurm's accounting database; where
    there is none (a small cluster, `make test-cluster`) a cancelled job would look unfinished
    forever. ``squeue`` lists every job still pending or running, so one missing from it that
    has no result file is lost."""
    import subprocess

    ids = sorted({str(j.job_id).split("_")[0] for j in running.values()})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(ids)], capture_output=True,
                             text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return []  # squeue failed: say nothing rather than guess
    queued = set(out.stdout.split())
    return [i for i, j in running.items() if str(j.job_id) not in queued and not j.done(force_check=True)]


def _done_since(done: Path, since: float) -> bool:
    try:
        return done.stat().st_mtime >= since - 1.0
    except OSError:
        return False


def _state(job) -> str:
    try:
        return str(job.state)
    except Exception:  # noqa: BLE001
        return "unknown state"


def _tail(e: BaseException, lines: int = 3) -> str:
    text = str(e).strip().splitlines()
    return " | ".join(text[-lines:]) if text else type(e).__name__


def import_submitit():
    """submitit, imported without letting it configure logging in this process: its import
    calls `logging.config.dictConfig`, which closes every logging handler already installed (a
    user's; pytest's log capture, whose next record then fails with "I/O operation on closed
    file"). Its jobs are new interpreters and configure it as usual."""
    import sys

    if "submitit" in sys.modules:
        return sys.modules["submitit"]
    unset = "SUBMITIT_LOG_LEVEL" not in os.environ
    if unset:
        os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
    try:
        import submitit
    finally:
        if unset:
            os.environ.pop("SUBMITIT_LOG_LEVEL", None)
    return submitit


def make_executor(name: str, **options):
    """The executor a CLI ``--executor`` names: ``inprocess`` (default), ``local`` or ``slurm``."""
    from testbed.suites.runner import InProcessExecutor

    if name in ("inprocess", "in-process", None):
        return InProcessExecutor()
    if name not in CLUSTERS:
        raise ValueError(f"--executor: unknown executor {name!r}; accepted: inprocess, {', '.join(CLUSTERS)}")
    try:
        import_submitit()
    except ImportError:
        raise ValueError(f"--executor {name}: needs submitit, which is not installed: pip install "
                         "'testbed[slurm]'") from None
    return SubmititExecutor(cluster=name, **options)
