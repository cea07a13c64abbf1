"""Prompt tasks (`testbed.tasks.prompts`) and their baselines (`testbed.tasks.prompt_baselines`):
the closed-form errors of Garg et al. and von Oswald et al., no baseline sees later examples, and
every registered class and shift samples what it says."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from testbed.core.errors import ConfigError
from testbed.tasks.prompt_baselines import BASELINES, baseline_predictions, normalized_error
from testbed.tasks.prompts import SHIFTS, list_function_classes, make_prompt_task

D, K = 5, 20


@pytest.fixture(scope="module")
def linear_prompts():
    return make_prompt_task("linear", d=D, points=K).sample(jax.random.key(0), 4000)


@pytest.fixture(scope="module")
def errors(linear_prompts):
    preds = baseline_predictions(linear_prompts, ("least_squares", "averaging", "one_step_gd", "ridge"))
    return {k: np.asarray(normalized_error(v, linear_prompts).mean(0)) for k, v in preds.items()}


def test_least_squares_is_exact_once_there_are_d_examples(errors):
    assert np.all(errors["least_squares"][D:] < 1e-6)
    assert errors["least_squares"][D - 1] > 0.05  # with d - 1 examples one direction is unknown
    assert np.all(errors["ridge"][D + 3:] < 0.05)


@pytest.mark.parametrize("n", [1, 5, 10, 20])
def test_averaging_and_one_step_gd_have_their_closed_form_errors(errors, n):
    assert errors["averaging"][n] == pytest.approx((D + 1) / n, rel=0.1)
    assert errors["one_step_gd"][n] == pytest.approx((D + 1) / (n + D + 1), rel=0.1)
    assert errors["averaging"][0] == pytest.approx(1.0, rel=0.1) and errors["one_step_gd"][0] == errors["averaging"][0]


def test_knn_averages_the_nearest_labels():
    from testbed.tasks.prompts import Prompts

    x = jnp.array([[[0.0], [1.0], [2.0], [10.0]]])
    p = Prompts(x, jnp.array([[1.0, 2.0, 3.0, 100.0]]), jnp.array([[0.4]]), jnp.array([0.0]),
                jnp.zeros((1, 5), jnp.int32))
    (pred,) = np.asarray(baseline_predictions(p, ("knn",))["knn"])
    np.testing.assert_allclose(pred, [0.0, 1.0, 1.5, 2.0, 2.0])  # 0, 1, 2 then 3 nearest of those seen


def test_lasso_recovers_sparse_maps_from_fewer_examples_than_dimensions():
    p = make_prompt_task("sparse_linear", d=10, points=8, sparsity=2).sample(jax.random.key(1), 500)
    preds = baseline_predictions(p, ("lasso", "least_squares"))
    err = {k: np.asarray(normalized_error(v, p).mean(0)) for k, v in preds.items()}
    assert err["lasso"][8] < 0.5 * err["least_squares"][8]


@pytest.mark.parametrize("name", list(BASELINES))
def test_no_baseline_sees_the_examples_after_n(name):
    p = make_prompt_task("linear", d=3, points=6).sample(jax.random.key(2), 16)
    base = np.asarray(baseline_predictions(p, (name,))[name])
    for n in (0, 2, 4):
        changed = p._replace(x=p.x.at[:, n:].add(3.0), y=p.y.at[:, n:].add(-7.0))
        got = np.asarray(baseline_predictions(changed, (name,))[name])
        np.testing.assert_allclose(got[:, :n + 1], base[:, :n + 1], rtol=1e-5, atol=1e-5)
        assert not np.allclose(got[:, n + 1:], base[:, n + 1:])


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("cls", list_function_classes())
def test_every_class_and_shift_samples_prompts_of_the_right_shape(cls, shift):
    task = make_prompt_task(cls, d=4, points=6)
    p = task.sample(jax.random.key(3), 32, shift)
    k = 12 if shift == "more_points" else 6
    assert p.x.shape == (32, k, 4) and p.y.shape == (32, k) and p.xq.shape == (32, 4) and p.yq.shape == (32,)
    assert p.piece.shape == (32, k + 1)
    assert all(np.isfinite(np.asarray(a)).all() for a in (p.x, p.y, p.xq, p.yq))
    again = task.sample(jax.random.key(3), 32, shift)
    np.testing.assert_array_equal(p.y, again.y)
    assert not np.array_equal(p.y, task.sample(jax.random.key(4), 32, shift).y)
    if shift == "orthogonal":
        np.testing.assert_allclose(np.einsum("nkd,nd->nk", p.x, p.xq), 0.0, atol=1e-5)
    if shift.startswith("scale_"):
        c = float(shift.split("_")[1])
        assert np.sqrt((np.asarray(p.x) ** 2).sum(-1).mean() / 4) == pytest.approx(c, rel=0.15)


def test_half_space_prompts_and_queries_lie_on_opposite_sides():
    p = make_prompt_task("linear", d=3, points=50).sample(jax.random.key(5), 256, "half_space")
    x, q = np.asarray(p.x, np.float64), np.asarray(p.xq, np.float64)
    # The context's mean points along the hyperplane's normal, so the query lies against it.
    assert (np.einsum("nd,nd->n", x.mean(axis=1), q) < 0).mean() > 0.9
    plain = make_prompt_task("linear", d=3, points=50).sample(jax.random.key(5), 256)
    assert 0.3 < (np.einsum("nd,nd->n", np.asarray(plain.x).mean(axis=1), np.asarray(plain.xq)) < 0).mean() < 0.7


def test_piecewise_prompts_mix_pieces_and_skewed_inputs_keep_the_trace():
    p = make_prompt_task("piecewise_linear", d=3, points=40).sample(jax.random.key(6), 64)
    pieces = np.asarray(p.piece)
    np.testing.assert_array_equal(pieces[:, :-1], (np.asarray(p.x)[..., 0] >= 0).astype(int))
    assert 0.3 < pieces.mean() < 0.7
    s = make_prompt_task("linear", d=4, points=200).sample(jax.random.key(7), 64, "skewed")
    assert (np.asarray(s.x) ** 2).sum(-1).mean() == pytest.approx(4.0, rel=0.1)


def test_bad_prompt_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown"):
        make_prompt_task("linear").sample(jax.random.key(0), 2, "sideways")
    with pytest.raises(ConfigError, match="points"):
        make_prompt_task("linear", points=0)
    with pytest.raises(ConfigError, match="sparsity"):
        make_prompt_task("sparse_linear", sparsity=0)
    with pytest.raises(KeyError, match="unknown baselines"):
        baseline_predictions(make_prompt_task("linear").sample(jax.random.key(0), 2), ("oracle",))


@pytest.mark.parametrize("cls,baseline", [pytest.param("relu2", "two_layer_net", marks=pytest.mark.optimized),
                                          ("tree", "greedy_tree")])
def test_the_class_matched_baselines_beat_the_generic_ones(cls, baseline):
    p = make_prompt_task(cls, d=5, points=40).sample(jax.random.key(8), 64)  # errors 0.03 vs 0.26 (256: the same order)
    preds = baseline_predictions(p, (baseline, "least_squares", "knn"))
    err = {k: float(np.asarray(normalized_error(v, p).mean(0))[40]) for k, v in preds.items()}
    assert err[baseline] < 0.5 * min(err["least_squares"], err["knn"]), err
