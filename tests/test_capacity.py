"""Circuit economics (`testbed.analyses.capacity`): feature capacities against hand-computed
values, the sum bound, the superposition phase change, unit use and sharing, gradient cosines,
a width sweep in a suite, and every multi-piece task measured."""

import dataclasses

import jax
import numpy as np
import pandas as pd
import pytest

import testbed
from testbed.analyses.capacity.measure import USE_TOL, gradient_cosines, sharing, unit_use
from testbed.analyses.capacity.superposition import feature_capacity, train_superposition
from testbed.core.errors import ConfigError
from testbed.tasks.registry import list_tasks, make_task


def test_orthogonal_features_have_capacity_one_and_duplicated_ones_one_half():
    w = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])  # features 0 and 1 orthogonal, feature 2 absent
    np.testing.assert_allclose(feature_capacity(w), [1.0, 1.0, 0.0])
    dup = np.array([[1.0, 1.0], [0.0, 0.0]])  # two features on the same direction
    np.testing.assert_allclose(feature_capacity(dup), [0.5, 0.5])
    anti = np.array([[1.0, -1.0]])  # antipodal: still one direction shared
    np.testing.assert_allclose(feature_capacity(anti), [0.5, 0.5])
    # C_i = (W_i.W_i)^2 / sum_j (W_i.W_j)^2 by hand for a 60-degree pair
    w = np.array([[1.0, 0.5], [0.0, np.sqrt(3) / 2]])
    np.testing.assert_allclose(feature_capacity(w), [1 / (1 + 0.25)] * 2, rtol=1e-6)


def test_the_sum_of_capacities_is_at_most_the_dimension():
    rng = np.random.default_rng(0)
    for m, n in ((2, 5), (3, 10), (5, 5), (4, 20)):
        w = rng.normal(size=(50, m, n))
        total = feature_capacity(w).sum(-1)
        assert (total <= m + 1e-4).all() and (total > 0).all()


@pytest.mark.optimized
def test_sparse_features_go_into_superposition_dense_ones_do_not():
    table, w = train_superposition(8, 2, sparsities=[0.0, 0.99], steps=1500, seeds=1, batch_size=512, lr=3e-3)
    assert w.shape == (2, 1, 2, 8)
    by = table.groupby("sparsity").agg(total=("capacity", "sum"), shown=("represented", "sum"))
    assert by.loc[0.0, "shown"] <= 3  # dense: about m features get a dimension
    assert by.loc[0.99, "shown"] >= 5  # sparse: many more than m share the two dimensions
    assert (by["total"] <= 2 + 1e-4).all()


@pytest.mark.parametrize("kwargs, words", [({"m": 9}, "exceed"), ({"sparsities": [1.0]}, r"\[0, 1\)"),
                                           ({"steps": 0}, "steps"), ({"decay": 0.0}, "decay")])
