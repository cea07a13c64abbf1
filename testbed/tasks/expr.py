"""A small, safe expression language for task specs, compiled to ``jax.numpy``.

Expressions use Python syntax but only this subset of it::

    expr  := number | pi | e | True | False | NAME
           | expr ('+' | '-' | '*' | '/' | '**' | '%') expr | ('-' | '+') expr
           | expr CMP expr [CMP expr ...]        CMP: < <= > >= == != (chains allowed)
           | expr 'and' expr | expr 'or' expr | 'not' expr
           | expr 'if' expr 'else' expr | FUNC '(' expr, ... ')' | '(' expr ')'
    FUNC  := abs sin cos tan tanh exp log sqrt floor ceil round sign   (1 argument)
           | min max (2 or more) | mod (2) | where (3: cond, a, b) | clip (3: a, lo, hi)

``NAME`` is one of the variables given to `compile_expr` or one of its
``constants``. Arithmetic is float32 (ints and bools are cast), ``%`` and
``mod`` are floored like Python's ``%``, ``round`` rounds half to even.
``and``/``or``/``not`` and the conditions of ``where``/``if`` treat a number as
true when it is non-zero; ``and``/``or``/``not`` return booleans (unlike Python,
never an operand), and ``where``/``if`` return booleans when both branches are.
Newlines are allowed only inside brackets, as in Python.

Safety: the text is never given to ``eval``/``exec``/``compile``. It is parsed
with ``ast.parse`` and every node is checked against an allowlist while it is
turned into a tree of closures over ``jnp`` functions. Nothing is computed at
compile time (no constant folding), so ``10**10**10`` cannot hang; it is inf.
"""

from __future__ import annotations

import ast
import dataclasses
import keyword
import math
import numbers
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from functools import reduce

import jax
import jax.numpy as jnp
import numpy as np

from testbed.core.errors import SpecError

MAX_LENGTH = 2000  # characters
MAX_DEPTH = 64  # nesting depth of the tree

_Fn = Callable[[tuple], jax.Array]
_NUM, _BOOL = "num", "bool"
_UNARY = {"abs": jnp.abs, "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan, "tanh": jnp.tanh,
          "exp": jnp.exp, "log": jnp.log, "sqrt": jnp.sqrt, "floor": jnp.floor,
          "ceil": jnp.ceil, "round": jnp.round, "sign": jnp.sign}
_ARITY = {**dict.fromkeys(_UNARY, 1), "min": 2, "max": 2, "mod": 2, "where": 3, "clip": 3}
_VARIADIC = {"min", "max"}  # these take "at least" _ARITY arguments
_FUNCS = ", ".join(sorted(_ARITY))
_BUILTINS = {"pi": np.float32(math.pi), "e": np.float32(math.e)}


def _mod(a: jax.Array, b: jax.Array) -> jax.Array:
    """Floored modulo exactly like Python's ``%`` (and numpy's), signed zeros included."""
    r = jnp.mod(a, b)
    # jnp.mod gives a zero result the dividend's sign; Python gives it the divisor's.
    return jnp.where(r == 0, jnp.copysign(np.float32(0), b), r)


_BINOPS = {ast.Add: jnp.add, ast.Sub: jnp.subtract, ast.Mult: jnp.multiply,
           ast.Div: jnp.true_divide, ast.Pow: jnp.power, ast.Mod: _mod}
_CMPOPS = {ast.Lt: jnp.less, ast.LtE: jnp.less_equal, ast.Gt: jnp.greater,
           ast.GtE: jnp.greater_equal, ast.Eq: jnp.equal, ast.NotEq: jnp.not_equal}
# Plain words for rejected syntax, with a hint where a likely intent exists.
_WORDS = {ast.Attribute: "attribute access", ast.Subscript: "indexing", ast.Slice: "a slice",
          ast.Lambda: "a lambda", ast.ListComp: "a comprehension", ast.SetComp: "a comprehension",
          ast.DictComp: "a comprehension", ast.GeneratorExp: "a generator expression",
          ast.List: "a list", ast.Tuple: "a tuple", ast.Set: "a set", ast.Dict: "a dict",
          ast.JoinedStr: "an f-string", ast.FormattedValue: "an f-string",
          ast.NamedExpr: "assignment (:=)", ast.Starred: "a starred argument (*x)",
          ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield",
          ast.BitAnd: "'&' (use 'and')", ast.BitOr: "'|' (use 'or')",
          ast.BitXor: "'^' (use ** for powers, and/or/not for logic)",
          ast.Invert: "'~' (use 'not')", ast.LShift: "a bit shift", ast.RShift: "a bit shift",
          ast.FloorDiv: "'//' (use floor(a / b))", ast.MatMult: "'@'",
          ast.Is: "'is' (use ==)", ast.IsNot: "'is not' (use !=)",
          ast.In: "'in'", ast.NotIn: "'not in'"}
