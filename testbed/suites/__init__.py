"""Suites: the TOML grid of cells, the runner and its executors, the results store."""
