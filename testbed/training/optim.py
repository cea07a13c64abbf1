"""Optimizers: a frozen config that builds an optax transformation from dynamic numbers.

The structure (which optimizer, schedule shape, clipping) is static; the learning
rate and weight decay are passed to `Optimizer.build` as (possibly traced) scalars,
so the engine can vmap over them in one compiled program.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import optax

from testbed.core.errors import ConfigError, UnknownNameError

# name -> (schedule, weight decay, config) -> the optax core; weight decay is decoupled for
# adamw and added to the gradient (L2) for adam and sgd
_CORES = {
    "adam": lambda sched, wd, cfg: optax.chain(optax.add_decayed_weights(wd), optax.adam(sched)),
    "adamw": lambda sched, wd, cfg: optax.adamw(sched, weight_decay=wd),
    "sgd": lambda sched, wd, cfg: optax.chain(optax.add_decayed_weights(wd),
                                              optax.sgd(sched, momentum=cfg.momentum or None)),
}
# name -> (config, run length) -> the learning-rate multiplier as a function of the update count
_SCHEDULES = {
    "constant": lambda cfg, steps: lambda count: 1.0,
    "cosine": lambda cfg, steps: optax.cosine_decay_schedule(1.0, steps),
    "warmup_cosine": lambda cfg, steps: optax.warmup_cosine_decay_schedule(0.0, 1.0, cfg.warmup_steps, steps),
    "warmup": lambda cfg, steps: optax.linear_schedule(0.0, 1.0, cfg.warmup_steps),
}
OPTIMIZERS = tuple(_CORES)
SCHEDULES = tuple(_SCHEDULES)


def list_optimizers() -> list[str]:
    """Names of the optimizers, sorted."""
    return sorted(OPTIMIZERS)


@dataclass(frozen=True, kw_only=True)
class Optimizer:
    """Optimizer config.

    ``lr`` and ``weight_decay`` are defaults; `testbed.train` can sweep them.
    """

    name: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled (adamw) or L2-added (adam, sgd) weight decay
    momentum: float = 0.9  # sgd momentum (0 for plain SGD)
    schedule: str = "constant"  # constant | cosine | warmup | warmup_cosine
    warmup_steps: int = 0  # linear warmup length for warmup schedules
    clip: float | None = None  # global-norm gradient clipping threshold (None: off)

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise UnknownNameError("optimizer", self.name, list(OPTIMIZERS))
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optimizer.schedule: unknown {self.schedule!r}; accepted: {', '.join(SCHEDULES)}")
        for fld in ("lr", "weight_decay", "momentum"):
            v = getattr(self, fld)
            if not isinstance(v, int | float) or isinstance(v, bool) or not 0 <= v < float("inf"):  # NaN fails too
                raise ConfigError(f"optimizer.{fld}: expected a finite number >= 0, got {v!r}")
        if self.schedule.startswith("warmup") and self.warmup_steps <= 0:
            raise ConfigError(f"optimizer.warmup_steps: schedule {self.schedule!r} needs warmup_steps > 0")
        if self.clip is not None and not self.clip > 0:
            raise ConfigError(f"optimizer.clip: expected a positive number or None, got {self.clip!r}")

    def structure(self) -> Optimizer:
        """The static part (numbers that are swept zeroed), for compile-cache keys."""
        return Optimizer(name=self.name, lr=0.0, weight_decay=0.0, momentum=self.momentum,
                         schedule=self.schedule, warmup_steps=self.warmup_steps, clip=self.clip)

    def build(self, lr: jax.Array | float, weight_decay: jax.Array | float, total_steps: int,
              extra: optax.GradientTransformation | None = None) -> optax.GradientTransformation:
        """The optax transformation, with ``lr`` and ``weight_decay`` possibly traced.

        Args:
            lr: peak learning rate (scalar).
            weight_decay: weight decay (scalar).
            total_steps: run length, for decaying schedules.
            extra: a method's gradient transformation, applied first.
        """
        self.check(total_steps)
        shape = _SCHEDULES[self.schedule](self, max(total_steps, 1))
        core = _CORES[self.name](lambda count: lr * shape(count), weight_decay, self)
        parts = [t for t in (extra, optax.clip_by_global_norm(self.clip) if self.clip else None) if t]
        return optax.chain(*parts, core)

    def check(self, steps: int) -> None:
        """Raise ConfigError when this optimizer cannot run for ``steps`` updates (a warmup
        with cosine decay needs some updates left after the warmup)."""
        if self.schedule == "warmup_cosine" and self.warmup_steps >= steps:
            raise ConfigError(f"optimizer.warmup_steps: {self.warmup_steps} leaves no updates for the cosine decay "
                              f"of a {steps}-step run; accepted: 1..{steps - 1}, or schedule 'warmup'")


def make_optimizer(name: str = "adam", **kwargs) -> Optimizer:
    """An optimizer config by name and keyword fields (see `Optimizer`)."""
    try:
        return Optimizer(name=name, **kwargs)
    except TypeError:
        raise ConfigError(f"optimizer {name!r}: bad fields {sorted(kwargs)}; accepted: "
                          f"{', '.join(Optimizer.__dataclass_fields__)}") from None
