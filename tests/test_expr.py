"""Tests for the safe expression language in `testbed.tasks.expr`."""

from __future__ import annotations

import math
import re
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.core.errors import SpecError
from testbed.tasks.expr import MAX_DEPTH, MAX_LENGTH, Expr, compile_expr

F32 = np.float32
X = np.array([-2.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.5, 3.0], F32)
Y = np.array([1.0, -2.0, 0.0, 0.25, -0.5, 3.0, 1.5, -1.0, 2.0], F32)
FREQ = 2.0


def run(text: str, x=X, y=None) -> np.ndarray:
    y = Y[: len(x)] if y is None else y
    e = compile_expr(text, ["x", "y"], constants={"freq": FREQ})
    return np.asarray(e(jnp.asarray(x), jnp.asarray(y)))


# ---------------------------------------------------------------------------- hand examples
def _npmin(*a):
    return np.minimum.reduce(np.broadcast_arrays(*a))


NUMERIC = [
    ("x + y", lambda x, y: x + y), ("x - y", lambda x, y: x - y), ("x * y", lambda x, y: x * y),
    ("x / 4", lambda x, y: x / 4), ("x ** 2", lambda x, y: x ** 2),
    ("x % 2", lambda x, y: np.mod(x, 2)), ("x % -2", lambda x, y: np.mod(x, -2)),
    ("mod(x, 1.5)", lambda x, y: np.mod(x, 1.5)), ("-x", lambda x, y: -x), ("+x", lambda x, y: x),
    ("abs(x)", lambda x, y: np.abs(x)), ("sin(x)", lambda x, y: np.sin(x)),
    ("cos(x)", lambda x, y: np.cos(x)), ("tan(x)", lambda x, y: np.tan(x)),
    ("tanh(x)", lambda x, y: np.tanh(x)), ("exp(x)", lambda x, y: np.exp(x)),
    ("log(abs(x) + 1)", lambda x, y: np.log(np.abs(x) + 1)),
    ("sqrt(abs(x))", lambda x, y: np.sqrt(np.abs(x))), ("floor(x)", lambda x, y: np.floor(x)),
    ("ceil(x)", lambda x, y: np.ceil(x)), ("round(x)", lambda x, y: np.round(x)),
    ("sign(x)", lambda x, y: np.sign(x)), ("min(x, y)", lambda x, y: np.minimum(x, y)),
    ("max(x, y)", lambda x, y: np.maximum(x, y)), ("min(x, y, 0.5)", lambda x, y: _npmin(x, y, 0.5)),
    ("max(x, y, 0, -1)", lambda x, y: np.maximum.reduce([x, y, 0 * x, -1 + 0 * x])),
    ("clip(x, -1, y)", lambda x, y: np.minimum(np.maximum(x, -1), y)),
    ("where(x > 0, x, y)", lambda x, y: np.where(x > 0, x, y)),
    ("where(x, 1, 2)", lambda x, y: np.where(x != 0, 1, 2)),
    ("x if x > y else y * 2", lambda x, y: np.where(x > y, x, y * 2)),
    ("x if x > 0 else y if y > 0 else 0", lambda x, y: np.where(x > 0, x, np.where(y > 0, y, 0))),
    ("sin(freq * pi * x)", lambda x, y: np.sin(F32(FREQ) * F32(np.pi) * x)),
    ("e ** x", lambda x, y: np.power(F32(np.e), x)), ("1e-3 * x", lambda x, y: F32(1e-3) * x),
    ("(x > 0) * 2 + (y < 0)", lambda x, y: (x > 0) * 2.0 + (y < 0)),
    # precedence and associativity follow Python
    ("-x ** 2", lambda x, y: -(x ** 2)), ("2 ** -1 + 0 * x", lambda x, y: 0.5 + 0 * x),
    ("2 ** 3 ** 2", lambda x, y: 512.0 + 0 * x), ("1 + 2 * x - y / 2", lambda x, y: 1 + 2 * x - y / 2),
    ("-7 % 3 + 7 % -3", lambda x, y: 2.0 + -2.0 + 0 * x),
]
PREDICATES = [
    ("x < y", lambda x, y: x < y), ("x <= y", lambda x, y: x <= y), ("x > y", lambda x, y: x > y),
    ("x >= y", lambda x, y: x >= y), ("x == 0.5", lambda x, y: x == 0.5),
    ("x != 0.5", lambda x, y: x != 0.5),
    ("0 <= x < 1", lambda x, y: (0 <= x) & (x < 1)),
    ("-1 < x <= y < 3", lambda x, y: (-1 < x) & (x <= y) & (y < 3)),
    ("x > 0 and y > 0", lambda x, y: (x > 0) & (y > 0)),
    ("x > 0 or y > 0", lambda x, y: (x > 0) | (y > 0)),
    ("not x > 0", lambda x, y: ~(x > 0)), ("not x", lambda x, y: x == 0),
    ("x and y", lambda x, y: (x != 0) & (y != 0)), ("x or y", lambda x, y: (x != 0) | (y != 0)),
    ("not x > 0 and y > 0", lambda x, y: ~(x > 0) & (y > 0)),
    ("x > 0 or y > 0 and x < -1", lambda x, y: (x > 0) | ((y > 0) & (x < -1))),
    ("x > 0 if y > 0 else x < 0", lambda x, y: np.where(y > 0, x > 0, x < 0)),
    ("where(y, x > 0, False)", lambda x, y: (y != 0) & (x > 0)),
    ("True", lambda x, y: np.ones_like(x, bool)), ("False", lambda x, y: np.zeros_like(x, bool)),
]


