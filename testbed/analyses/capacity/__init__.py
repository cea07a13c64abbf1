"""Circuit economics: how pieces share a network's capacity (see `testbed.analyses.capacity.measure`)."""
