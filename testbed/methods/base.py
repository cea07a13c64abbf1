"""The Method record and its registry.

A method, like an optax transformation, is built by a factory that closes over its
hyperparameters and returns a small record of pure functions. The engine only ever
calls these functions, so a new method is one file plus a `register_method` call. A
plain method is four functions (``head_dim``, ``loss``, ``predict``, optionally
``forward``); what only some methods need lives in one optional `Extras` group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from testbed.core.errors import ConfigError
from testbed.core.registry import Registry
from testbed.tasks.task import Batch, Task


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


class Extras(NamedTuple):
    """What only some methods use. A plain method leaves ``Method.extras`` at its default.

    Attributes:
        extra_inputs: extra input features the method appends to x (e.g. the epoch index).
        objective: (task, apply, params, batch, ctx) -> scalar to minimize, or (scalar, aux)
            with aux a dict of per-update scalars recorded in ``RunResult.traces`` (aux
            ``"loss"``, when given, is what ``batch_loss`` records instead of the objective);
            default: the mean of ``Method.loss`` over the batch.
        check: (task, steps) -> None; raises ConfigError when the method cannot run on this
            task for this many updates (called before compiling).
        halt: (aux, ctx) -> bool: the run halts at the first update where it is true
            (``RunResult.runs.halted_step``); its updates from then on are skipped when
            ``halt_freezes`` (evaluations go on).
        halt_freezes: whether halting freezes the run's parameters.
        eval_metrics: names of extra per-example evaluation metrics, from ``evaluate``.
        evaluate: (task, apply, params, batch, ctx, outputs) -> {name: [N]}, averaged per
            split and piece into the history like the loss.
        profile: a `Profile` recorded at every evaluation.
        run_metrics: (traces {name: [R, steps]}, with ``"loss"`` the batch loss; halted_at [R];
            steps) -> {name: [R]}: per-run numbers added to the history at the final step
            (split ``train``, piece ``all``).
        analyses: names of registered analyses that suites run on every cell of this method
            (beside the default ones), e.g. ``("myopia",)``.
        zero_loss: the loss (as ``batch_loss`` and the history record it) of a perfect fit;
            the plateau analysis measures "reached zero" and "stuck" against it. 0 for every
            built-in method (``ce`` reports cross-entropy minus the target's entropy).
    """

    extra_inputs: int = 0
    objective: Callable[..., jax.Array] | None = None
    check: Callable[[Task, int], None] | None = None
    halt: Callable[[dict, Ctx], jax.Array] | None = None
    halt_freezes: bool = True
    eval_metrics: tuple[str, ...] = ()
    evaluate: Callable[..., dict[str, jax.Array]] | None = None
    profile: Profile | None = None
    run_metrics: Callable[..., dict[str, Any]] | None = None
    analyses: tuple[str, ...] = ()
    zero_loss: float = 0.0


class Method(NamedTuple):
    """A training method: a record of pure functions.

    Attributes:
        name: registry name.
        head_dim: task -> number of model outputs.
        loss: (task, outputs [n, head], batch) -> per-example loss [n].
        predict: (task, outputs [n, head]) -> predictions in target space
            (scalar: [n]; vector: [n, k]; distribution and class: logits [n, K]).
        hparams: the hyperparameters, for records.
        forward: optional (task, apply, params, batch, ctx) -> outputs; default
            ``apply(params, batch.x)``. Lets a method add inputs or gradient masks.
        tx: optional optax transformation applied to gradients before the optimizer.
        extras: what only some methods use (`Extras`: halting, traces, profiles, ...).
    """

    name: str
    head_dim: Callable[[Task], int]
    loss: Callable[[Task, jax.Array, Batch], jax.Array]
    predict: Callable[[Task, jax.Array], jax.Array]
    hparams: tuple[tuple[str, Any], ...] = ()
    forward: Callable[..., jax.Array] | None = None
    tx: optax.GradientTransformation | None = None
    extras: Extras = Extras()

    def outputs(self, task: Task, apply: Apply, params, batch: Batch, ctx: Ctx) -> jax.Array:
        """Model outputs on a batch (through the method's forward, if any)."""
        if self.forward is not None:
            return self.forward(task, apply, params, batch, ctx)
        return apply(params, batch.x)

    def train_loss(self, task: Task, apply: Apply, params, batch: Batch, ctx: Ctx) -> tuple[jax.Array, dict]:
        """(the scalar the optimizer minimizes, per-update aux scalars)."""
        if self.extras.objective is not None:
            value = self.extras.objective(task, apply, params, batch, ctx)
            return value if isinstance(value, tuple) else (value, {})
        return jnp.mean(self.loss(task, self.outputs(task, apply, params, batch, ctx), batch)), {}


METHODS: Registry[Method] = Registry("method", Method)


def register_method(name: str):
    """Register a method factory ``(**hparams) -> Method``; refuses duplicates.

    Example::

        @testbed.register_method("mae")
        def mae() -> testbed.Method:
            return testbed.Method("mae", head_dim=lambda task: 1,
                                  loss=lambda task, out, batch: jnp.abs(out[:, 0] - batch.y),
                                  predict=lambda task, out: out[:, 0])
    """
    return METHODS.register(name)


def list_methods() -> list[str]:
    """Names of the registered methods."""
    return METHODS.names()


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
    return METHODS.make(name, **hparams)