_TOKENS = re.compile(r"\bnot\b|[-+~]|\S")  # for the pre-parse depth scan


@dataclasses.dataclass(frozen=True)
class Expr:
    """A compiled expression: call it with one array per variable name.

    Attributes:
        text: the source text.
        names: the variable names, in the order of the call's positional arguments.
        used: the variables and constants the expression actually refers to.
        is_predicate: True when the result is boolean (comparison, and/or/not, True/False).
    """

    text: str
    names: tuple[str, ...]
    used: frozenset[str]
    is_predicate: bool
    _fn: _Fn = dataclasses.field(repr=False, compare=False)

    def __call__(self, *columns: jax.Array) -> jax.Array:
        """Evaluate on columns (``columns[i]`` is ``names[i]``, each shape [n]).

        Returns:
            An array of the columns' broadcast shape (shape () when there are no
            variables): bool for predicates, float32 otherwise.
        """
        if len(columns) != len(self.names):
            raise TypeError(f"expression {self.text!r} takes {len(self.names)} columns "
                            f"({', '.join(self.names)}), got {len(columns)}")
        cols = tuple(jnp.asarray(c, jnp.float32) for c in columns)
        shape = jnp.broadcast_shapes(*(c.shape for c in cols)) if cols else ()
        dtype = jnp.bool_ if self.is_predicate else jnp.float32
        return jnp.broadcast_to(jnp.asarray(self._fn(cols), dtype), shape)


