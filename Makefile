# Two entry points: `make bench` (the main job) and `make test` (the whole suite).
# Both create .venv with the project installed if it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUITE ?= benchmarks/default.toml

.PHONY: bench test test-cluster lint perf clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

bench: $(STAMP)
	$(VENV)/bin/testbed bench $(SUITE)

# Two workers: the suite's time is mostly single-threaded XLA compiles (4m15s vs 7m serial here).
# worksteal: an idle worker takes queued tests from the busy one (a few tests take 20-40 s);
# 299 s against 318 s with the default scheduling, side by side (farm-bench, 2026-12-02).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

# A real single-node Slurm (Debian's slurm-wlm and munge, installed if missing; needs root or
# sudo): a suite through --executor slurm, one job scancelled mid-suite, re-run, compared with an
# in-process run. Not part of `make test` (CI has no Slurm); run it before changing the executor.
test-cluster: $(STAMP)
	PY=$(PY) bash tests/cluster/slurm.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check testbed tests benchmarks

# Speed benchmarks against PyTorch (installs the optional torch extra): training throughput,
# the hand-written JAX loop that bounds it, and the whole main job against a PyTorch script.
perf: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/perf/train_speed.py
	$(PY) benchmarks/perf/xla_ceiling.py
	$(PY) benchmarks/perf/suite_speed.py

clean:
	rm -rf $(VENV) build *.egg-info
