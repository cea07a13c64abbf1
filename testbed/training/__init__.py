"""Training: the engine, its optimizers, and what a training call returns."""
