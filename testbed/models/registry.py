"""The model registry: model configs by name.

A model config is a frozen, hashable record (it decides shapes and code paths) with a
``name``, ``build(in_dim, out_dim, *, rngs) -> nnx.Module`` (called inside the traced
training function) and ``hidden_sizes() -> widths of the hidden layers``. Register a
config class (or a factory returning one) with `register_model`::

    @testbed.register_model("resmlp")
    @dataclass(frozen=True, kw_only=True)
    class ResMLP:
        width: int = 64  # hidden units
        name = "resmlp"
        def build(self, in_dim, out_dim, *, rngs): ...
        def hidden_sizes(self): return (self.width,)
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from testbed.core.registry import Registry


@runtime_checkable
class ModelConfig(Protocol):
    """What the engine needs of a model config."""

    name: str

    def build(self, in_dim: int, out_dim: int, *, rngs: Any) -> Any: ...

    def hidden_sizes(self) -> tuple[int, ...]: ...


MODELS: Registry[ModelConfig] = Registry("model", ModelConfig)


def register_model(name: str):
    """Register a model config class or factory ``(**fields) -> ModelConfig``; refuses duplicates."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of the registered models."""
    return MODELS.names()


def make_model(name: str = "mlp", **fields) -> ModelConfig:
    """A model config by name (``mlp``, ``lowrank``, ``deep_linear``, or a plug-in's) and its fields.

    Raises:
        UnknownNameError: unknown name. ConfigError: bad fields or values.
    """
    return MODELS.make(name, **fields)