@pytest.mark.parametrize("text,ref", NUMERIC, ids=[t for t, _ in NUMERIC])
def test_numeric_matches_numpy(text, ref):
    out = run(text)
    assert out.dtype == np.float32 and out.shape == X.shape
    assert not compile_expr(text, ["x", "y"], constants={"freq": FREQ}).is_predicate
    np.testing.assert_allclose(out, np.asarray(ref(X, Y), F32), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text,ref", PREDICATES, ids=[t for t, _ in PREDICATES])
def test_predicates_are_bool_and_match_numpy(text, ref):
    out = run(text)
    assert out.dtype == np.bool_ and out.shape == X.shape
    assert compile_expr(text, ["x", "y"]).is_predicate
    np.testing.assert_array_equal(out, ref(X, Y))


def test_mod_and_division_edge_cases_follow_python():
    a = np.array([-4.0, 4.0, -1.0, 1.0, 0.0, -3.0, 3.0, -0.0, 6.0], F32)
    # Zero results take the divisor's sign, exactly like Python's float %.
    for d in (2.0, -2.0):
        want = [math.copysign(1.0, v % d) < 0 for v in a.tolist()]
        assert np.signbit(run(f"x % {d}", x=a)).tolist() == want
        assert np.signbit(run(f"mod(x, {d})", x=a)).tolist() == want
    np.testing.assert_array_equal(run("x / 0", x=a[:5]), [-np.inf, np.inf, -np.inf, np.inf, np.nan])
    assert np.isnan(run("log(x)", x=a)[0]) and np.isnan(run("sqrt(x)", x=a)[0])
    halves = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49, 1.51, -0.51], F32)
    np.testing.assert_array_equal(run("round(x)", x=halves),
                                  [0, 2, 2, -0.0, -2, -2, 0, 2, -1])  # half to even, like numpy


@pytest.mark.parametrize("text,value,dtype", [("1", 1.0, np.float32), ("pi", np.pi, np.float32),
                                              ("e", np.e, np.float32), ("freq", FREQ, np.float32),
                                              ("2 * 3 + 1", 7.0, np.float32),
                                              ("True", True, np.bool_), ("1 < 2", True, np.bool_)])
def test_constant_expressions_broadcast_to_columns(text, value, dtype):
    out = run(text)
    assert out.shape == X.shape and out.dtype == dtype
    np.testing.assert_allclose(out, np.full(X.shape, value, dtype))


def test_expr_attributes():
    e = compile_expr("sin(freq * x0) + 1", ["x0", "x1"], constants={"freq": 2.0, "amp": 1.0})
    assert isinstance(e, Expr)
    assert e.text == "sin(freq * x0) + 1" and e.names == ("x0", "x1")
    assert e.used == frozenset({"x0", "freq"}) and not e.is_predicate
    with pytest.raises(AttributeError):
        e.text = "x1"  # frozen
    with pytest.raises(TypeError, match="takes 2 columns"):
        e(jnp.zeros(3))


def test_int_columns_are_cast_to_float32():
    e = compile_expr("n / 2 + (n % 3)", ["n"])
    out = e(jnp.arange(5, dtype=jnp.int32))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, np.arange(5) / 2 + np.arange(5) % 3)