def test_bad_superposition_settings_are_named(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        train_superposition(**{"n": 8, "m": 2, **kwargs})


def _train(name="context_switch", width=8, steps=300, seeds=(0, 1)):
    return make_task(name), testbed.train(make_task(name), testbed.make_method("mse"),
                                          testbed.make_model("mlp", width=width, depth=2),
                                          testbed.make_optimizer("adam", lr=3e-3), seeds=list(seeds), steps=steps,
                                          evals=2, quiet=True, probe_points=16, eval_size=64)


def test_unit_use_measures_every_unit_and_piece_and_sharing_sums_to_one():
    task, r = _train()
    use = unit_use(task, "mse", r, eval_size=64)
    assert len(use) == 2 * 2 * 8 * 2  # runs x layers x units x pieces
    assert (use["used"] == (use["damage"] > USE_TOL * use["scale"])).all()
    alive = use.groupby(["run", "layer", "unit"])["activation"].transform("sum") > 0
    np.testing.assert_allclose(use[alive].groupby(["run", "layer", "unit"])["share"].sum(), 1.0, rtol=1e-5)
    assert use.loc[~alive, "share"].isna().all()
    sh = sharing(use)
    np.testing.assert_allclose(sh.groupby(["run", "layer"])["fraction"].sum(), 1.0)
    assert use["used"].any()  # a trained model uses some of its units


def test_a_dead_unit_is_used_by_no_piece():
    from flax import nnx

    task, r = _train(seeds=(0,))
    model = nnx.merge(r.graphdef, jax.tree.map(lambda a: np.array(a[0]), r.params))
    model.layers[0].kernel[...][:, 3] = 0.0
    model.layers[0].bias[...][3] = -1.0  # ReLU(-1) = 0 on every input
    dead = dataclasses.replace(r, params=jax.tree.map(lambda a: a[None], nnx.state(model)))
    use = unit_use(task, "mse", dead, eval_size=64)
    unit = use[(use["layer"] == 0) & (use["unit"] == 3)]
    assert (unit["activation"] == 0.0).all() and (unit["damage"] == 0.0).all() and not unit["used"].any()
    assert unit["share"].isna().all()


def test_gradient_cosines_are_bounded_and_every_pair_is_there():
    task, r = _train("checkerboard", steps=30)
    g = gradient_cosines(task, "mse", r, eval_size=64)
    assert len(g) == 2 * 6 and set(g["step"]) == {30}  # runs x pairs of four pieces, at the end
    assert g["cosine"].between(-1 - 1e-6, 1 + 1e-6).all()


def test_gradient_cosines_over_training_read_the_snapshots():
    task = make_task("context_switch")
    r = testbed.train(task, "mse", testbed.make_model("mlp", width=8, depth=1), steps=60, seeds=[0], evals=4,
                      quiet=True, eval_size=32, probe_points=8, snapshots=True)
    g = gradient_cosines(task, "mse", r, eval_size=64)
    assert list(g["step"]) == list(r.eval_steps)
    end = gradient_cosines(task, "mse", dataclasses.replace(r, snapshots=None), eval_size=64)
    np.testing.assert_allclose(g["cosine"].iloc[-1], end["cosine"].iloc[0], rtol=1e-5)


def test_a_width_sweep_suite_says_which_piece_gets_capacity_first(tmp_path):
    from testbed.report.compare import comparison
    from testbed.suites.runner import run_suite
    from testbed.suites.spec import suite_from_spec

    spec = {"name": "cap", "seeds": 2, "analyses": ["capacity"],
            "train": {"steps": 400, "batch_size": 64, "evals": 4, "eval_size": 128, "probe_points": 16},
            "grid": {"tasks": ["context_switch"], "methods": ["mse"],
                     "models": [{"name": "mlp", "width": w, "depth": 1} for w in (1, 4, 16)],
                     "optimizers": [{"name": "adam", "lr": 1e-2}]}}
    suite = suite_from_spec(spec, path="cap.toml")
    run = run_suite(suite, tmp_path, quiet=True)
    comp = comparison(testbed.load_tables(run.root, suite))
    w = comp["capacity_width"]
    assert list(w.columns) == ["task", "piece", "width 1", "width 4", "width 16"]
    first = comp["capacity_first"].set_index("piece")
    assert set(first.index) == {"sine", "line"}
    # the line needs one unit of a ReLU pair; the sine needs many: the line's loss falls first
    assert first.loc["line", "marginal value of a unit"] > first.loc["sine", "marginal value of a unit"]
    assert "unit_sharing" in comp and "capacity_order" in comp and "competition" in comp
    steps = set(testbed.load_tables(run.root, suite)["piece_gradients"]["step"])
    assert len(steps) == 4  # the suite asked the engine for snapshots: a cosine at every evaluation
    found = comp["findings"]
    assert found["finding"].str.contains("capacity goes first to").any()


MULTI = [t for t in list_tasks() if len(make_task(t).pieces) >= 2]


@pytest.mark.parametrize("name", MULTI)
def test_every_multi_piece_task_can_be_measured(name):
    task, r = _train(name, width=4, steps=3, seeds=(0,))
    use = unit_use(task, testbed.make_method("mse"), r, eval_size=16)
    assert set(use["piece"]) == set(task.pieces)
    assert np.isfinite(use["damage"]).all()
    assert isinstance(gradient_cosines(task, "mse", r, eval_size=16), pd.DataFrame)
