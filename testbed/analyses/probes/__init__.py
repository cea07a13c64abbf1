"""Predictions at fixed probe inputs over training (the probe table and its figure)."""
