"""Small Flax NNX models: configs, modules, their layers, and the model registry."""

from testbed.core.platform import configure_compile_cache as _configure_compile_cache
from testbed.core.platform import configure_host_devices as _configure_host_devices
from testbed.core.platform import unrolled_threefry as _unrolled_threefry

_configure_host_devices()  # before JAX starts: one CPU device per core
_configure_compile_cache()  # compiled programs persist across runs (TESTBED_COMPILE_CACHE)
_unrolled_threefry()  # random bits compile ~6x faster on CPU, the same bits

from testbed.models import modules  # noqa: E402, F401  (registers mlp, lowrank, deep_linear)
from testbed.models.registry import ModelConfig, list_models, make_model, register_model  # noqa: E402

__all__ = ["ModelConfig", "list_models", "make_model", "register_model"]
