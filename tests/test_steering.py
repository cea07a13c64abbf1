"""Steering by activation injection (`testbed.analyses.steering`): the sanity properties the
issue names, directions' shapes and norms, clear errors, and every steerable task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import testbed
from testbed.analyses.forward import piece_inputs
from testbed.analyses.steering.measure import directions_at, steer
from testbed.core.errors import ConfigError
from testbed.tasks.registry import list_tasks, make_task


def _train(task_name="context_switch", method="mse", steps=300, depth=2, seeds=(0, 1)):
    task = make_task(task_name)
    r = testbed.train(task, testbed.make_method(method), testbed.make_model("mlp", width=16, depth=depth),
                      testbed.make_optimizer("adam", lr=3e-3), seeds=list(seeds), steps=steps, evals=2, quiet=True,
                      probe_points=16, eval_size=64)
    return task, r


@pytest.fixture(scope="module")
def trained():
    return _train()


def test_alpha_zero_gives_the_unsteered_outputs_bit_for_bit(trained):
    from testbed.analyses.steering.measure import _injected

    task, r = trained
    batch = piece_inputs(task, 0, 64)
    out = _injected(task, testbed.make_method("mse"), r.graphdef, 300, 0)(
        r.params, batch, jnp.ones((2, 16)), jnp.asarray([0.0]))[:, 0]
    plain = jax.vmap(lambda p: nnx.merge(r.graphdef, p)(batch.x))(r.params)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(plain))


def test_injecting_the_mean_difference_before_the_readout_moves_the_mean_output_by_alpha_times_the_gap(trained):
    task, r = trained
    table, _ = steer(task, "mse", r, layers=[1], directions=["mean_diff"], alphas=[0.0, 0.5, 1.0, 2.0])
    md = table[table["direction"] == "mean_diff"].set_index(["run", "alpha"])["shift"]
    src, tgt = piece_inputs(task, 0, 512), piece_inputs(task, 1, 512)  # the inputs steer draws
    gap = [float(np.mean(r.model(run)(tgt.x)) - np.mean(r.model(run)(src.x))) for run in (0, 1)]
    for run in (0, 1):
        for a in (0.5, 1.0, 2.0):
            np.testing.assert_allclose(md[(run, a)], a * gap[run], rtol=1e-4, atol=1e-6)
    assert (table.loc[table["alpha"] == 0.0, "shift"] == 0.0).all()


def test_directions_have_the_mean_differences_norm_and_the_probe_agrees_with_it():
    h_src = jax.random.normal(jax.random.key(0), (3, 200, 8))
    h_tgt = h_src + jnp.array([[[2.0, 0, 0, 0, 0, 0, 0, 1.0]]])
    d = directions_at(h_src, h_tgt)
    norm = np.linalg.norm(np.asarray(d["mean_diff"]), axis=-1)
    np.testing.assert_allclose(norm, np.sqrt(5.0), rtol=1e-5)
    for name in ("probe", "random"):
        assert d[name].shape == (3, 8)
        np.testing.assert_allclose(np.linalg.norm(np.asarray(d[name]), axis=-1), norm, rtol=1e-5)
    cos = np.sum(np.asarray(d["probe"]) * np.asarray(d["mean_diff"]), -1) / norm ** 2
    assert (cos > 0.9).all()  # a shift along (2, ..., 1): the probe finds the same direction


def test_a_direction_that_switches_the_context_exists_and_the_random_control_does_not_switch():
    task, r = _train(steps=1500, seeds=(0, 1))
    table, _ = steer(task, "mse", r, layers=[0], directions=["mean_diff", "random"], alphas=[0.0, 1.0])
    at1 = table[table["alpha"] == 1.0].groupby("direction")[["mix", "residual"]].mean()
    assert at1.loc["mean_diff", "mix"] > 0.6  # most of the way from sine to the line
    assert at1.loc["mean_diff", "residual"] < at1.loc["random", "residual"]


def test_the_spill_table_measures_every_other_piece():
    task, r = _train("checkerboard", steps=50)
    table, spill = steer(task, "mse", r, layers=[0], directions=["mean_diff"], alphas=[0.0, 1.0])
    assert set(spill["piece"]) == set(task.pieces) - {task.pieces[0]}
    assert (spill.loc[spill["alpha"] == 0.0, "change"] == 0.0).all()


@pytest.mark.parametrize("kwargs, words", [
    ({"source": "cosine"}, "pieces: sine, line"),
    ({"source": "line", "target": "line"}, "same piece"),
    ({"layers": [5]}, "0..1"),
    ({"directions": ["sideways"]}, "accepted: mean_diff"),
    ({"directions": ["vector"]}, "needs vector="),
    ({"directions": ["vector"], "vector": np.ones(3)}, "16 units"),
])
def test_bad_steering_arguments_are_named(trained, kwargs, words):
    task, r = trained
    with pytest.raises(ConfigError, match=words):
        steer(task, "mse", r, **kwargs)


def test_a_given_vector_is_injected_at_its_own_norm(trained):
    task, r = trained
    v = np.zeros(16, np.float32)
    v[3] = 2.5
    table, _ = steer(task, "mse", r, layers=[1], directions=["vector"], vector=v, alphas=[0.0, 1.0])
    np.testing.assert_allclose(table["norm"], 2.5)


STEERABLE = [t for t in list_tasks() if len(make_task(t).pieces) >= 2 and make_task(t).target in ("scalar", "vector")]


@pytest.mark.parametrize("name", STEERABLE)
def test_every_steerable_task_can_be_steered(name):
    task, r = _train(name, steps=5, seeds=(0,), depth=1)
    table, spill = steer(task, "mse", r, alphas=[0.0, 1.0], eval_size=32)
    assert set(table["direction"]) == {"mean_diff", "probe", "random", "patch"}
    assert np.isfinite(table["mix"]).all() and len(table) == 4 * 2
