"""Tasks: the task model and its sampler, the spec language, the registry, Python-built tasks.

Importing this package registers the built-in Python tasks (the TOML specs are found
on disk by the registry).
"""

from testbed.core.platform import configure_compile_cache as _configure_compile_cache
from testbed.core.platform import configure_host_devices as _configure_host_devices
from testbed.core.platform import unrolled_threefry as _unrolled_threefry

_configure_host_devices()  # before JAX starts: one CPU device per core
_configure_compile_cache()  # compiled programs persist across runs (TESTBED_COMPILE_CACHE)
_unrolled_threefry()  # random bits compile ~6x faster on CPU, the same bits

from testbed.tasks import deep_linear, lowrank_logits  # noqa: E402, F401  (registration)
from testbed.tasks.registry import list_tasks, make_task, register_task  # noqa: E402

__all__ = ["list_tasks", "make_task", "register_task"]