def test_surrounding_whitespace_and_newlines_are_fine():
    np.testing.assert_allclose(run("  x + y \n"), X + Y)
    np.testing.assert_allclose(run("(x\n + y)"), X + Y)  # newlines inside brackets, as in Python
    with pytest.raises(SpecError, match="line 1"):
        run("x +\n y")


def test_works_under_jit_and_vmap():
    e = compile_expr("where(0 <= x < 1, sin(x) * freq, x % 2) + max(x, y)", ["x", "y"],
                     constants={"freq": 3.0})
    p = compile_expr("x > 0 and not y > 0", ["x", "y"])
    c = compile_expr("pi", ["x", "y"])
    x, y = jnp.asarray(X), jnp.asarray(Y)
    for f in (e, p, c):
        eager = np.asarray(f(x, y))
        np.testing.assert_allclose(np.asarray(jax.jit(f)(x, y)), eager, rtol=1e-6)
        np.testing.assert_allclose(np.asarray(jax.vmap(f)(x, y)), eager, rtol=1e-6)
        assert jax.jit(f)(x, y).dtype == eager.dtype


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text,needles", [
    ("y", ["unknown name 'y'", "variables x", "constants freq", "pi, e"]),
    ("foo(x)", ["unknown function 'foo'", "abs, ceil, clip", "where"]),
    ("where(x, 1)", ["function 'where' takes 3 arguments, got 2"]),
    ("sin(x, x)", ["function 'sin' takes 1 argument, got 2"]),
    ("min(x)", ["function 'min' takes at least 2 arguments, got 1"]),
    ("x(1)", ["'x' is a variable, not a function", "accepted functions"]),
    ("sin", ["'sin' is a function", "sin(x)"]),
    ("x.real + 1", ["attribute access", "'x.real'", "functions abs"]),
    ("x ^ 2", ["'^'", "use **"]), ("x & x", ["use 'and'"]), ("~x", ["use 'not'"]),
    ("x // 2", ["floor(a / b)"]), ("x is 1", ["use =="]),
    ("where(x, 1, y=2)", ["keyword argument"]),
    ("x +* 2", ["invalid syntax at column", "Python syntax"]),
    ("sin(x", ["invalid syntax", "never closed"]),
    ("", ["empty"]), ("   ", ["empty"]),
    ("1" * 39, ["too large", "1e38"]), ("1e39", ["too large"]), ("1e999", ["too large"]),
    ("x + " * 600 + "x", [f"at most {MAX_LENGTH}"]),
])
def test_error_messages_say_what_is_wrong_and_what_is_accepted(text, needles):
    with pytest.raises(SpecError) as info:
        compile_expr(text, ["x"], constants={"freq": 1.0}, field="pieces[1].f")
    err = info.value
    assert err.field == "pieces[1].f" and err.text == text
    assert "pieces[1].f" in str(err)
    for needle in needles:
        assert needle in err.message, (needle, err.message)


@pytest.mark.parametrize("names,constants,needle", [
    (["x", "x"], {}, "given twice"), (["x"], {"x": 1.0}, "given twice"),
    (["pi"], {}, "reserved"), (["x"], {"sin": 1.0}, "reserved"), (["x-1"], {}, "identifiers"),
    (["x"], {"k": float("nan")}, "out of range"), (["x"], {"k": "1.5"}, "must be a number"),
    (["x"], {"k": 1e39}, "out of range"), (["x"], {"k": None}, "must be a number"),
])
def test_bad_names_and_constants(names, constants, needle):
    with pytest.raises(SpecError, match=needle):
        compile_expr("1", names, constants=constants)


