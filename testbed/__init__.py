"""Testbed: a fast, controllable lab of hand-crafted piecewise functions.

The public surface. Everything not listed in ``__all__`` is private.
"""

from testbed.platform import configure_host_devices as _configure_host_devices

_configure_host_devices()  # must run before JAX starts: one CPU device per core

from testbed.analysis.ood import attribution  # noqa: E402
from testbed.analysis.plateaus import plateau_summary, plateau_table, plateaus  # noqa: E402
from testbed.engine import train  # noqa: E402
from testbed.errors import ConfigError, SpecError, TestbedError, UnknownNameError  # noqa: E402
from testbed.history import RunResult  # noqa: E402
from testbed.methods import Ctx, Method, list_methods, make_method, register_method  # noqa: E402
from testbed.models import MLP, DeepLinear, LowRank, make_model  # noqa: E402
from testbed.optim import Optimizer, make_optimizer  # noqa: E402
from testbed.registry import add_task_dir, list_tasks, make_task, register_task  # noqa: E402
from testbed.spec import load_task  # noqa: E402
from testbed.suite import load_suite, load_tables, run_suite  # noqa: E402
from testbed.task import Batch, Domain, Piece, Task, build_task  # noqa: E402

__all__ = [
    "Batch", "ConfigError", "Ctx", "DeepLinear", "Domain", "LowRank", "MLP", "Method", "Optimizer",
    "Piece", "RunResult", "SpecError", "Task", "TestbedError", "UnknownNameError", "add_task_dir",
    "attribution", "build_task", "list_methods", "list_tasks", "load_suite", "load_tables", "load_task",
    "make_method", "make_model", "make_optimizer", "make_task", "plateau_summary", "plateau_table",
    "plateaus", "register_method", "register_task", "run_suite", "train",
]
