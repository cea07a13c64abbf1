"""Building a Task from its parts, with every check in one place.

`build_task` is where specs (`testbed.tasks.spec`) and Python tasks meet: it checks that
the pieces cover the domain without overlap, that the splits are non-empty and disjoint
from ``train``, that the functions are finite, and sizes each split's sampling box.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from testbed.core.errors import SpecError
from testbed.tasks.task import (
    MAX_INT_POINTS,
    MIN_RATE,
    TARGET_KINDS,
    Domain,
    Fn,
    Piece,
    Split,
    Task,
    raw_grid,
)


def build_task(*, name: str, description: str, domain: Domain, pieces: list[Piece],
               splits: Mapping[str, tuple[Fn, tuple[float, ...] | None, tuple[float, ...] | None]],
               target: str, out_dim: int | None = None,
               candidates: Mapping[str, Fn] | None = None, params: Mapping[str, float] | None = None,
               source: str = "python", check_points: int = 20000) -> Task:
    """Assemble a Task and check it (the single place where tasks are validated).

    Args:
        splits: name -> (where, low, high); low/high narrow the sampling box
            (None: the domain box). Must contain ``train`` and one OOD split.
        out_dim: target width; inferred from the functions when None.

    Raises:
        SpecError: naming the field (``pieces``, ``splits.NAME``, ...) that is wrong.
    """
    def err(msg: str, fld: str, text: str | None = None) -> SpecError:
        return SpecError(msg, file=None if source == "python" else source, field=fld, text=text)

    if target not in TARGET_KINDS:
        raise err(f"unknown target kind; accepted: {', '.join(TARGET_KINDS)}", "target", target)
    if not pieces:
        raise err("a task needs at least one piece", "pieces")
    names = [p.name for p in pieces]
    if len(set(names)) != len(names):
        raise err("piece names must be unique", "pieces", ", ".join(names))
    if "train" not in splits:
        raise err("a task needs a 'train' split", "splits", ", ".join(splits))
    if len(splits) < 2:
        raise err("a task needs at least one OOD split besides 'train'", "splits", ", ".join(splits))
    if domain.kind == "integers":
        n_all = int(np.prod([h - lo for lo, h in zip(domain.low, domain.high, strict=True)]))
        if n_all > MAX_INT_POINTS:
            raise err(f"integer domain has {n_all} points; at most {MAX_INT_POINTS} accepted", "domain")

    # Check points: the grid plus uniform random points over the domain box.
    rng = np.random.default_rng(12345)
    if domain.kind == "integers":
        check = domain.all_points().astype(np.float32)
    else:
        low, high = np.asarray(domain.low), np.asarray(domain.high)
        rand = low + rng.random((check_points, domain.dim)) * (high - low)
        check = np.concatenate([raw_grid(domain, 4096), rand.astype(np.float32)])
    check_j = jnp.asarray(check)

    masks = [np.asarray(p.where(check_j)) for p in pieces]
    for p, m in zip(pieces, masks, strict=True):
        _is_condition(m, len(check), f"pieces.{p.name}.where", err)
    masks = np.stack(masks)
    counts = masks.sum(0)
    if (counts != 1).any():
        bad = check[np.argmax(counts != 1)]
        kind = "no piece" if counts[np.argmax(counts != 1)] == 0 else "more than one piece"
        raise err(f"pieces must cover the domain without overlap: the point {bad.tolist()} is in {kind} "
                  f"({int((counts != 1).sum())} of {len(check)} checked points are)", "pieces")

    outs = [np.asarray(p.f(check_j)) for p in pieces]
    widths = {o.shape[1] if o.ndim == 2 else 1 for o in outs}
    if len(widths) != 1:
        raise err(f"pieces return targets of different widths {sorted(widths)}", "pieces")
    width = widths.pop()
    if out_dim is None and target != "class":  # class tasks give their class count
        out_dim = width
    for p, o, m in zip(pieces, outs, masks, strict=True):
        vals = o[m]
        if not np.isfinite(vals).all():
            i = np.flatnonzero(m)[np.argmax(~np.isfinite(vals).reshape(len(vals), -1).all(-1))]
            raise err(f"function is not finite at {check[i].tolist()} inside its region", f"pieces.{p.name}.f")
        if target == "class":
            if out_dim is None:
                raise err("class tasks need 'classes' (the number of classes)", "classes")
            if width != 1 or ((vals < 0) | (vals >= out_dim) | (np.round(vals) != vals)).any():
                raise err(f"class targets must be integers in [0, {out_dim})", f"pieces.{p.name}.f")
    if target == "scalar" and width != 1:
        raise err(f"scalar targets must have width 1, got {width}; use target = 'vector'", "target")
    if target == "distribution" and out_dim < 2:
        raise err("distribution targets need at least 2 class logits", "target")

    split_objs = []
    in_split = {}
    for sname, (where, s_low, s_high) in splits.items():
        fld = f"splits.{sname}"
        _is_condition(np.asarray(where(check_j)), len(check), fld, err)
        if domain.kind == "integers":
            m = np.asarray(where(check_j)).astype(bool)
            if not m.any():
                raise err("split is empty: no point of the integer domain satisfies it", fld)
            split_objs.append(Split(sname, where, domain.low, domain.high, float(m.mean()),
                                    points=domain.all_points()[m]))
            in_split[sname] = m
            continue
        if s_low is None and s_high is None:
            s_low, s_high = _bounding_box(domain, np.asarray(where(check_j)).astype(bool), check)
        s_low = tuple(domain.low if s_low is None else s_low)
        s_high = tuple(domain.high if s_high is None else s_high)
        if len(s_low) != domain.dim or len(s_high) != domain.dim or any(
                lo < dlo or h > dh or lo >= h for lo, h, dlo, dh in
                zip(s_low, s_high, domain.low, domain.high, strict=True)):
            raise err(f"sampling box must lie inside the domain {list(domain.low)}..{list(domain.high)} "
                      f"with low < high in each of {domain.dim} dims", fld, f"{list(s_low)}..{list(s_high)}")

        def in_box(raw, lo=s_low, hi=s_high):
            return jnp.all((raw >= jnp.asarray(lo)[None, :]) & (raw <= jnp.asarray(hi)[None, :]), axis=-1)

        u = rng.random((check_points, domain.dim))
        pts = jnp.asarray(np.asarray(s_low) + u * (np.asarray(s_high) - np.asarray(s_low)), jnp.float32)
        rate = float(np.asarray(where(pts)).mean())
        if rate == 0.0:
            raise err(f"split is empty: none of {check_points} random points of its sampling box satisfies it", fld)
        if rate < MIN_RATE:
            raise err(f"split is too small to sample: it covers {rate:.2g} of its sampling box "
                      f"(at least {MIN_RATE} accepted); give it a narrower 'low'/'high' box", fld)
        lower = max(rate - 4 * math.sqrt(rate * (1 - rate) / check_points), rate / 2)

        def where_in_box(raw, where=where, in_box=in_box):
            return where(raw) & in_box(raw)

        split_objs.append(Split(sname, where_in_box, s_low, s_high, lower))
        in_split[sname] = np.asarray(where_in_box(check_j))
    for sname, m in in_split.items():
        if sname != "train" and (m & in_split["train"]).any():
            bad = check[np.argmax(m & in_split["train"])]
            raise err(f"OOD split overlaps 'train', e.g. at {bad.tolist()}", f"splits.{sname}")

    order = ["train"] + [s for s in splits if s != "train"]
    split_objs.sort(key=lambda s: order.index(s.name))
    return Task(name=name, description=description, domain=domain, piece_specs=tuple(pieces),
                split_specs=tuple(split_objs), target=target, out_dim=int(out_dim),
                candidate_fns=tuple((candidates or {}).items()), params=dict(params or {}), source=source)


def _bounding_box(domain: Domain, inside: np.ndarray, points: np.ndarray):
    """A sampling box for a split: the bounding box of the check points inside it, widened
    by two grid spacings and clipped to the domain.

    Rejection sampling from a tighter box needs fewer candidates per batch (the
    ``train`` split of a task with an extrapolation shell is often half its domain).
    Widening by two grid spacings keeps every part of the split that the check grid
    can see; a split whose extent the grid cannot resolve should give its box.
    """
    if not inside.any():
        return None, None
    low, high = np.asarray(domain.low), np.asarray(domain.high)
    per_dim = max(2, int(round(4096 ** (1 / domain.dim)))) if domain.dim <= 2 else 20
    margin = 2 * (high - low) / (per_dim - 1)
    box_low = np.maximum(points[inside].min(0) - margin, low)
    box_high = np.minimum(points[inside].max(0) + margin, high)
    return tuple(float(v) for v in box_low), tuple(float(v) for v in box_high)


def _is_condition(m: np.ndarray, n: int, fld: str, err) -> None:
    """A region's condition must give one true/false per point (a comparison, not a number)."""
    if m.dtype != np.bool_ or m.shape != (n,):
        what = f"a {m.dtype} array of shape {m.shape}" if m.dtype != np.bool_ else f"shape {m.shape}"
        raise err(f"a region must be a condition that is true or false at each point (e.g. 'x < 0'), got {what}",
                  fld)
