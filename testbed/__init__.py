"""Testbed: a fast, controllable lab of hand-crafted piecewise functions.

The public surface. Everything not listed in ``__all__`` is private. Names are imported
on first use (PEP 562), so ``import testbed`` and the command line start without JAX;
the first name that needs JAX starts it (with one CPU device per core, see
`testbed.core.platform`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from testbed.core.platform import configure_host_devices as _configure_host_devices

_configure_host_devices()  # one CPU device per core, before JAX starts (no JAX import here)

# public name -> the module that defines it
_WHERE = {
    "attribution": "testbed.analyses.attribution.measure",
    "plateaus": "testbed.analyses.plateaus.detect",
    "Stage": "testbed.training.stages",
    "train_stages": "testbed.training.stages",
    "read_curve": "testbed.analyses.plateaus.detect",
    "PromptTask": "testbed.tasks.prompts",
    "Prompts": "testbed.tasks.prompts",
    "make_prompt_task": "testbed.tasks.prompts",
    "list_function_classes": "testbed.tasks.prompts",
    "register_function_class": "testbed.tasks.prompts",
    "baseline_predictions": "testbed.tasks.prompt_baselines",
    "Transformer": "testbed.models.sequence",
    "LinearAttention": "testbed.models.sequence",
    "train_prompts": "testbed.training.prompt_train",
    "Curriculum": "testbed.training.prompt_train",
    "PromptResult": "testbed.training.prompt_train",
    "normalized_error": "testbed.tasks.prompt_baselines",
    "list_prompt_tasks": "testbed.tasks.prompts",
    "prompt_task": "testbed.tasks.prompts",
    "list_prompt_models": "testbed.models.sequence",
    "make_prompt_model": "testbed.models.sequence",
    "register_prompt_model": "testbed.models.sequence",
    "steer": "testbed.analyses.steering.measure",
    "unit_use": "testbed.analyses.capacity.measure",
    "gradient_cosines": "testbed.analyses.capacity.measure",
    "feature_capacity": "testbed.analyses.capacity.superposition",
    "train_superposition": "testbed.analyses.capacity.superposition",
    "plateau_summary": "testbed.analyses.plateaus.tables",
    "plateau_table": "testbed.analyses.plateaus.tables",
    "Analysis": "testbed.analyses.base",
    "Figure": "testbed.analyses.base",
    "list_analyses": "testbed.analyses.base",
    "make_analysis": "testbed.analyses.base",
    "register_analysis": "testbed.analyses.base",
    "ConfigError": "testbed.core.errors",
    "SpecError": "testbed.core.errors",
    "TestbedError": "testbed.core.errors",
    "UnknownNameError": "testbed.core.errors",
    "load_plugins": "testbed.core.plugins",
    "train": "testbed.training.engine",
    "RunResult": "testbed.training.result",
    "Optimizer": "testbed.training.optim",
    "make_optimizer": "testbed.training.optim",
    "Ctx": "testbed.methods.base",
    "Extras": "testbed.methods.base",
    "Method": "testbed.methods.base",
    "Profile": "testbed.methods.base",
    "list_methods": "testbed.methods",
    "make_method": "testbed.methods",
    "register_method": "testbed.methods",
    "MLP": "testbed.models.modules",
    "DeepLinear": "testbed.models.modules",
    "Matrix": "testbed.models.modules",
    "LowRank": "testbed.models.modules",
    "ModelConfig": "testbed.models.registry",
    "list_models": "testbed.models",
    "make_model": "testbed.models",
    "register_model": "testbed.models",
    "add_task_dir": "testbed.core.catalog",
    "list_tasks": "testbed.tasks",
    "make_task": "testbed.tasks",
    "register_task": "testbed.tasks",
    "load_task": "testbed.tasks.spec",
    "Batch": "testbed.tasks.task",
    "Domain": "testbed.tasks.task",
    "Piece": "testbed.tasks.task",
    "Task": "testbed.tasks.task",
    "build_task": "testbed.tasks.build",
    "load_suite": "testbed.suites.spec",
    "run_suite": "testbed.suites.runner",
    "SubmititExecutor": "testbed.suites.cluster",
    "load_tables": "testbed.suites.tables",
    "export_suite": "testbed.report.export",
    "estimate_memory": "testbed.training.engine",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'testbed' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # for type checkers and IDEs; never imported at run time
    from testbed.analyses.attribution.measure import attribution  # noqa: F401
    from testbed.training.engine import train  # noqa: F401
