"""Methods: losses equal hand-computed values; CE target encodings round-trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import testbed
from testbed.core.errors import ConfigError, UnknownNameError
from testbed.methods.ce import bin_edges, expectation, hl_gauss, two_hot
from testbed.tasks.task import Batch


def batch(y, piece=None):
    y = jnp.asarray(y)
    return Batch(jnp.zeros((y.shape[0], 1)), y, jnp.zeros(y.shape[0], jnp.int32) if piece is None else piece)


def test_mse_scalar_and_vector_by_hand():
    m = testbed.make_method("mse")
    t = testbed.make_task("sine_line")
    np.testing.assert_allclose(m.loss(t, jnp.array([[1.0], [0.0]]), batch([0.5, -2.0])), [0.25, 4.0])
    v = testbed.make_task("vector_rotate_reflect")
    out = jnp.array([[1.0, 2.0]])
    np.testing.assert_allclose(m.loss(v, out, batch([[0.0, 0.0]])), [2.5])  # mean of 1 and 4


def test_mse_class_regresses_one_hot():
    m = testbed.make_method("mse")
    t = testbed.make_task("modular_addition")
    out = jnp.zeros((1, 23)).at[0, 3].set(1.0)
    np.testing.assert_allclose(m.loss(t, out, batch(jnp.array([3], jnp.int32))), [0.0])
    np.testing.assert_allclose(m.loss(t, out, batch(jnp.array([4], jnp.int32))), [2 / 23])


def test_ce_distribution_is_kl_zero_at_the_target():
    m = testbed.make_method("ce")
    t = testbed.make_task("soft_regions")
    y = jnp.array([[1.0, 0.0, -1.0]])
    np.testing.assert_allclose(m.loss(t, y + 5.0, batch(y)), [0.0], atol=1e-6)  # shift-invariant
    p = jax.nn.softmax(y)[0]
    q = jax.nn.softmax(jnp.zeros(3))
    np.testing.assert_allclose(m.loss(t, jnp.zeros((1, 3)), batch(y)), [float(jnp.sum(p * jnp.log(p / q)))], rtol=1e-5)


def test_ce_class_is_negative_log_likelihood():
    m = testbed.make_method("ce")
    t = testbed.make_task("modular_addition")
    out = jnp.zeros((1, 23))
    np.testing.assert_allclose(m.loss(t, out, batch(jnp.array([7], jnp.int32))), [np.log(23)], rtol=1e-6)


def test_ce_regression_zero_loss_at_encoded_target_and_prediction_is_expectation():
    m = testbed.make_method("ce", bins=32, encoding="two_hot", low=-2.0, high=2.0)
    t = testbed.make_task("sine_line")
    y = jnp.array([0.3, -1.2])
    p = two_hot(y, bin_edges(-2.0, 2.0, 32))
    logits = jnp.log(jnp.maximum(p, 1e-30))
    np.testing.assert_allclose(m.loss(t, logits, batch(y)), [0.0, 0.0], atol=1e-4)
    np.testing.assert_allclose(m.predict(t, logits), y, atol=1e-5)
    assert m.head_dim(t) == 32


@pytest.mark.parametrize("encoding", ["hl_gauss", "two_hot"])
def test_encode_decode_round_trip(encoding):
    edges = bin_edges(-1.0, 1.0, 64)
    y = jnp.linspace(-0.8, 0.8, 101)
    p = two_hot(y, edges) if encoding == "two_hot" else hl_gauss(y, edges, 0.75 * 2.0 / 64)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-5)
    assert (p >= 0).all()
    decoded = expectation(jnp.log(jnp.maximum(p, 1e-30)), edges)
    tol = 1e-5 if encoding == "two_hot" else 2e-3
    np.testing.assert_allclose(decoded, y, atol=tol)


def test_hl_gauss_width_controls_spread():
    edges = bin_edges(-1.0, 1.0, 64)
    narrow, wide = hl_gauss(jnp.array([0.0]), edges, 0.01), hl_gauss(jnp.array([0.0]), edges, 0.2)
    assert narrow.max() > 0.45 and wide.max() < 0.1


def test_make_method_errors_and_cache():
    assert testbed.make_method("ce", bins=8) is testbed.make_method("ce", bins=8)
    with pytest.raises(UnknownNameError, match="unknown method 'nope'.*ce.*mse"):
        testbed.make_method("nope")
    with pytest.raises(ConfigError, match="encoding 'x' unknown; accepted: hl_gauss, two_hot"):
        testbed.make_method("ce", encoding="x")
    with pytest.raises(ConfigError, match="method .mse.: bad arguments"):
        testbed.make_method("mse", bins=3)
    with pytest.raises(ConfigError, match="already registered"):
        testbed.register_method("mse")(lambda: None)
    # a table as in a suite file, given as the name: a clear error, not "unhashable type"
    with pytest.raises(ConfigError, match=r"method: expected a registered name \(a string\), got dict .*'ce'.*"
                                          r"make_method\('name', option=value\)"):
        testbed.make_method({"name": "ce", "encoding": "hl_gauss"})
    with pytest.raises(ConfigError, match=r"method 'ce': option values must be numbers.*\{'bins': \{1, 2\}\}"):
        testbed.make_method("ce", bins={1, 2})


def test_a_registry_gives_threads_one_object():
    # compiled programs are found by identity (a method, a model): threads asking at once share one
    import time
    from concurrent.futures import ThreadPoolExecutor

    from testbed.core.registry import Registry

    things = Registry("thing", object)
    things.register("slow")(lambda: time.sleep(0.05) or object())
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: things.make("slow"), range(8)))
    assert all(m is got[0] for m in got)
