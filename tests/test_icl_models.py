"""Sequence models on prompt tasks (`testbed.models.sequence`, `testbed.training.prompt_train`):
no position sees a later label, both models train, and one linear self-attention layer reaches
the optimum of one step of gradient descent (von Oswald et al. 2023)."""

from __future__ import annotations

import jax
import numpy as np
import pandas as pd
import pytest
from flax import nnx

from testbed.core.errors import ConfigError
from testbed.models.sequence import LinearAttention, Transformer
from testbed.tasks.prompts import make_prompt_task
from testbed.training.optim import Optimizer
from testbed.training.prompt_train import query_predictions, train_prompts

MODELS = [Transformer(width=16, depth=2, heads=2, max_points=9), LinearAttention(max_points=8)]


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
def test_no_position_sees_a_later_example(cfg):
    model = cfg.build(3, rngs=nnx.Rngs(0))
    p = make_prompt_task("linear", d=3, points=8).sample(jax.random.key(0), 4)
    base = np.asarray(model(p.x, p.y))
    assert base.shape == (4, 8)
    for i in (0, 3, 6):
        changed = np.asarray(model(p.x.at[:, i + 1:].add(5.0), p.y.at[:, i:].add(-3.0)))  # y_i and later
        np.testing.assert_allclose(changed[:, :i + 1], base[:, :i + 1], rtol=1e-5, atol=1e-5)
        assert not np.allclose(changed[:, i + 1:], base[:, i + 1:])
    q = np.asarray(query_predictions(lambda _, x, y: model(x, y), None, p))
    assert q.shape == (4, 9) and np.isfinite(q).all()


@pytest.mark.parametrize("cfg", [c for c in MODELS if hasattr(c.build(2, rngs=nnx.Rngs(0)), "queries")],
                         ids=lambda c: c.name)
def test_a_one_pass_query_is_the_query_placed_at_every_position(cfg):
    """A model's ``queries`` (every N's prediction of the query in one pass) gives what the
    model gives with the query at position N, pass by pass, up to rounding; and it sees no
    example after the N-th."""
    model = cfg.build(3, rngs=nnx.Rngs(1))
    p = make_prompt_task("linear", d=3, points=8).sample(jax.random.key(0), 16)
    each = np.asarray(query_predictions(lambda _, x, y: model(x, y), None, p))
    once = np.asarray(query_predictions(None, None, p, lambda _, x, y, xq: model.queries(x, y, xq)))
    assert once.shape == each.shape == (16, 9)
    np.testing.assert_allclose(once, each, rtol=1e-5, atol=1e-5)
    later = np.asarray(model.queries(p.x.at[:, 4:].add(5.0), p.y.at[:, 4:].add(-3.0), p.xq))
    np.testing.assert_array_equal(later[:, :5], once[:, :5])  # N <= 4 sees examples 1..4 only
    assert not np.allclose(later[:, 5:], once[:, 5:])


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
def test_both_models_train_and_lower_the_loss(cfg):
    task = make_prompt_task("linear", d=3, points=8)
    r = train_prompts(task, cfg, steps=500, batch_size=32, seeds=2, optimizer=Optimizer(name="adam", lr=3e-3),
                      evals=2, eval_prompts=64, shifts=("none", "scale_2"))
    assert r.loss.shape == (2, 500)
    # (the loss averages every position, those with fewer examples than d included: it cannot go far)
    assert r.loss[:, -50:].mean() < 0.85 * r.loss[:, :50].mean()
    h = r.history[(r.history["shift"] == "none") & (r.history["step"] == 500)].groupby("n")["error"].mean()
    assert h[8] < 0.8 * h[0]  # 8 examples tell it more than none
    h = r.history
    assert set(h["shift"]) == {"none", "scale_2"} and set(h["n"]) == set(range(9)) and set(h["seed"]) == {0, 1}
    assert set(r.baselines["baseline"]) == {"least_squares", "averaging", "one_step_gd", "knn"}


@pytest.mark.parametrize("cfg", MODELS, ids=lambda c: c.name)
def test_the_same_seeds_give_the_same_numbers(cfg):
    """(a short run: the numbers of a step do not depend on how many follow)"""
    task = make_prompt_task("linear", d=3, points=8)
    first, again = (train_prompts(task, cfg, steps=30, batch_size=16, seeds=[0, 5], evals=1, eval_prompts=16,
                                  baselines=None) for _ in range(2))
    np.testing.assert_array_equal(first.loss, again.loss)
    pd.testing.assert_frame_equal(first.history, again.history)
    pd.testing.assert_frame_equal(first.probes, again.probes)
    assert not np.array_equal(first.loss[0], first.loss[1])  # two seeds, two runs


