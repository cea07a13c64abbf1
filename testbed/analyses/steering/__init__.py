"""Steering: activation injection with a coefficient scan (see `testbed.analyses.steering.measure`)."""
