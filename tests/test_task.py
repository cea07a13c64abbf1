"""Every registered task: shapes, determinism, splits, ground truth, jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import testbed
from testbed.core.errors import ConfigError

TASKS = testbed.list_tasks()
N = 64


@pytest.fixture(params=TASKS)
def task(request):
    return testbed.make_task(request.param)


def test_at_least_twelve_tasks_with_descriptions():
    assert len(TASKS) >= 12
    for name in TASKS:
        t = testbed.make_task(name)
        assert t.description, name
        assert "train" in t.splits and len(t.splits) >= 2


def test_shapes_and_dtypes(task, key):
    for split in task.splits:
        b = task.sample(key, N, split)
        assert b.x.shape == (N, task.in_dim) and b.x.dtype == jnp.float32
        if task.target in ("scalar", "class"):
            assert b.y.shape == (N,)
        else:
            assert b.y.shape == (N, task.out_dim)
        assert b.y.dtype == (jnp.int32 if task.target == "class" else jnp.float32)
        assert b.piece.shape == (N,) and b.piece.dtype == jnp.int32
        assert ((b.piece >= 0) & (b.piece < len(task.pieces))).all(), "every sampled point is in a piece"
        assert np.isfinite(np.asarray(b.y, np.float64)).all()


def test_deterministic_per_key(task):
    a = task.sample(jax.random.key(1), N)
    b = task.sample(jax.random.key(1), N)
    c = task.sample(jax.random.key(2), N)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    if len(np.unique(np.asarray(task.sample(jax.random.key(3), 4 * N).x), axis=0)) > 1:  # not a one-point split
        assert not np.array_equal(a.x, c.x)


def test_samples_lie_in_their_split_and_ood_is_disjoint_from_train(task, key):
    train = task.split("train")
    for i, name in enumerate(task.splits):
        raw = task.sample_raw(jax.random.fold_in(key, i), 512, name)
        assert np.asarray(task.split(name).where(raw)).all(), f"{name}: sample outside its split"
        if name != "train":
            assert not np.asarray(train.where(raw)).any(), f"{name} overlaps train"


def test_ground_truth_matches_samples(task, key):
    b = task.sample(key, N, task.ood_splits[0])
    # eager and compiled code may differ in the last bits of sin/sqrt
    np.testing.assert_allclose(np.asarray(task(b.x), np.float64), np.asarray(b.y, np.float64), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(task.piece_of(b.x), b.piece)
    np.testing.assert_allclose(task.domain.encode(task.domain.decode(b.x)), b.x)


def test_sampling_under_jit_and_vmap(task, key):
    eager = task.sample(key, N, "train")
    jitted = jax.jit(task.sample, static_argnums=(1, 2))(key, N, "train")
    np.testing.assert_allclose(jitted.x, eager.x, rtol=1e-6)
    keys = jax.random.split(key, 3)
    batched = jax.vmap(lambda k: task.sample(k, N, "train"))(keys)
    assert batched.x.shape == (3, N, task.in_dim)
    for i in range(3):
        np.testing.assert_allclose(batched.x[i], task.sample(keys[i], N, "train").x, rtol=1e-6)


def test_candidates_evaluate(task, key):
    b = task.sample(key, N, "train")
    for name in task.candidates:
        assert task.candidate(name, b.x).shape == b.y.shape


def test_unknown_split_is_a_clear_error(key):
    t = testbed.make_task("sine_line")
    with pytest.raises(ConfigError, match="no split 'nope'.*train"):
        t.sample(key, 4, "nope")


@pytest.mark.parametrize("name,raw,expected", [
    ("sine_line", [[-0.25]], -1.0),          # sin(2 pi * -0.25)
    ("sine_line", [[0.5]], 0.5),
    ("sine_line", [[1.5]], 1.5),             # outside the training region too
    ("step", [[-0.01]], -1.0),
    ("two_slopes", [[2.5]], 7.5),
    ("proxy_correlated", [[0.3, -0.9]], 0.3),
    ("parity", [[3]], 1 - 3 / 256),
    ("parity", [[300]], 300 / 256),
    ("residue_mod3", [[250]], 1.5),          # 250 mod 3 = 1: x/100 - 1
    ("checkerboard", [[-0.5, 0.5]], -1.0),   # saddle: 4 x0 x1
    ("radial", [[0.0, 0.5]], 0.75),
    ("modular_addition", [[20, 5]], 2),
])
def test_known_values(name, raw, expected):
    t = testbed.make_task(name)
    x = t.domain.encode(jnp.asarray(raw, jnp.float32))
    np.testing.assert_allclose(np.asarray(t(x), np.float64), [expected], rtol=1e-5, atol=1e-6)


def test_vector_and_distribution_known_values():
    t = testbed.make_task("vector_rotate_reflect")
    np.testing.assert_allclose(t(jnp.array([[-1.0, 2.0], [1.0, 2.0]])), [[-2.0, -1.0], [1.0, -2.0]])
    d = testbed.make_task("soft_regions")
    np.testing.assert_allclose(d(jnp.array([[0.5]])), [[-2.0, 0.0, 1.5]])


def test_sampling_is_uniform_over_a_split(key):
    t = testbed.make_task("sine_line")
    x = np.asarray(t.sample(key, 20000, "extrapolate").x[:, 0])
    assert ((x < -1) | (x > 1)).all()
    hist, _ = np.histogram(np.abs(x), bins=5, range=(1, 2))
    np.testing.assert_allclose(hist / len(x), 0.2, atol=0.02)
    assert abs((x < 0).mean() - 0.5) < 0.02


def _candidates(t, key, m, split):
    s = t.split(split)
    return np.asarray(jax.random.uniform(key, (m, t.dim), jnp.float32, jnp.asarray(s.low, jnp.float32)[None],
                                         jnp.asarray(s.high, jnp.float32)[None]))


# Rejection sampling ranks the accepted candidates by a scatter or by a search
# (`testbed.tasks.task.first_accepted`, chosen by the candidate count): each test runs both.
HOW = {"scatter": 10**9, "search": 0}


@pytest.fixture(params=sorted(HOW))
def how(request, monkeypatch):
    import testbed.tasks.task as task_mod

    monkeypatch.setattr(task_mod, "SEARCH_FROM", HOW[request.param])  # seen by unjitted `_sample_raw`
    return request.param


@pytest.mark.parametrize("n", [N, 128])
def test_rejection_keeps_the_first_accepted_candidates_in_order(task, how, n, key):
    """A batch is the first n candidates that land in the split (NumPy reference), for every
    split of every task, ranked either way."""
    from testbed.tasks.task import candidates_needed

    for split in task.splits:
        s = task.split(split)
        if s.points is not None:
            continue  # integer splits draw exactly, without rejection
        m = candidates_needed(n, s.rate, rate_floor=1.5e-4)
        cand = _candidates(task, key, m, split)
        want = cand[np.asarray(s.where(jnp.asarray(cand)))][:n]
        np.testing.assert_array_equal(np.asarray(task._sample_raw(key, n, split)), want, err_msg=split)


def test_rejection_shortfall_reuses_accepted_points(key, how, monkeypatch):
    """With too few candidates (forced), accepted points repeat in order: none outside the split."""
    import testbed.tasks.task as task_mod

    t = testbed.make_task("sine_line")
    monkeypatch.setattr(task_mod, "candidates_needed", lambda n, rate, rate_floor=0.0: n // 4)
    raw = np.asarray(t._sample_raw(key, N, "extrapolate"))  # unjitted: sees the patched count
    cand = _candidates(t, key, N // 4, "extrapolate")
    accepted = cand[np.asarray(t.split("extrapolate").where(jnp.asarray(cand)))]
    assert 0 < len(accepted) < N
    np.testing.assert_array_equal(raw, accepted[np.arange(N) % len(accepted)])


def test_rejection_with_nothing_accepted_stays_in_the_sampling_box(key, how, monkeypatch):
    """Forced to draw too few candidates for any to land in a small split, the batch holds
    the candidates themselves (inside the split's sampling box), not placeholder zeros."""
    import testbed.tasks.task as task_mod

    t = testbed.make_task("checkerboard")
    split, m = t.ood_splits[0], 4
    s = t.split(split)
    monkeypatch.setattr(task_mod, "candidates_needed", lambda n, rate, rate_floor=0.0: m)
    cand = _candidates(t, key, m, split)
    assert not np.asarray(s.where(jnp.asarray(cand))).any()  # the case under test: none accepted
    raw = np.asarray(t._sample_raw(key, N, split))
    np.testing.assert_array_equal(raw, cand[np.arange(N) % m])
    assert np.all((raw >= np.asarray(s.low)) & (raw <= np.asarray(s.high)))


def test_first_accepted_refuses_an_unknown_way():
    from testbed.tasks.task import first_accepted

    with pytest.raises(ValueError, match="scatter, search"):
        first_accepted(jnp.zeros((4, 1)), jnp.ones(4, bool), 2, how="sort")


def test_integer_sampling_is_exact_and_uniform(key):
    t = testbed.make_task("residue_mod3")
    raw = np.asarray(t.sample_raw(key, 30000, "held_out"))[:, 0]
    assert set(np.unique(raw)) == set(range(100, 120))
    counts = np.bincount(raw.astype(int) - 100)
    assert counts.min() > 0.8 * counts.mean()


INTEGER_TASKS = [n for n in testbed.list_tasks() if testbed.make_task(n).domain.kind == "integers"]


@pytest.mark.parametrize("task", INTEGER_TASKS)
def test_integer_splits_draw_the_points_at_jax_randint(task, key):
    """An integer split draws ``points[randint(key)]``, inside and outside jit (power-of-two
    splits draw their indices through a reduction: `testbed.tasks.task.draw_indices`)."""
    t = testbed.make_task(task)
    for s in t.split_specs:
        want = np.asarray(s.points, np.float32)[np.asarray(jax.random.randint(key, (97,), 0, len(s.points)))]
        np.testing.assert_array_equal(np.asarray(t.sample_raw(key, 97, s.name)), want)
        np.testing.assert_array_equal(np.asarray(jax.jit(lambda k, s=s: t.sample(k, 97, s.name).x)(key)),
                                      np.asarray(t.domain.encode(jnp.asarray(want))))


def test_make_task_is_cached_and_overrides_apply():
    assert testbed.make_task("sine_line") is testbed.make_task("sine_line")
    t3 = testbed.make_task("sine_line", freq=3.0)
    assert t3 is not testbed.make_task("sine_line")
    np.testing.assert_allclose(t3(jnp.array([[-1 / 6]])), [-1.0], atol=1e-6)  # sin(3 pi * -1/6)


def test_python_task_overrides():
    t = testbed.make_task("lowrank_logits", rows=8, classes=4, rank=1, holdout_every=4)
    assert t.in_dim == 8 and t.out_dim == 4
    logits = np.asarray(t(jnp.eye(8)))
    centred = logits - logits.mean(1, keepdims=True)
    assert np.linalg.matrix_rank(logits, tol=1e-4) == 1 or np.linalg.matrix_rank(centred, tol=1e-4) <= 1
    with pytest.raises(ConfigError, match="rank"):
        testbed.make_task("lowrank_logits", rank=50)


def test_register_task_refuses_duplicates():
    with pytest.raises(ConfigError, match="already registered"):
        testbed.register_task("lowrank_logits")(lambda: None)


def test_user_task_folders_from_the_environment(tmp_path, monkeypatch):
    (tmp_path / "flat.toml").write_text(
        'name = "env_flat"\ndescription = "a constant"\n[domain]\nlow = [0.0]\nhigh = [2.0]\n'
        '[[pieces]]\nname = "c"\nf = "0.5"\n[splits]\ntrain = "x < 1"\nbeyond = "x >= 1"\n')
    monkeypatch.setenv("TESTBED_TASKS", str(tmp_path))
    assert "env_flat" in testbed.list_tasks()
    np.testing.assert_allclose(testbed.make_task("env_flat")(jnp.array([[1.5]])), [0.5])
    monkeypatch.setenv("TESTBED_TASKS", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="TESTBED_TASKS.*is not a folder"):
        testbed.list_tasks()
