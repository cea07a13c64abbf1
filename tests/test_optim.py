"""Optimizer configs: every optimizer x schedule learns, schedules have their shape, structure, clipping, errors."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import testbed
from testbed.core.errors import ConfigError, UnknownNameError
from testbed.training import engine
from testbed.training.optim import OPTIMIZERS, SCHEDULES, Optimizer, make_optimizer

STEPS = 40
WARMUP = 8
TARGET = jnp.array([1.0, -2.0, 3.0])
# a non-default value of every field but the swept ones (a new field must be added here)
ALTERNATIVES = {"name": "sgd", "schedule": "cosine", "momentum": 0.5, "warmup_steps": 3, "clip": 2.0}


def _opt(name, schedule, **kw) -> Optimizer:
    kw.setdefault("warmup_steps", WARMUP if schedule.startswith("warmup") else 0)
    return make_optimizer(name, schedule=schedule, **kw)


both = pytest.mark.parametrize("schedule", SCHEDULES)
every = pytest.mark.parametrize("name", OPTIMIZERS)


def _quadratic(p):
    return jnp.sum((p - TARGET) ** 2)


@functools.partial(jax.jit, static_argnums=(0, 3, 4))
def _descend(opt: Optimizer, lr, weight_decay, steps: int, loss=_quadratic):
    """Minimize ``loss`` from zeros; lr and weight decay are traced. Returns the loss per step."""
    tx = opt.build(lr, weight_decay, steps)
    p0 = jnp.zeros_like(TARGET)

    def step(c, _):
        p, s = c
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), value

    (p, _), values = jax.lax.scan(step, (p0, tx.init(p0)), None, length=steps)
    return jnp.concatenate([values, loss(p)[None]])


@functools.partial(jax.jit, static_argnums=(0, 3), static_argnames=("extra",))
def _updates(opt: Optimizer, grads, p0, steps: int, lr=0.1, weight_decay=0.0, extra=None):
    """The updates ``opt`` makes for a fixed gradient sequence [T, d] (parameters do move)."""
    tx = opt.build(lr, weight_decay, steps, extra=extra)

    def step(c, g):
        p, s = c
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), u

    _, us = jax.lax.scan(step, (p0, tx.init(p0)), grads)
    return us


def _lr_trace(opt: Optimizer, lr: float, steps: int = STEPS) -> np.ndarray:
    """The effective step size at each update: with a constant unit gradient, Adam's
    normalized step and momentum-free SGD's step are both the scheduled learning rate."""
    opt = dataclasses.replace(opt, momentum=0.0)
    return -np.asarray(_updates(opt, jnp.ones((steps, 1)), jnp.zeros(1), steps, lr))[:, 0]


@every
@both
def test_build_reduces_a_quadratic_with_traced_lr(name, schedule):
    opt = _opt(name, schedule)
    lrs = jnp.array([0.0, 0.1, 0.3])
    curves = np.asarray(jax.vmap(lambda lr: _descend(opt, lr, 0.0, STEPS))(lrs))  # lr swept in one program
    f0 = float(_quadratic(jnp.zeros(3)))
    np.testing.assert_allclose(curves[0], f0, rtol=1e-6)  # lr 0 does nothing
    for lr, curve in zip(lrs[1:], curves[1:], strict=True):
        assert np.isfinite(curve).all()
        assert curve[-1] < 0.5 * f0, f"{name}/{schedule} lr={float(lr)}: {curve[0]:.3g} -> {curve[-1]:.3g}"
        np.testing.assert_allclose(curve, np.asarray(_descend(opt, float(lr), 0.0, STEPS)), rtol=1e-5, atol=1e-6)
    decayed = np.asarray(_descend(opt, 0.1, 1e-3, STEPS))
    assert decayed[-1] < 0.5 * f0 and not np.allclose(decayed, curves[1])  # weight decay is used


