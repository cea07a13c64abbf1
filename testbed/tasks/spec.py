"""Task specs: one TOML file per task, with expressions in a small safe language.

A spec looks like this (see ``tasks/`` for more)::

    name = "sine_line"
    description = "Sine on the left, a line on the right: which one continues outside?"
    target = "scalar"                    # scalar | vector | distribution | class

    [domain]                             # a box; or kind = "integers" (high exclusive)
    low = [-2.0]
    high = [2.0]

    [params]                             # named constants, overridable by make_task
    freq = 3.0

    [[pieces]]
    name = "sine"
    where = "x < 0"
    f = "sin(freq * pi * x)"             # vector/distribution: a list of expressions

    [[pieces]]
    name = "line"
    where = "x >= 0"
    f = "x"

    [splits]
    train = "abs(x) <= 1"                # a predicate, or a table {where, low, high}
    extrapolate = "abs(x) > 1"

    [candidates]                         # optional: named alternative behaviours
    line_everywhere = "x"

Variables are ``x`` for 1-D tasks and ``x0 .. x{d-1}`` otherwise. Expressions are
compiled by `testbed.tasks.expr` (parsed, checked against an allowlist, never evaluated
as Python). Every error names the file, the field, the offending text and what is
accepted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from testbed.core.catalog import read_spec
from testbed.core.errors import SpecError
from testbed.tasks.build import build_task
from testbed.tasks.expr import compile_expr
from testbed.tasks.task import ENCODINGS, TARGET_KINDS, Domain, Piece, Task

TOP_FIELDS = {"name", "description", "target", "classes", "domain", "params", "pieces", "splits", "candidates"}
DOMAIN_FIELDS = {"kind", "low", "high", "encoding", "scale"}
PIECE_FIELDS = {"name", "where", "f"}
SPLIT_FIELDS = {"where", "low", "high"}


def load_task(path: str | Path, **overrides: float) -> Task:
    """Load and check a task from a TOML spec file.

    Args:
        path: the spec file.
        **overrides: new values for the spec's ``[params]`` constants.

    Returns:
        The checked Task.

    Raises:
        SpecError: naming the file and field of the first problem found.
    """
    path = Path(path)
    return task_from_spec(read_spec(path), source=str(path), default_name=path.stem, overrides=overrides)


def task_from_spec(spec: Mapping[str, Any], *, source: str = "<spec>", default_name: str = "task",
                   overrides: Mapping[str, float] | None = None) -> Task:
    """Build a Task from an already parsed spec mapping (see module docstring)."""

    def err(msg: str, fld: str | None = None, text: Any = None) -> SpecError:
        return SpecError(msg, file=source, field=fld, text=None if text is None else str(text))

    _check_keys(spec, TOP_FIELDS, None, err)
    name = _get(spec, "name", str, err, default=default_name)
    description = _get(spec, "description", str, err, default="")
    target = _get(spec, "target", str, err, default="scalar")
    if target not in TARGET_KINDS:
        raise err(f"unknown target kind; accepted: {', '.join(TARGET_KINDS)}", "target", target)
    classes = spec.get("classes")
    if target == "class" and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 2):
        raise err("class tasks need 'classes', an integer >= 2", "classes", classes)

    domain = _domain(spec.get("domain"), err)
    names = ("x",) if domain.dim == 1 else tuple(f"x{i}" for i in range(domain.dim))

    params = spec.get("params", {})
    if not isinstance(params, dict):
        raise err("'params' must be a table of name = number", "params", params)
    params = dict(params)
    for k, v in params.items():
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise err("params must be numbers", f"params.{k}", v)
    for k, v in (overrides or {}).items():
        if k not in params:
            accepted = ", ".join(params) or "none (this spec has no [params])"
            raise err(f"unknown override {k!r}; accepted params: {accepted}", "params", k)
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise err("override must be a number", f"params.{k}", v)
        params[k] = float(v)
    constants = {k: float(v) for k, v in params.items()}

    def expr(text: Any, fld: str):
        if not isinstance(text, str):
            raise err("expected an expression string", fld, text)
        try:
            e = compile_expr(text, names, constants=constants, field=fld)
        except SpecError as se:
            raise se.located(file=source) from None
        return lambda raw: e(*[raw[:, i] for i in range(len(names))])

    def vector_expr(value: Any, fld: str):
        if isinstance(value, list):
            if target == "scalar" or target == "class":
                raise err(f"{target} targets take one expression, not a list", fld, value)
            if not value:
                raise err("expected a non-empty list of expressions", fld, value)
            fns = [expr(v, f"{fld}[{i}]") for i, v in enumerate(value)]
            return lambda raw: jnp.stack([fn(raw) for fn in fns], axis=-1)
        if target in ("vector", "distribution"):
            raise err(f"{target} targets need a list of expressions, one per output", fld, value)
        return expr(value, fld)

    raw_pieces = spec.get("pieces")
    if not isinstance(raw_pieces, list) or not raw_pieces or not all(isinstance(p, dict) for p in raw_pieces):
        raise err("expected one or more [[pieces]] tables, each with name, where and f", "pieces")
    pieces = []
    for i, p in enumerate(raw_pieces):
        fld = f"pieces[{i}]"
        _check_keys(p, PIECE_FIELDS, fld, err)
        pname = _get(p, "name", str, err, default=f"piece{i}", fld=fld)
        if "f" not in p:
            raise err("each piece needs 'f', its function", f"{fld}.f")
        pieces.append(Piece(pname, expr(p.get("where", "True"), f"{fld}.where"), vector_expr(p["f"], f"{fld}.f")))

    raw_splits = spec.get("splits")
    if not isinstance(raw_splits, dict) or not raw_splits:
        raise err("expected a [splits] table with 'train' and at least one OOD split", "splits")
    splits = {}
    for sname, s in raw_splits.items():
        fld = f"splits.{sname}"
        if isinstance(s, str):
            splits[sname] = (expr(s, fld), None, None)
            continue
        if not isinstance(s, dict):
            raise err("a split is a predicate string or a table {where, low, high}", fld, s)
        _check_keys(s, SPLIT_FIELDS, fld, err)
        low = _vec(s.get("low"), f"{fld}.low", domain.dim, err) if "low" in s else None
        high = _vec(s.get("high"), f"{fld}.high", domain.dim, err) if "high" in s else None
        splits[sname] = (expr(s.get("where", "True"), f"{fld}.where"), low, high)

    raw_cands = spec.get("candidates", {})
    if not isinstance(raw_cands, dict):
        raise err("'candidates' must be a table of name = expression", "candidates", raw_cands)
    candidates = {k: vector_expr(v, f"candidates.{k}") for k, v in raw_cands.items()}

    return build_task(name=name, description=description, domain=domain, pieces=pieces, splits=splits,
                      target=target, out_dim=classes if target == "class" else None,
                      candidates=candidates, params=params, source=source)


MAX_BOUND = 1e6  # |domain bound|: float32 inputs, and integer domains are enumerated


def _domain(d: Any, err) -> Domain:
    if not isinstance(d, dict):
        raise err("expected a [domain] table with low and high", "domain")
    _check_keys(d, DOMAIN_FIELDS, "domain", err)
    kind = d.get("kind", "box")
    if kind not in ("box", "integers"):
        raise err("unknown domain kind; accepted: box, integers", "domain.kind", kind)
    if "low" not in d or "high" not in d:
        raise err("the domain needs 'low' and 'high' (lists, one number per input dimension)", "domain")
    dim = len(d["low"]) if isinstance(d["low"], list) else -1
    low = _vec(d["low"], "domain.low", dim, err)
    high = _vec(d["high"], "domain.high", dim, err)
    if any(lo >= h for lo, h in zip(low, high, strict=True)):
        raise err("each 'low' must be below its 'high'", "domain", f"{list(low)} .. {list(high)}")
    if max(abs(v) for v in low + high) > MAX_BOUND:
        raise err(f"domain bounds must lie within +-{MAX_BOUND:g} (inputs are float32)", "domain",
                  f"{list(low)} .. {list(high)}")
    encoding = d.get("encoding", "scalar")
    if kind == "box":
        if "encoding" in d or "scale" in d:
            raise err("'encoding' and 'scale' apply to integer domains only", "domain")
        return Domain("box", low, high)
    if any(v != int(v) for v in low + high):
        raise err("integer domain bounds must be whole numbers", "domain", f"{list(low)} .. {list(high)}")
    if encoding not in ENCODINGS:
        raise err(f"unknown encoding; accepted: {', '.join(ENCODINGS)}", "domain.encoding", encoding)
    if encoding != "scalar" and min(low) < 0:
        raise err(f"the {encoding} encoding needs low >= 0", "domain.low", list(low))
    scale = d.get("scale", 1.0)
    if not isinstance(scale, int | float) or isinstance(scale, bool) or scale <= 0:
        raise err("scale must be a positive number", "domain.scale", scale)
    return Domain("integers", low, high, encoding, float(scale))


def _vec(v: Any, fld: str, dim: int, err) -> tuple[float, ...]:
    if not isinstance(v, list) or not v or not all(
            isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in v):
        raise err("expected a non-empty list of finite numbers", fld, v)
    if len(v) != dim:
        raise err(f"expected {dim} numbers (one per input dimension)", fld, v)
    return tuple(float(a) for a in v)


def _get(m: Mapping, key: str, typ: type, err, *, default: Any, fld: str | None = None) -> Any:
    v = m.get(key, default)
    if not isinstance(v, typ):
        raise err(f"expected {typ.__name__}", f"{fld}.{key}" if fld else key, v)
    return v


def _check_keys(m: Mapping, allowed: set[str], fld: str | None, err) -> None:
    unknown = sorted(set(m) - allowed)
    if unknown:
        raise err(f"unknown field {unknown[0]!r}; accepted: {', '.join(sorted(allowed))}",
                  f"{fld}.{unknown[0]}" if fld else unknown[0])
