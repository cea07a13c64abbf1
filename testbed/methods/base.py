"""The Method record and its registry.

A method, like an optax transformation, is built by a factory that closes over its
hyperparameters and returns a small record of pure functions. The engine only ever
calls these functions, so a new method is one file plus a `register_method` call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from testbed.errors import ConfigError, UnknownNameError, call_factory
from testbed.task import Batch, Task


class Ctx(NamedTuple):
    """What a method may know about where training is (dynamic scalars)."""

    step: jax.Array  # current update index (int32)
    steps: int  # total updates in the run (static)


# apply(params, x, **model_kwargs) -> outputs [n, head_dim]
Apply = Callable[..., jax.Array]


class Profile(NamedTuple):
    """A per-example quantity a method records at every evaluation as a function of
    a context value it controls (e.g. the myopic method's shutdown probability at
    every epoch index, seen in training or not).

    Attributes:
        axis: name of the context axis (a column of ``RunResult.profile``), e.g. ``epoch``.
        names: the quantities recorded (the ``metric`` column), e.g. ``("p_stop",)``.
        values: steps -> the [K] axis values, for a run of that many updates.
        fn: (task, apply, params, batch, ctx) -> {name: [N, K]} per-example values.
    """

    axis: str
    names: tuple[str, ...]
    values: Callable[[int], Any]
    fn: Callable[..., dict[str, jax.Array]]


class Method(NamedTuple):
    """A training method: a record of pure functions.

    Attributes:
        name: registry name.
        head_dim: task -> number of model outputs.
        loss: (task, outputs [n, head], batch) -> per-example loss [n].
        predict: (task, outputs [n, head]) -> predictions in target space
            (scalar: [n]; vector: [n, k]; distribution and class: logits [n, K]).
        extra_inputs: extra input features the method appends to x (e.g. epoch index).
        forward: optional (task, apply, params, batch, ctx) -> outputs; default
            ``apply(params, batch.x)``. Lets a method add inputs or gradient masks.
        objective: optional (task, apply, params, batch, ctx) -> scalar to minimize,
            or (scalar, aux) with aux a dict of per-update scalars recorded in
            ``RunResult.traces`` (aux ``"loss"``, when given, is what ``batch_loss``
            records instead of the objective); default mean of ``loss`` over the batch.
        tx: optional optax transformation applied to gradients before the optimizer.
        hparams: the hyperparameters, for records.
        check: optional (task, steps) -> None; raises ConfigError when the method
            cannot run on this task for this many updates (called before compiling).
        halt: optional (aux, ctx) -> bool: the run halts at the first update where it
            is true (``RunResult.runs.halted_step``); its updates from then on are
            skipped when ``halt_freezes`` (evaluations go on).
        halt_freezes: whether halting freezes the run's parameters.
        eval_metrics: names of extra per-example evaluation metrics, from ``evaluate``.
        evaluate: optional (task, apply, params, batch, ctx, outputs) -> {name: [N]},
            averaged per split and piece into the history like the loss.
        profile: optional `Profile` recorded at every evaluation.
        run_metrics: optional (traces {name: [R, steps]}, with ``"loss"`` the batch loss;
            halted_at [R]; steps) ->
            {name: [R]}: per-run numbers added to the history at the final step
            (split ``train``, piece ``all``).
    """

    name: str
    head_dim: Callable[[Task], int]
    loss: Callable[[Task, jax.Array, Batch], jax.Array]
    predict: Callable[[Task, jax.Array], jax.Array]
    extra_inputs: int = 0
    forward: Callable[..., jax.Array] | None = None
    objective: Callable[..., jax.Array] | None = None
    tx: optax.GradientTransformation | None = None
    hparams: tuple[tuple[str, Any], ...] = ()
    check: Callable[[Task, int], None] | None = None
    halt: Callable[[dict, Ctx], jax.Array] | None = None
    halt_freezes: bool = True
    eval_metrics: tuple[str, ...] = ()
    evaluate: Callable[..., dict[str, jax.Array]] | None = None
    profile: Profile | None = None
    run_metrics: Callable[..., dict[str, Any]] | None = None

    def outputs(self, task: Task, apply: Apply, params, batch: Batch, ctx: Ctx) -> jax.Array:
        """Model outputs on a batch (through the method's forward, if any)."""
        if self.forward is not None:
            return self.forward(task, apply, params, batch, ctx)
        return apply(params, batch.x)

    def train_loss(self, task: Task, apply: Apply, params, batch: Batch, ctx: Ctx) -> tuple[jax.Array, dict]:
        """(the scalar the optimizer minimizes, per-update aux scalars)."""
        if self.objective is not None:
            value = self.objective(task, apply, params, batch, ctx)
            return value if isinstance(value, tuple) else (value, {})
        return jnp.mean(self.loss(task, self.outputs(task, apply, params, batch, ctx), batch)), {}


_FACTORIES: dict[str, Callable[..., Method]] = {}
_CACHE: dict[tuple, Method] = {}


def register_method(name: str):
    """Register a method factory ``(**hparams) -> Method``; refuses duplicates."""
    def deco(factory: Callable[..., Method]) -> Callable[..., Method]:
        if name in _FACTORIES:
            raise ConfigError(f"method {name!r} is already registered")
        _FACTORIES[name] = factory
        return factory
    return deco


def list_methods() -> list[str]:
    """Names of the registered methods."""
    _ensure_builtin()
    return sorted(_FACTORIES)


def make_method(name: str | Method, **hparams) -> Method:
    """Build a method by name. The same name and hyperparameters give the same object,
    so compiled programs are reused.

    Raises:
        UnknownNameError: unknown name. ConfigError: bad hyperparameters.
    """
    if isinstance(name, Method):
        if hparams:
            raise ConfigError("hyperparameters given with an already built Method")
        return name
    _ensure_builtin()
    if name not in _FACTORIES:
        raise UnknownNameError("method", name, list(_FACTORIES))
    key = (name, _freeze(hparams))
    if key not in _CACHE:
        _CACHE[key] = call_factory("method", name, _FACTORIES[name], hparams, Method)
    return _CACHE[key]


def _freeze(v: Any, top: bool = True) -> Any:
    # Keyword order never matters (top level sorted); nested mappings keep their order,
    # which may be meaningful (routing's ``blocks`` lay units out in that order).
    if isinstance(v, Mapping):
        items = [(k, _freeze(x, False)) for k, x in v.items()]
        return ("<map>", *(sorted(items) if top else items))
    if isinstance(v, list | tuple):
        return tuple(_freeze(x, False) for x in v)
    return v


def _ensure_builtin() -> None:
    import testbed.methods  # noqa: F401  (registers the built-in methods)
