"""Fuzz the suite and task spec loaders: mutations of every built-in spec
(`testbed.suites.fuzz.mutate`). Every case must load or raise the project's own error naming
the file; any other exception, a case over the time limit, or a file written anywhere under the
working folder is a failure. Prints the counts per kind.

    python benchmarks/reliability/fuzz_specs.py [cases per kind] [seconds per case]   (10,000: ~1 min)
"""

from __future__ import annotations

import os
import random
import signal
import sys
import tempfile
import time
import tomllib
import traceback
from pathlib import Path

from testbed.core.errors import TestbedError
from testbed.suites.fuzz import mutate
from testbed.suites.spec import suite_from_spec
from testbed.tasks.spec import task_from_spec

ROOT = Path(__file__).resolve().parents[2]


class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout


def main(cases: int = 10_000, limit: float = 5.0) -> int:
    signal.signal(signal.SIGALRM, _alarm)
    work = Path(tempfile.mkdtemp(prefix="testbed-fuzz-"))
    os.chdir(work)
    failures = 0
    for kind, files, load in (
            ("suite", sorted((ROOT / "benchmarks").glob("*.toml")),
             lambda s, where: suite_from_spec(s, path=where, build=False)),
            ("task", sorted((ROOT / "tasks").glob("*.toml")), lambda s, where: task_from_spec(s, source=where))):
        rng = random.Random(kind)
        count = {"loaded": 0, "refused": 0, "other exception": 0, "over time": 0, "error without the file": 0}
        t0 = time.perf_counter()
        for i in range(cases):
            spec = mutate(tomllib.loads(files[i % len(files)].read_text()), rng)
            where = f"fuzz-{kind}-{i}.toml"
            signal.setitimer(signal.ITIMER_REAL, limit)
            try:
                load(spec, where)
                count["loaded"] += 1
            except TestbedError as e:
                count["refused" if where in str(e) else "error without the file"] += 1
            except Timeout:
                count["over time"] += 1
            except Exception:  # noqa: BLE001  (counted and shown)
                count["other exception"] += 1
                if count["other exception"] <= 3:
                    print(f"{kind} case {i}: {spec!r}\n{traceback.format_exc()}", file=sys.stderr)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        written = [p for p in work.rglob("*")]
        bad = count["other exception"] + count["over time"] + count["error without the file"] + len(written)
        failures += bad
        print(f"{kind} specs: {cases} cases in {time.perf_counter() - t0:.0f} s: " +
              ", ".join(f"{k} {v}" for k, v in count.items()) + f", files written {len(written)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*(int(a) if i == 0 else float(a) for i, a in enumerate(sys.argv[1:3]))))