@every
def test_weight_decay_shrinks_parameters_without_a_loss(name):
    opt = _opt(name, "constant")
    p0 = jnp.array([5.0, -5.0])
    zeros = jnp.zeros((10, 2))
    p_wd = p0 + np.asarray(_updates(opt, zeros, p0, 10, 0.05, 0.1)).sum(0)
    p_none = p0 + np.asarray(_updates(opt, zeros, p0, 10, 0.05, 0.0)).sum(0)
    np.testing.assert_allclose(p_none, p0)
    assert (np.abs(p_wd) < np.abs(p0) - 1e-3).all() and (np.sign(p_wd) == np.sign(p0)).all()


@every
@both
def test_structure_zeroes_the_swept_numbers_and_keeps_the_rest(name, schedule):
    a = _opt(name, schedule, lr=1e-3, weight_decay=0.1, clip=1.0)
    b = _opt(name, schedule, lr=0.5, weight_decay=0.0, clip=1.0)
    assert a != b
    sa, sb = a.structure(), b.structure()
    assert sa == sb and hash(sa) == hash(sb) and sa.structure() == sa
    assert sa.lr == 0 and sa.weight_decay == 0
    for f in dataclasses.fields(Optimizer):
        if f.name not in ("lr", "weight_decay"):
            assert getattr(sa, f.name) == getattr(a, f.name), f.name
    # the engine builds from the structure with the swept numbers: same updates
    g = jax.random.normal(jax.random.key(0), (6, 3)) * jnp.array([0.1, 1.0, 10.0, 0.1, 1.0, 10.0])[:, None]
    steps = 2 * WARMUP
    g = jnp.tile(g, (steps // 6 + 1, 1))[:steps]
    np.testing.assert_allclose(_updates(sa, g, TARGET, steps, 0.02, 0.1), _updates(a, g, TARGET, steps, 0.02, 0.1),
                               rtol=1e-6)


def test_structure_tells_apart_everything_but_lr_and_weight_decay():
    base = make_optimizer("adam", lr=1e-3)
    fields = {f.name for f in dataclasses.fields(Optimizer)} - {"lr", "weight_decay"}
    assert fields <= set(ALTERNATIVES), f"add a test value for {sorted(fields - set(ALTERNATIVES))}"
    for f in sorted(fields):
        other = dataclasses.replace(base, **{f: ALTERNATIVES[f]})
        assert getattr(other, f) != getattr(base, f)
        assert other.structure() != base.structure(), f"structure() forgets {f}"


def test_optimizers_differing_only_in_lr_share_one_compiled_program(monkeypatch):
    """The engine's compile-cache key holds the optimizer's structure, not its numbers."""

    class Stop(Exception):
        pass

    keys = []

    def program(st, *args, **kwargs):  # stands in for the compile: record its cache key and stop
        keys.append(st)
        raise Stop

    monkeypatch.setattr(engine, "_program", program)
    tiny = dict(model=testbed.MLP(width=4, depth=1), steps=4, batch_size=8, evals=2, eval_size=8,
                probe_points=4, quiet=True, seeds=1)
    for opt in (make_optimizer("adam", lr=1e-3), make_optimizer("adam", lr=3e-2, weight_decay=1e-4),
                make_optimizer("adam", lr=1e-3, clip=1.0)):
        with pytest.raises(Stop):
            testbed.train("step", "mse", optimizer=opt, **tiny)
    assert keys[0] == keys[1] and hash(keys[0]) == hash(keys[1])
    assert keys[0] != keys[2]


@every
@both
def test_schedule_shape(name, schedule):
    lr = 0.1
    opt = _opt(name, schedule)
    t = _lr_trace(opt, lr)
    assert (t >= -1e-9).all() and (t <= lr * (1 + 1e-5)).all()
    np.testing.assert_allclose(t.max(), lr, rtol=1e-4)  # the peak is the given lr
    np.testing.assert_allclose(_lr_trace(opt, 2 * lr), 2 * t, rtol=1e-5, atol=1e-9)  # lr scales it
    if schedule.startswith("warmup"):
        assert t[0] < 1e-6 * lr, "warmup starts near 0"
        np.testing.assert_allclose(t[:WARMUP + 1], lr * np.arange(WARMUP + 1) / WARMUP, rtol=1e-4, atol=1e-8)
    if "cosine" in schedule:
        assert t[-1] < 0.01 * lr, "cosine ends near 0"
        after = t[int(t.argmax()):]
        assert (np.diff(after) <= 1e-7).all(), "cosine decays monotonically after its peak"
    if schedule == "constant":
        np.testing.assert_allclose(t, lr, rtol=1e-4)  # Adam's eps and bias correction in float32


@every
def test_clip_acts_on_the_gradient_before_the_optimizer(name):
    opt = _opt(name, "constant", clip=1.0)
    noclip = dataclasses.replace(opt, clip=None)
    scale = jnp.array([0.1, 10.0, 0.5, 100.0, 2.0, 0.01])
    g = jax.random.normal(jax.random.key(1), (6, 3)) * scale[:, None]
    norms = jnp.linalg.norm(g, axis=1, keepdims=True)
    clipped = g * jnp.minimum(1.0, 1.0 / norms)
    np.testing.assert_allclose(_updates(opt, g, TARGET, 6, 0.1, 0.01),
                               _updates(noclip, clipped, TARGET, 6, 0.1, 0.01), rtol=1e-5, atol=1e-7)
    assert not np.allclose(_updates(opt, g, TARGET, 6), _updates(noclip, g, TARGET, 6))


def test_clip_bounds_plain_sgd_updates_and_follows_a_method_transform():
    lr, clip = 0.1, 0.5
    opt = make_optimizer("sgd", momentum=0.0, clip=clip)
    g = jax.random.normal(jax.random.key(2), (5, 4)) * 100.0
    norms = np.linalg.norm(np.asarray(_updates(opt, g, jnp.zeros(4), 5, lr)), axis=1)
    np.testing.assert_allclose(norms, lr * clip, rtol=1e-5)
    small = g * 1e-4  # a method's extra transform runs first, then clipping
    norms = np.linalg.norm(np.asarray(_updates(opt, small, jnp.zeros(4), 5, lr, extra=optax.scale(1e6))), axis=1)
    np.testing.assert_allclose(norms, lr * clip, rtol=1e-5)


def test_unknown_names_list_the_accepted_values():
    with pytest.raises(UnknownNameError) as e:
        make_optimizer("rmsprop")
    for n in OPTIMIZERS:
        assert n in str(e.value)
    with pytest.raises(ConfigError, match="optimizer.schedule") as e:
        make_optimizer("adam", schedule="linear")
    for s in SCHEDULES:
        assert s in str(e.value)
    with pytest.raises(ConfigError, match="no_such") as e:
        make_optimizer("adam", no_such=1)
    for f in dataclasses.fields(Optimizer):
        assert f.name in str(e.value)


@pytest.mark.parametrize("field,value", [
    ("lr", -1e-3), ("lr", "0.1"), ("lr", float("nan")), ("lr", float("inf")), ("weight_decay", -1.0),
    ("weight_decay", float("nan")), ("momentum", -0.5), ("momentum", float("nan")), ("clip", 0.0),
    ("clip", -1.0), ("clip", float("nan")),
])
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"optimizer\.{field}\b"):
        make_optimizer("adam", **{field: value})


@pytest.mark.parametrize("schedule", [s for s in SCHEDULES if s.startswith("warmup")])
def test_warmup_schedules_need_warmup_steps(schedule):
    with pytest.raises(ConfigError, match="optimizer.warmup_steps"):
        make_optimizer("adam", schedule=schedule)


def test_warmup_cosine_longer_than_the_run_is_a_config_error():
    opt = make_optimizer("adam", schedule="warmup_cosine", warmup_steps=10)
    with pytest.raises(ConfigError, match="optimizer.warmup_steps"):
        _updates(opt, jnp.ones((10, 1)), jnp.zeros(1), 10)