def compile_expr(text: str, names: Sequence[str], *, constants: Mapping[str, float] | None = None,
                 field: str | None = None) -> Expr:
    """Check and compile ``text`` into an `Expr`.

    Args:
        text: the expression (see the module docstring for the grammar).
        names: variable names, in the order `Expr.__call__` will receive them.
        constants: named scalar parameters usable in the expression.
        field: the spec field the text came from, for error messages.

    Returns:
        The compiled expression.

    Raises:
        SpecError: for anything not in the language, with what is accepted.
    """
    shown = text if isinstance(text, str) else repr(text)

    def fail(message: str) -> SpecError:
        return SpecError(message, field=field, text=shown)

    names, consts = _check_names(names, constants or {}, fail)
    if not isinstance(text, str):
        raise fail(f"an expression must be a string, not {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise fail(f"expression is {len(text)} characters long; at most {MAX_LENGTH} are accepted")
    if "\x00" in text:
        raise fail("expression contains a NUL character; only printable text is accepted")
    src = text.strip()  # TOML strings often carry stray spaces; ast.parse rejects an indent
    if not src:
        raise fail("expression is empty; write e.g. 'sin(x)' or '0 <= x < 1'")
    _prescan(src, fail)
    try:
        with warnings.catch_warnings(action="ignore"):  # e.g. "invalid escape sequence"
            tree = ast.parse(src, mode="eval")
    except SyntaxError as e:
        where = f"column {e.offset}" if e.offset else "the end"
        where = f"line {e.lineno}, {where}" if "\n" in src else where
        raise fail(f"invalid syntax at {where}: {e.msg}; expressions use Python syntax") from None
    except (RecursionError, MemoryError, ValueError) as e:  # ValueError: e.g. lone surrogates
        raise fail(f"expression cannot be parsed ({type(e).__name__}: {e})") from None
    depth = _depth(tree.body)
    if depth > MAX_DEPTH:
        raise fail(f"expression is nested too deeply ({depth} levels); at most {MAX_DEPTH} "
                   f"levels of operators, calls and brackets are accepted")
    compiler = _Compiler(src, names, consts, fail)
    fn, kind = compiler.build(tree.body)  # recursion is safe: depth <= MAX_DEPTH
    return Expr(text, names, frozenset(compiler.used), kind == _BOOL, fn)


def _check_names(names, constants, fail) -> tuple[tuple[str, ...], dict[str, np.float32]]:
    """Validate variable and constant names; convert constants to float32 scalars."""
    if isinstance(names, str):  # a common slip: "x" instead of ["x"]
        names = (names,)
    names = tuple(names)
    seen: set[str] = set()
    for n in (*names, *constants):
        if not isinstance(n, str) or not n.isidentifier() or keyword.iskeyword(n):
            raise fail(f"{n!r} cannot be a variable or constant name; use identifiers like x0")
        if n in _BUILTINS or n in _ARITY:
            raise fail(f"name {n!r} is reserved (built-in constant or function: pi, e, {_FUNCS})")
        if n in seen:
            raise fail(f"name {n!r} is given twice (as variables or constants); names must be unique")
        seen.add(n)
    consts = {}
    for n, v in constants.items():
        if not isinstance(v, numbers.Real):  # a str like "1.5" is a spec mistake, not a number
            raise fail(f"constant {n!r} must be a number, got {v!r}")
        f = float(v)
        if not math.isfinite(f) or abs(f) > 1e38:
            raise fail(f"constant {n!r} = {v!r} is out of range; finite float32 values are accepted")
        consts[n] = np.float32(f)
    return names, consts


def _prescan(src: str, fail) -> None:
    """Reject text that would nest too deeply, before the parser can choke on it."""
    depth = most = run = longest = 0
    for tok in _TOKENS.findall(src):
        depth += (tok in "([{") - (tok in ")]}")
        most = max(most, depth)
        run = run + 1 if tok in ("-", "+", "~", "not") else 0
        longest = max(longest, run)
    if most > MAX_DEPTH or longest > MAX_DEPTH:
        what = f"{most} nested brackets" if most > MAX_DEPTH else f"{longest} unary operators in a row"
        raise fail(f"expression is nested too deeply ({what}); at most {MAX_DEPTH} levels are accepted")


def _depth(root: ast.AST) -> int:
    """Nesting depth of expression nodes, walked iteratively (no RecursionError)."""
    most, stack = 0, [(root, 1)]
    while stack:
        node, d = stack.pop()
        most = max(most, d)
        for child in ast.iter_child_nodes(node):
            stack.append((child, d + isinstance(child, ast.expr)))
    return most


def _as_num(fn: _Fn, kind: str) -> _Fn:
    return fn if kind == _NUM else (lambda c: jnp.asarray(fn(c), jnp.float32))


def _as_bool(fn: _Fn, kind: str) -> _Fn:
    return fn if kind == _BOOL else (lambda c: jnp.not_equal(fn(c), 0))


class _Compiler:
    """Turns an allowlisted AST into closures; anything unknown is a SpecError."""

    def __init__(self, src: str, names: tuple[str, ...], consts: dict, fail):
        self.src, self.names, self.consts, self.fail = src, names, consts, fail
        self.used: set[str] = set()

    def reject(self, node: ast.AST, what: str | None = None) -> SpecError:
        what = what or _WORDS.get(type(node), f"this syntax ({type(node).__name__})")
        seg = ast.get_source_segment(self.src, node) if hasattr(node, "lineno") else None
        at = f" in {seg!r}" if seg and seg != self.src else ""
        return self.fail(f"{what} is not allowed{at}; only numbers, variables, operators, "
                         f"and/or/not, 'a if c else b' and the functions {_FUNCS} are accepted")

    def accepted_names(self) -> str:
        parts = [f"variables {', '.join(self.names)}"] if self.names else []
        if self.consts:
            parts.append(f"constants {', '.join(self.consts)}")
        return "; ".join([*parts, "pi, e"])

    def build(self, node: ast.AST) -> tuple[_Fn, str]:
        """Return (closure over the column tuple, result kind) for one node."""
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.UnaryOp):
            fn, kind = self.build(node.operand)
            if isinstance(node.op, ast.Not):
                f = _as_bool(fn, kind)
                return (lambda c: jnp.logical_not(f(c))), _BOOL
            if isinstance(node.op, ast.USub):
                f = _as_num(fn, kind)
                return (lambda c: jnp.negative(f(c))), _NUM
            if isinstance(node.op, ast.UAdd):
                return _as_num(fn, kind), _NUM
            raise self.reject(node, _WORDS.get(type(node.op)))
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self.reject(node, _WORDS.get(type(node.op)))
            a, b = (_as_num(*self.build(x)) for x in (node.left, node.right))
            return (lambda c: op(a(c), b(c))), _NUM
        if isinstance(node, ast.BoolOp):
            parts = [_as_bool(*self.build(v)) for v in node.values]
            op = jnp.logical_and if isinstance(node.op, ast.And) else jnp.logical_or
            return (lambda c: reduce(op, (p(c) for p in parts))), _BOOL
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.IfExp):
            return self.where(node.test, node.body, node.orelse)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise self.reject(node)

    def constant(self, node: ast.Constant) -> tuple[_Fn, str]:
        v = node.value
        if isinstance(v, bool):
            b = np.bool_(v)
            return (lambda c: b), _BOOL
        if not isinstance(v, int | float):
            kinds = {str: "a string", bytes: "a bytes literal", complex: "a complex number"}
            raise self.reject(node, kinds.get(type(v), repr(v)))
        # bit_length first: it is O(1), while converting a huge int to float is slow.
        if (isinstance(v, int) and v.bit_length() > 128) or not abs(v) <= 1e38:
            raise self.fail(f"number {ast.get_source_segment(self.src, node)!r} is too "
                            "large; numbers up to 1e38 in absolute value are accepted")
        x = np.float32(v)
        return (lambda c: x), _NUM

    def name(self, node: ast.Name) -> tuple[_Fn, str]:
        n = node.id
        if n in self.names or n in self.consts:
            self.used.add(n)
        if n in self.names:
            i = self.names.index(n)
            return (lambda c: c[i]), _NUM
        x = self.consts.get(n, _BUILTINS.get(n))
        if x is not None:
            return (lambda c: x), _NUM
        if n in _ARITY:
            raise self.fail(f"{n!r} is a function; call it, e.g. {n}(x)")
        raise self.fail(f"unknown name {n!r}; accepted: {self.accepted_names()}")

    def compare(self, node: ast.Compare) -> tuple[_Fn, str]:
        ops = []
        for op in node.ops:
            if type(op) not in _CMPOPS:
                raise self.reject(node, _WORDS.get(type(op)))
            ops.append(_CMPOPS[type(op)])
        # Each operand is evaluated once, as in Python's "a < b < c".
        parts = [_as_num(*self.build(x)) for x in (node.left, *node.comparators)]

        def run(c):
            vals = [p(c) for p in parts]
            return reduce(jnp.logical_and, (op(vals[i], vals[i + 1]) for i, op in enumerate(ops)))
        return run, _BOOL

    def where(self, test: ast.AST, body: ast.AST, orelse: ast.AST) -> tuple[_Fn, str]:
        cond = _as_bool(*self.build(test))
        (a, ka), (b, kb) = self.build(body), self.build(orelse)
        kind = _BOOL if ka == kb == _BOOL else _NUM
        if kind == _NUM:
            a, b = _as_num(a, ka), _as_num(b, kb)
        return (lambda c: jnp.where(cond(c), a(c), b(c))), kind

    def call(self, node: ast.Call) -> tuple[_Fn, str]:
        if not isinstance(node.func, ast.Name):
            raise self.reject(node, "calling the result of an expression")
        n = node.func.id
        if n not in _ARITY:
            known = n in self.names or n in self.consts or n in _BUILTINS
            what = f"{n!r} is a variable, not a function" if known else f"unknown function {n!r}"
            raise self.fail(f"{what}; accepted functions: {_FUNCS}")
        if node.keywords:
            raise self.reject(node, "a keyword argument")
        args = node.args
        if any(isinstance(a, ast.Starred) for a in args):
            raise self.reject(node, _WORDS[ast.Starred])
        want = _ARITY[n]
        if len(args) != want and not (n in _VARIADIC and len(args) > want):
            plural = "argument" if want == 1 else "arguments"
            least = "at least " if n in _VARIADIC else ""
            raise self.fail(f"function {n!r} takes {least}{want} {plural}, got {len(args)}")
        if n == "where":
            return self.where(*args)
        fs = [_as_num(*self.build(a)) for a in args]
        if n in _UNARY:
            f, op = fs[0], _UNARY[n]
            return (lambda c: op(f(c))), _NUM
        if n == "clip":  # max then min, like np.clip, with array-valued bounds
            a, lo, hi = fs
            return (lambda c: jnp.minimum(jnp.maximum(a(c), lo(c)), hi(c))), _NUM
        op = {"min": jnp.minimum, "max": jnp.maximum, "mod": _mod}[n]
        return (lambda c: reduce(op, (f(c) for f in fs))), _NUM