@pytest.mark.optimized
def test_linear_attention_reaches_the_one_step_gd_optimum():
    d, k = 5, 20
    task = make_prompt_task("linear", d=d, points=k)
    r = train_prompts(task, LinearAttention(max_points=k), steps=2000, batch_size=128, seeds=2, loss_at="last",
                      optimizer=Optimizer(name="adam", lr=3e-3), evals=1, eval_prompts=1024)
    h = r.history
    err = h[(h.n == k) & (h.step == 2000)]["error"].to_numpy()
    assert err == pytest.approx(np.full(2, (d + 1) / (k + d + 1)), rel=0.1)
    gd = r.baselines[(r.baselines.baseline == "one_step_gd") & (r.baselines.n == k)]["error"].item()
    assert err.mean() == pytest.approx(gd, rel=0.1)  # the same prompts' one-step GD


def test_bad_settings_are_refused():
    task = make_prompt_task("linear", d=3, points=4)
    with pytest.raises(ConfigError, match="loss_at"):
        train_prompts(task, LinearAttention(max_points=4), steps=2, loss_at="middle")
    with pytest.raises(ConfigError, match="shifts"):
        train_prompts(task, LinearAttention(max_points=4), steps=2, shifts=("sideways",))
    with pytest.raises(ConfigError, match="heads"):
        Transformer(width=10, heads=3)
    with pytest.raises(ConfigError, match="max_points"):
        Transformer(width=8, heads=2, max_points=3).build(3, rngs=nnx.Rngs(0))(
            *task.sample(jax.random.key(0), 2)[:2])


@pytest.mark.optimized
def test_a_linear_attention_layer_behaves_like_one_step_gd():
    """The trained layer is closest to one-step GD among the baselines once it has examples."""
    task = make_prompt_task("linear", d=4, points=12)
    r = train_prompts(task, LinearAttention(max_points=12), steps=1500, batch_size=128, seeds=1, loss_at="last",
                      optimizer=Optimizer(name="adam", lr=3e-3), evals=1, eval_prompts=512)
    c = r.closest[(r.closest.n == 12) & (r.closest["shift"] == "none")].set_index("baseline")
    assert c["distance"].idxmin() == "one_step_gd" and c.loc["one_step_gd", "fraction"] > 0.5
    assert np.isclose(r.closest.groupby(["seed", "shift", "n"])["fraction"].sum(), 1.0).all()


def test_a_curriculum_grows_the_dimensions_and_the_prompts():
    from testbed.training.prompt_train import Curriculum

    task = make_prompt_task("linear", d=4, points=8)
    p = task.sample(jax.random.key(0), 16, active=2)
    assert not np.asarray(p.x)[..., 2:].any() and np.asarray(p.x)[..., :2].any()
    cur = Curriculum(start_d=1, start_points=2, every=100, add_d=1, add_points=3)
    assert [tuple(map(int, cur.at(t, 4, 8))) for t in (0, 99, 100, 250, 10_000)] == [(1, 2), (1, 2), (2, 5), (3, 8),
                                                                                    (4, 8)]
    r = train_prompts(task, LinearAttention(max_points=8), steps=400, batch_size=64, seeds=1, loss_at="last",
                      optimizer=Optimizer(name="adam", lr=3e-3), evals=1, eval_prompts=256, curriculum=cur)
    assert np.isfinite(r.loss).all() and r.config["curriculum"]["every"] == 100
    h = r.history.groupby("n")["error"].mean()
    assert h[8] < h[0]
    with pytest.raises(ConfigError, match="curriculum.every"):
        Curriculum(every=0)


def test_evaluations_are_evenly_spaced_and_end_at_the_last_step():
    task = make_prompt_task("linear", d=2, points=3)
    r = train_prompts(task, LinearAttention(max_points=3), steps=10, batch_size=8, seeds=1, evals=3, eval_prompts=8,
                      baselines=None)
    assert sorted(r.history["step"].unique()) == [3, 7, 10] and r.closest.empty