def test_depth_limit_is_exact():
    x = jnp.asarray(X)
    np.testing.assert_allclose(compile_expr("-" * (MAX_DEPTH - 1) + "x", ["x"])(x), -X)
    np.testing.assert_allclose(compile_expr("(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH, ["x"])(x), X)
    np.testing.assert_allclose(compile_expr("+".join(["x"] * MAX_DEPTH), ["x"])(x), X * MAX_DEPTH,
                               rtol=1e-6)
    for text in ["-" * MAX_DEPTH + "x", "(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1),
                 "+".join(["x"] * (MAX_DEPTH + 1)), "sin(" * 65 + "x" + ")" * 65]:
        with pytest.raises(SpecError, match="nested too deeply"):
            compile_expr(text, ["x"])


def test_huge_exponent_compiles_and_is_inf_without_hanging():
    start = time.perf_counter()
    e = compile_expr("10**10**10", ["x"])
    assert np.all(np.isinf(np.asarray(e(jnp.asarray(X)))))
    assert time.perf_counter() - start < 5
    np.testing.assert_allclose(run("1e38 + 0 * x"), np.full(X.shape, 1e38, F32))
    with pytest.raises(SpecError, match="too large"):
        compile_expr("9" * 100, ["x"])


ATTACKS = [
    "x.__class__", "().__class__.__bases__", "x.__class__.__bases__[0].__subclasses__()",
    "lambda: 1", "[i for i in x]", "{i for i in x}", "(i for i in x)", "{i: i for i in x}",
    "'abc'", "b'abc'", "f'{x}'", "open('f')", "globals()", "locals()", "eval('1')",
    "exec('1')", "getattr(x, 'real')", "(x:=1)", "x[0]", "x[0:1]", "{1: 2}", "[1, 2]", "{1}",
    "(1, 2)", "()", "sin(*x)", "None", "...", "1j", "x if True", "x = 1", "import os",
    "await x", "(yield x)", "x @ x", "x in x", "x << 1", "sin(x)(1)", "(lambda: 1)()",
    "(" * 10000 + "x" + ")" * 10000, "-" * 10000 + "x", "not " * 5000 + "x",
    "-" * 1000 + "x", "not " * 400 + "x", "(" * 900 + "x" + ")" * 900,
    "+".join(["1"] * 900), "x" + "**x" * 500, "x if x else " * 160 + "x",
    "x" * (MAX_LENGTH + 1), "x\x00", "x + \x00", "\ud800", "x\n\n\nimport os",
]


@pytest.mark.parametrize("text", ATTACKS, ids=[repr(a[:30]) for a in ATTACKS])
def test_attacks_and_junk_are_rejected_with_spec_error(text):
    with pytest.raises(SpecError):
        compile_expr(text, ["x"], field="f")


def test_parser_warnings_are_silenced():
    # Python warns about e.g. invalid escapes while parsing; the user gets the SpecError only.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(SpecError, match="a string is not allowed"):
            compile_expr('"\\d"', ["x"])
        with pytest.raises(SpecError, match="calling the result"):
            compile_expr("1(2)", ["x"])


def test_import_attack_has_no_side_effect(tmp_path):
    target = tmp_path / "pwned"
    text = f"__import__('os').system('touch {target}')"
    with pytest.raises(SpecError):
        compile_expr(text, ["x"])
    with pytest.raises(SpecError, match="unknown function '__import__'"):
        compile_expr("__import__(x)", ["x"])
    assert not target.exists()


@pytest.mark.parametrize("value", [5, None, b"x", ["x"], 1.5])
def test_non_string_text_is_rejected(value):
    with pytest.raises(SpecError, match="must be a string"):
        compile_expr(value, ["x"])


# ---------------------------------------------------------------------------- properties
VARS = ("x0", "x1", "x2")
CONSTS = {"c": 1.5}
LITERALS = ["0", "1", "2", "3", "0.5", "2.5", "10", "0.25", "pi", "e", "c"]
N = len(X)  # same shape as the hand examples, so compiled kernels are shared


def _num(node):
    text, ref, kind = node
    return (text, (lambda env: ref(env).astype(F32)) if kind == "bool" else ref, "num")


def _truth(node):
    text, ref, kind = node
    return (text, ref if kind == "bool" else (lambda env: ref(env) != 0), "bool")


def _ref_min(a, b):
    # XLA orders -0 < +0 (IEEE 754-2019 minimum); numpy returns either zero.
    lo = np.where(a < b, a, np.where(b < a, b, np.where(np.signbit(a), a, b)))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, lo).astype(F32)


def _ref_max(a, b):
    hi = np.where(a > b, a, np.where(b > a, b, np.where(np.signbit(a), b, a)))
    return np.where(np.isnan(a) | np.isnan(b), np.nan, hi).astype(F32)


def _ref_sign(a):
    return np.where(a == 0, a, np.sign(a)).astype(F32)  # keeps -0, like jnp.sign


def _ref_pow(a, b):
    # C99, Python and XLA: (-inf) ** y is +inf or +0 unless y is an odd integer; numpy says nan.
    odd = np.mod(b, 2) == 1
    return np.where(np.isneginf(a) & ~odd, np.power(-a, b), np.power(a, b)).astype(F32)


def _call(name, args, fn):
    args = [_num(a) for a in args]  # arguments of functions are numbers (bools count as 0/1)
    return (f"{name}({', '.join(a[0] for a in args)})",
            lambda env: fn(*(a[1](env) for a in args)).astype(F32), "num")


def _binop(a, op, b, fn):
    a, b = _num(a), _num(b)
    return (f"({a[0]} {op} {b[0]})", lambda env: fn(a[1](env), b[1](env)), "num")


def _select(text, cond, a, b):
    """where / if-else: boolean when both branches are, else numeric."""
    if a[2] != "bool" or b[2] != "bool":
        a, b = _num(a), _num(b)
    return (text, lambda env: np.where(cond[1](env), a[1](env), b[1](env)), a[2])


CMP = {"<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal,
       "==": np.equal, "!=": np.not_equal}
# Ops that are correctly rounded (or exact) in both numpy and XLA, so results agree bit
# for bit and may feed discontinuous ops (floor, comparisons, ...) without flaky flips.
EXACT_OPS = ["+", "-", "*", "neg", "abs", "min", "max", "clip", "floor", "ceil", "round", "sign",
             "%", "mod", "where", "ifexp", "bool"]
# Ops whose last bits differ between libraries: their results only feed continuous ops.
INEXACT_OPS = ["/", "**", "sin", "cos", "tan", "tanh", "exp", "log", "sqrt", "+", "-", "*",
               "min", "max", "neg", "where"]
UNARY_NP = {"floor": np.floor, "ceil": np.ceil, "round": np.round, "sign": _ref_sign,
            "abs": np.abs, "sin": np.sin, "cos": np.cos, "tan": np.tan, "tanh": np.tanh,
            "exp": np.exp, "log": np.log, "sqrt": np.sqrt}


def _leaf(draw):
    if draw(st.booleans()):
        v = draw(st.sampled_from(VARS))
        return (v, lambda env: env[v], "num")
    t = draw(st.sampled_from(LITERALS))
    value = F32({"pi": np.pi, "e": np.e, "c": CONSTS["c"]}.get(t) or float(t))
    return (t, lambda env: np.full(N, value, F32), "num")


@st.composite
def bool_expr(draw, depth):
    """Predicates whose inputs are all exact (see EXACT_OPS)."""
    kind = draw(st.sampled_from(["cmp", "const", "and", "or", "not", "ifexp"] if depth else ["cmp"]))
    if kind == "const":
        v = draw(st.booleans())
        return (str(v), lambda env: np.full(N, v), "bool")
    if kind == "cmp":
        parts = [_num(draw(exact_expr(max(depth - 1, 0)))) for _ in range(draw(st.integers(2, 3)))]
        ops = [draw(st.sampled_from(sorted(CMP))) for _ in parts[1:]]
        text = parts[0][0] + "".join(f" {o} {p[0]}" for o, p in zip(ops, parts[1:], strict=True))

        def ref(env):
            vals = [p[1](env) for p in parts]
            return np.logical_and.reduce([CMP[o](vals[i], vals[i + 1]) for i, o in enumerate(ops)])
        return (f"({text})", ref, "bool")
    # and / or / not / conditions accept numbers too (true when non-zero)
    sub = st.one_of(bool_expr(depth - 1), exact_expr(depth - 1)).map(_truth)
    if kind == "not":
        a = draw(sub)
        return (f"(not {a[0]})", lambda env: ~a[1](env), "bool")
    if kind == "ifexp":
        c, a, b = draw(sub), draw(bool_expr(depth - 1)), draw(bool_expr(depth - 1))
        return _select(f"({a[0]} if {c[0]} else {b[0]})", c, a, b)
    parts = [draw(sub) for _ in range(draw(st.integers(2, 3)))]
    fn = np.logical_and if kind == "and" else np.logical_or
    return ("(" + f" {kind} ".join(p[0] for p in parts) + ")",
            lambda env: fn.reduce([p[1](env) for p in parts]), "bool")


@st.composite
def exact_expr(draw, depth):
    """Numbers built only from exact ops; may be a predicate used as a number."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return _leaf(draw)
    return _build(draw, draw(st.sampled_from(EXACT_OPS)), exact_expr(depth - 1), depth)


@st.composite
def any_expr(draw, depth):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(exact_expr(min(depth, 1)))
    op = draw(st.sampled_from(INEXACT_OPS))
    # sin(1618.2) swings with the last bit of its argument: periodic ops take exact inputs.
    sub = exact_expr(depth - 1) if op in ("sin", "cos", "tan") else any_expr(depth - 1)
    return _build(draw, op, sub, depth)


def _build(draw, op, sub, depth):
    if op in ("+", "-", "*", "/", "%"):
        fn = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.true_divide,
              "%": np.mod}[op]
        return _binop(draw(sub), op, draw(sub), fn)
    if op == "**":  # tame exponents: a large one would amplify last-bit differences
        exponent = draw(st.sampled_from(["2", "3", "0.5", "(-1)", "x1"]))
        base = _num(draw(sub))
        value = None if exponent == "x1" else F32(exponent.strip("()"))
        return (f"({base[0]} ** {exponent})",
                lambda env: _ref_pow(base[1](env), env["x1"] if value is None else value), "num")
    if op == "neg":
        a = _num(draw(sub))
        return (f"(-{a[0]})", lambda env: -a[1](env), "num")
    if op in UNARY_NP:
        return _call(op, [draw(sub)], UNARY_NP[op])
    if op in ("min", "max"):
        args = [draw(sub) for _ in range(draw(st.integers(2, 3)))]
        pair = _ref_min if op == "min" else _ref_max
        return _call(op, args, lambda *v: _reduce(pair, v))
    if op == "clip":
        return _call(op, [draw(sub), draw(sub), draw(sub)],
                     lambda a, lo, hi: _ref_min(_ref_max(a, lo), hi))
    if op == "mod":
        return _call(op, [draw(sub), draw(sub)], np.mod)
    if op == "bool":  # a predicate, possibly used in arithmetic by the caller
        return draw(bool_expr(depth - 1))
    cond = _truth(draw(st.one_of(bool_expr(depth - 1), exact_expr(depth - 1))))
    a, b = draw(sub), draw(sub)
    text = (f"where({cond[0]}, {a[0]}, {b[0]})" if op == "where"
            else f"({a[0]} if {cond[0]} else {b[0]})")
    return _select(text, cond, a, b)


def _reduce(fn, values):
    out = values[0]
    for v in values[1:]:
        out = fn(out, v)
    return out


def _columns(seed):
    rng = np.random.default_rng(seed)
    cols = rng.uniform(-3, 3, size=(len(VARS), N)).astype(F32)
    # Exact special values exercise the discontinuities (mod, floor, round, ==).
    cols[:, :5] = rng.permuted(np.tile([0.0, 1.0, -1.0, 0.5, -2.5], (len(VARS), 1)), axis=1)
    return cols


@settings(max_examples=100, deadline=None)
@given(node=st.one_of(any_expr(4), bool_expr(3)), seed=st.integers(0, 2**32 - 1))
def test_random_expressions_match_numpy_reference(node, seed):
    text, ref, kind = node
    cols = _columns(seed)
    e = compile_expr(text, VARS, constants=CONSTS)
    out = np.asarray(e(*(jnp.asarray(c) for c in cols)))
    with np.errstate(all="ignore"):
        want = np.broadcast_to(ref(dict(zip(VARS, cols, strict=True))), (N,))
    assert e.is_predicate == (kind == "bool")
    assert e.used == set(re.findall(r"[A-Za-z_]\w*", text)) & {*VARS, *CONSTS}
    assert out.shape == (N,)
    if kind == "bool":
        assert out.dtype == np.bool_
        np.testing.assert_array_equal(out, want, err_msg=text)
    else:
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=text)


PYISH = "x0123456789+-*/()<>=!.,_ abcdefghijklmnopqrstuvwxyz[]{}'\"\\:;@#$^&|~\n\t"
TOKENS = ["x", "1", "2.5", "1e3", "+", "-", "*", "/", "**", "%", "(", ")", ",", "<", "==", "not",
          "and", "or", "if", "else", "sin", "where", "min", "clip", "pi", "True", "lambda", ".",
          "__class__", "[", "]", ":", "=", "'", "e", " ", "~", "^", "9" * 45, "__import__"]


def _compiles_or_spec_error(text):
    try:
        e = compile_expr(text, ["x"], constants={"k": 2.0}, field="f")
    except SpecError as err:
        assert err.field == "f"
        return
    out = e(jnp.asarray(X))  # whatever compiles must also evaluate
    assert out.shape == X.shape
    assert out.dtype == (jnp.bool_ if e.is_predicate else jnp.float32)


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.text(max_size=60), st.text(alphabet=PYISH, max_size=60),
                 st.lists(st.sampled_from(TOKENS), max_size=25).map(" ".join),
                 st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)))
def test_junk_text_compiles_or_raises_spec_error(text):
    _compiles_or_spec_error(text)
