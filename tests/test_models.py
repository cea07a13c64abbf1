"""Every registered model: frozen configs, shapes, seeding, hidden layers, ablation, routing, outgoing."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from testbed.core.errors import ConfigError, UnknownNameError
from testbed.models.registry import list_models, make_model

N, IN, OUT = 16, 3, 2


def _model_names() -> list[str]:
    """Every registered model (the one place to change if the registry moves)."""
    return list_models()


@pytest.fixture(params=_model_names())
def name(request):
    return request.param


WITHOUT_HIDDEN = {"matrix"}  # models with no hidden layer: nothing to ablate, route or read


@pytest.fixture(params=[n for n in _model_names() if n not in WITHOUT_HIDDEN])
def hidden_name(request):
    return request.param


def test_only_the_listed_models_have_no_hidden_layer(name):
    assert (make_model(name).hidden_sizes() == ()) == (name in WITHOUT_HIDDEN)


def _int_fields(cfg) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)
            if isinstance(getattr(cfg, f.name), int) and not isinstance(getattr(cfg, f.name), bool)]


def _bumped(cfg):
    """The same config with every integer field one larger (deeper, wider, higher rank)."""
    return dataclasses.replace(cfg, **{f: getattr(cfg, f) + 1 for f in _int_fields(cfg)})


def _x(key, n=N, d=IN):
    return jax.random.normal(key, (n, d))


def _leaves(module):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(module, nnx.Param))]


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def _differs(a, b):
    return not np.allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_config_is_frozen_hashable_and_named(name):
    cfg = make_model(name)
    assert cfg.name == name  # the engine records model.name in every history row
    assert dataclasses.is_dataclass(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(cfg, dataclasses.fields(cfg)[0].name, 1)
    twin = type(cfg)(**dataclasses.asdict(cfg))
    assert twin is not cfg and twin == cfg and hash(twin) == hash(cfg)
    assert make_model(name) is cfg  # cached: a compiled program closing over it is reused
    assert _int_fields(cfg), "expected at least one integer size field"
    other = _bumped(cfg)
    assert other != cfg and len({cfg, twin, other}) == 2
    assert make_model(name, **dataclasses.asdict(other)) == other


@pytest.mark.parametrize("in_dim,out_dim", [(1, 1), (IN, OUT), (5, 17)])  # 17: dense's fast path
def test_build_gives_outputs_of_shape_n_by_out_dim(name, key, in_dim, out_dim):
    module = make_model(name).build(in_dim, out_dim, rngs=nnx.Rngs(0))
    out = module(_x(key, d=in_dim))
    assert out.shape == (N, out_dim) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()
    assert module(_x(key, n=1, d=in_dim)).shape == (1, out_dim)


def test_same_rngs_same_params_different_rngs_different(name, key):
    cfg = make_model(name)
    a, b, c = (cfg.build(IN, OUT, rngs=nnx.Rngs(s)) for s in (0, 0, 1))
    la, lb, lc = _leaves(a), _leaves(b), _leaves(c)
    assert la and [x.shape for x in la] == [x.shape for x in lc]
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_array_equal(u, v)
    assert any(not np.array_equal(u, v) for u, v in zip(la, lc, strict=True))
    x = _x(key)
    assert _differs(a(x), c(x))


@pytest.mark.parametrize("variant", ["default", "bumped"])
def test_hidden_sizes_match_the_hidden_activations(name, key, variant):
    cfg = make_model(name) if variant == "default" else _bumped(make_model(name))
    module = cfg.build(IN, OUT, rngs=nnx.Rngs(0))
    x = _x(key)
    out, hidden = module(x, return_hidden=True)
    assert [h.shape for h in hidden] == [(N, w) for w in cfg.hidden_sizes()]
    _close(out, module(x))


def test_ablate_with_ones_is_identity_and_zeros_cut_the_layer(hidden_name, key):
    cfg = make_model(hidden_name)
    module = cfg.build(IN, OUT, rngs=nnx.Rngs(0))
    x = _x(key)
    plain = module(x)
    sizes = cfg.hidden_sizes()
    assert sizes
    _close(module(x, ablate=[jnp.ones(w) for w in sizes]), plain)
    _close(module(x, ablate=lambda i, h: None), plain)  # callable form: None leaves the layer alone
    for i, w in enumerate(sizes):
        zeros = [jnp.zeros(w) if j == i else None for j in range(len(sizes))]
        out, hidden = module(x, ablate=zeros, return_hidden=True)
        assert not np.asarray(hidden[i]).any()
        assert _differs(out, plain), f"zeroing hidden layer {i} did not change the outputs"
        # nothing of the input gets past a fully ablated layer: every row is the same
        _close(out, jnp.broadcast_to(out[:1], out.shape))
        # the callable form gives the layer's new values
        _close(module(x, ablate=lambda j, h, i=i: jnp.zeros_like(h) if j == i else None), out)
        half = jnp.arange(w) % 2
        _close(module(x, ablate=lambda j, h, i=i, half=half: h * half[None, :] if j == i else None),
               module(x, ablate=[half if j == i else None for j in range(len(sizes))]))


def test_masks_leave_the_forward_pass_unchanged(name, key):
    cfg = make_model(name)
    module = cfg.build(IN, OUT, rngs=nnx.Rngs(0))
    x = _x(key)
    plain, plain_hidden = module(x, return_hidden=True)
    keys = jax.random.split(jax.random.key(7), len(cfg.hidden_sizes()))
    for masks in ([jax.random.uniform(k, (N, w)) for k, w in zip(keys, cfg.hidden_sizes(), strict=True)],
                  [jnp.zeros((N, w)) for w in cfg.hidden_sizes()]):
        out, hidden = module(x, masks=masks, return_hidden=True)
        _close(out, plain)
        for h, p in zip(hidden, plain_hidden, strict=True):
            _close(h, p)


def _routing_grads(module, x, r, masks):
    """Gradients of a random linear loss w.r.t. every parameter, with and without masks."""
    graphdef, state = nnx.split(module)

    def loss(s, m):
        return jnp.sum(nnx.merge(graphdef, s)(x, masks=m) * r)

    return graphdef, state, jax.grad(loss)(state, masks), jax.grad(loss)(state, None)


def _private_inputs(graphdef, state, x, layer: int):
    """Per unit of hidden ``layer``: boolean masks over every parameter leaf of the entries
    that this unit's activations depend on and no other unit's do (its input-side weights)."""
    rr = jax.random.normal(jax.random.key(3), (x.shape[0],))

    def units(s):
        _, hidden = nnx.merge(graphdef, s)(x, return_hidden=True)
        return rr @ hidden[layer]  # [width]

    jac = jax.tree.leaves(jax.jacrev(units)(state))  # leaves [width, *leaf.shape]
    dep = [np.asarray(j) != 0 for j in jac]
    counts = [d.sum(0) for d in dep]
    private = [[d[u] & (c == 1) for d, c in zip(dep, counts, strict=True)] for u in range(jac[0].shape[0])]
    upstream = [d.any(0) for d in dep]
    return private, upstream


def test_masks_zero_the_gradient_through_masked_units(hidden_name, key):
    cfg = make_model(hidden_name)
    module = cfg.build(IN, OUT, rngs=nnx.Rngs(0))
    x = _x(key)
    r = jax.random.normal(jax.random.key(5), (N, OUT))
    sizes = cfg.hidden_sizes()
    for i, w in enumerate(sizes):
        graphdef, state = nnx.split(module)
        private, upstream = _private_inputs(graphdef, state, x, i)
        _, _, _, g_plain = _routing_grads(module, x, r, None)
        g_plain = [np.asarray(a) for a in jax.tree.leaves(g_plain)]
        # a unit that carries gradient in the plain model
        live = [u for u in range(w) if any(np.abs(g[p]).sum() > 0 for g, p in zip(g_plain, private[u], strict=True))]
        assert live, f"layer {i}: no unit has input-side parameters that get a gradient"
        j = live[0]
        masks = [jnp.ones((N, v)).at[:, j].set(0.0) if k == i else None for k, v in enumerate(sizes)]
        _, _, g_mask, _ = _routing_grads(module, x, r, masks)
        g_mask = [np.asarray(a) for a in jax.tree.leaves(g_mask)]
        for gm, gp, pj, up in zip(g_mask, g_plain, private[j], upstream, strict=True):
            assert not gm[pj].any(), f"layer {i} unit {j}: gradient reached its input-side weights"
            np.testing.assert_allclose(gm[~up], gp[~up], rtol=1e-5, atol=1e-6)  # downstream untouched
        for u in range(w):  # other units' input-side weights get their usual gradient
            if u != j:
                for gm, gp, pu in zip(g_mask, g_plain, private[u], strict=True):
                    np.testing.assert_allclose(gm[pu], gp[pu], rtol=1e-5, atol=1e-6)
        # a whole layer masked: nothing upstream of it learns; the callable form agrees
        full = [jnp.zeros((N, v)) if k == i else None for k, v in enumerate(sizes)]
        _, _, g_full, _ = _routing_grads(module, x, r, full)
        _, _, g_call, _ = _routing_grads(module, x, r, lambda k, h, i=i: jnp.zeros_like(h) if k == i else None)
        for gf, gc, up in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_call), upstream, strict=True):
            assert not np.asarray(gf)[up].any()
            _close(gf, gc)


def test_outgoing_reads_the_hidden_units(hidden_name, key):
    cfg = make_model(hidden_name)
    module = cfg.build(IN, OUT, rngs=nnx.Rngs(0))
    x = _x(key)
    plain = module(x)
    sizes = cfg.hidden_sizes()
    for i, w in enumerate(sizes):
        var = module.outgoing(i)
        assert isinstance(var, nnx.Param) and var.shape[0] == w
        units = np.arange(0, w, 2)
        keep = jnp.ones(w).at[units].set(0.0)
        edited = cfg.build(IN, OUT, rngs=nnx.Rngs(0))  # the same weights, in a module of its own
        v = edited.outgoing(i)
        v[...] = v[...].at[units].set(0.0)
        want = module(x, ablate=[keep if j == i else None for j in range(len(sizes))])
        _close(edited(x), want)
        assert _differs(edited(x), plain)
        _close(module(x), plain)
    for bad in (len(sizes), -1):
        with pytest.raises(IndexError):
            module.outgoing(bad)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as e:
        make_model("cnn")
    assert isinstance(e.value, KeyError) and e.value.name == "cnn"
    for known in _model_names():
        assert known in str(e.value)


def test_bad_values_name_the_field(name):
    cfg = make_model(name)
    for f in _int_fields(cfg):
        for bad in (0, -1, True, 2.0):
            with pytest.raises(ConfigError, match=rf"model\.{f}\b"):
                make_model(name, **{f: bad})
    for f in [f.name for f in dataclasses.fields(cfg) if isinstance(getattr(cfg, f.name), str)]:
        with pytest.raises(ConfigError, match=rf"model\.{f}\b.*'nope'"):
            make_model(name, **{f: "nope"})
    with pytest.raises(ConfigError, match="no_such_field"):
        make_model(name, no_such_field=1)


def test_mlp_activation_error_lists_the_accepted_ones():
    from testbed.models.activations import ACTIVATIONS

    with pytest.raises(ConfigError, match="model.activation") as e:
        make_model("mlp", activation="swishy")
    for act in ACTIVATIONS:
        assert act in str(e.value)
