"""Cost of ``make_task`` for an already built TOML task (a cache hit).

Every call still lists the spec folders and checks each spec's mtime, so edited specs
are picked up; spec names are parsed once per file version. Suites pay this per cell
when they load and read back.

    python benchmarks/perf/make_task_lookup.py [--calls 200]
"""

from __future__ import annotations

import argparse
import time

import testbed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=200)
    args = p.parse_args()
    testbed.make_task("sine_line")
    t0 = time.perf_counter()
    for _ in range(args.calls):
        testbed.make_task("sine_line")
    print(f"make_task cache hit: {(time.perf_counter() - t0) / args.calls * 1e3:.2f} ms/call "
          f"({len(testbed.list_tasks())} tasks registered)")


if __name__ == "__main__":
    main()
