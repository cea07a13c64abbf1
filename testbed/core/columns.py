"""Column names shared by every table a training call or a suite writes.

One definition for each: the engine's per-run hyperparameters (`testbed.training.engine.HParams`
is built from `SWEPT`), the columns that identify a run, and the ones that identify a suite cell.
"""

SWEPT = ("lr", "weight_decay", "init_scale")  # continuous hyperparameters vmapped inside one program
RUN = (*SWEPT, "run", "seed")  # identify one run of a training call
COMPONENTS = ("task", "method", "model", "optimizer")  # what a cell is made of (labels in tables)
CELL = ("cell", *COMPONENTS)  # identify one cell of a suite (cell: the hash key)
ZERO_LOSS = "zero_loss"  # a suite's batch_loss.attrs: cell -> the loss of a perfect fit (its facts)

# The task metrics recorded per target kind; the first is the task's primary metric.
METRICS = {"scalar": ("mse",), "vector": ("mse",), "distribution": ("kl",), "class": ("error", "xent")}
