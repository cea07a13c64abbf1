"""Measurements for gradient routing (Cloud et al. 2024, arXiv 2410.04332) on a RunResult.

* `ablate_blocks`: per-piece loss with each block of a hidden layer ablated.
* `localization`: how much more ablating a piece's own block hurts that piece than
  the other pieces.
* `retrain_after_ablation` and `recovery_table`: ablate a block in the parameters,
  fine-tune on every piece, and time each piece's recovery.
* `piece_identification`: can the piece be read off which block is most active?

Blocks come from the routing method that trained the model, or are given
explicitly (``blocks=``) so a plainly trained model can be measured with the same
block sizes as a baseline. ``blocks`` accepts a ``routing`` `Method`, a
`BlockSpec`, or anything `testbed.methods.routing.block_spec` accepts (with
``routed="all"`` and no shared units).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from flax import nnx

from testbed.analyses.forward import final_ctx as _ctx
from testbed.analyses.forward import forward as _forward
from testbed.core.errors import ConfigError
from testbed.methods.base import Method, make_method
from testbed.methods.routing import BlockSpec, base_of, block_spec, routing_of, routing_parts
from testbed.tasks.metrics import metric_names, task_metrics
from testbed.tasks.task import Task
from testbed.training.engine import EVAL_KEY
from testbed.training.result import RunResult

ABLATION_MODES = ("zero", "mean")
# Default seed of the analyses' own train-split batch (`ablate_blocks`, `piece_identification`):
# drawn as key(ANALYSIS_KEY) itself, so it is a fresh sample of the train split, not the
# engine's train eval set (fold_in(key(EVAL_KEY), 0)); `_pre_ablation_loss` re-creates that one.
ANALYSIS_KEY = 0


def _method_of(result: RunResult) -> Method:
    return make_method(result.config["method"], **result.config.get("method_hparams", {}))


def resolve_blocks(task: Task, blocks: Any, method: Method | str | None = None) -> BlockSpec:
    """The `BlockSpec` named by ``blocks`` (see module doc); ``None`` takes it from
    ``method``, which must then be a ``routing`` method."""
    if isinstance(blocks, BlockSpec):
        if blocks.piece_names != tuple(task.pieces):
            raise ConfigError(f"blocks: spec for pieces {list(blocks.piece_names)}, task {task.name!r} has "
                              f"{list(task.pieces)}")
        return blocks
    if isinstance(blocks, Method) or blocks is None:
        m = blocks if blocks is not None else (make_method(method) if method is not None else None)
        if m is None or routing_of(m) is None:
            raise ConfigError(f"blocks: needed for a model not trained with 'routing' (method "
                              f"{getattr(m, 'name', m)!r}); accepted: a routing Method, a BlockSpec, or a "
                              f"block list such as {list(task.pieces)}")
        return routing_parts(m, task)[2]
    return block_spec(task, blocks)


def _eval_batch(task: Task, eval_size: int, key: int):
    return task.sample(jax.random.key(key), eval_size, "train")


def _check_layer(layer: int, n_hidden: int) -> None:
    if not isinstance(layer, int) or not 0 <= layer < n_hidden:
        raise ConfigError(f"layer={layer!r}: the model has {n_hidden} hidden layer(s); "
                          f"accepted: 0..{n_hidden - 1}")


def ablate_blocks(task: Task, method: Method | str, result: RunResult, *, blocks: Any = None, layer: int = 0,
                  mode: str = "zero", eval_size: int = 1024, key: int = ANALYSIS_KEY) -> pd.DataFrame:
    """Per-piece loss and task metrics with each block of a hidden layer ablated.

    Data: ``eval_size`` examples of the train split drawn with ``jax.random.key(key)``,
    the same for every run and block. ``zero`` multiplies the block's units by 0;
    ``mean`` replaces each of them by its mean activation over that batch (per run).

    Args:
        task: the task the model was trained on.
        method: the method it was trained with (a routing method is judged by its
            base method's loss).
        result: the trained runs.
        blocks: the block layout (see module doc); default: the routing method's.
        layer: hidden layer whose units are ablated.
        mode: ``zero`` or ``mean``.

    Returns:
        DataFrame with columns run, seed, block, piece, metric, value: one row per
        run, block (``"none"`` = nothing ablated; ``"shared"`` when there are shared
        units), piece present in the batch, and metric (``loss`` and the task
        metrics). ``df.attrs["own_block"]`` maps each routed piece to its block.
    """
    method = make_method(method)
    if mode not in ABLATION_MODES:
        raise ConfigError(f"mode={mode!r}; accepted: {', '.join(ABLATION_MODES)}")
    spec = resolve_blocks(task, blocks, method)
    judge = base_of(method)
    batch = _eval_batch(task, eval_size, key)
    width = _layer_width(task, judge, result, batch, layer)
    units = spec.units(width)
    names = ["none", *units]
    keep = np.ones((len(names), width), np.float32)
    for j, n in enumerate(names[1:], start=1):
        keep[j, units[n]] = 0.0
    m_names = ("loss", *metric_names(task))
    steps = int(result.config.get("steps", 1))
    vals = np.asarray(_ablated_metrics(task, judge, result.graphdef, layer, mode == "mean", m_names, steps)(
        result.params, batch, jnp.asarray(keep)))  # [R, B, N, M]
    piece = np.asarray(batch.piece)
    present = [p for p in range(len(task.pieces)) if (piece == p).any()]
    means = np.stack([vals[:, :, piece == p, :].mean(axis=2) for p in present], axis=2)  # [R, B, P, M]
    r, b, p, m = (a.ravel() for a in np.meshgrid(*(np.arange(s) for s in means.shape), indexing="ij"))
    seeds = result.runs["seed"].to_numpy()
    df = pd.DataFrame({"run": r, "seed": seeds[r], "block": np.asarray(names, dtype=object)[b],
                       "piece": np.asarray([task.pieces[q] for q in present], dtype=object)[p],
                       "metric": np.asarray(m_names, dtype=object)[m],
                       "value": means[r, b, p, m].astype(np.float64)})
    df.attrs["own_block"] = spec.own_block
    df.attrs["layer"], df.attrs["mode"] = layer, mode
    return df


def _layer_width(task: Task, judge: Method, result: RunResult, batch, layer: int) -> int:
    """Width of hidden layer ``layer`` (checked to exist), from shapes only."""
    params0 = jax.tree.map(lambda a: a[0], result.params)
    hidden = jax.eval_shape(lambda p: _forward(task, judge, result.graphdef, p, batch, _ctx(result))[1], params0)
    _check_layer(layer, len(hidden))
    return int(hidden[layer].shape[-1])


@functools.lru_cache(maxsize=64)
def _ablated_metrics(task: Task, judge: Method, graphdef, layer: int, mean: bool, m_names: tuple[str, ...],
                     steps: int):
    """jit(params [R], batch, keep [B, W]) -> per-example metrics [R, B, N, M]."""
    ctx = _ctx(steps)

    def one(params, batch, keep_row):
        mu = None
        if mean:
            _, hidden = _forward(task, judge, graphdef, params, batch, ctx)
            mu = jnp.mean(hidden[layer], axis=0, keepdims=True)
        keep = keep_row[None, :]

        def ablate(i, h):
            if i != layer:
                return None
            return h * keep if mu is None else h * keep + (1.0 - keep) * mu

        out, _ = _forward(task, judge, graphdef, params, batch, ctx, ablate)
        per_ex = {"loss": judge.loss(task, out, batch), **task_metrics(task, judge.predict(task, out), batch.y)}
        return jnp.stack([per_ex[m] for m in m_names], axis=-1)

    per_run = jax.vmap(one, in_axes=(None, None, 0))  # over blocks
    return jax.jit(jax.vmap(per_run, in_axes=(0, None, None)))  # over runs


def localization(ablation: pd.DataFrame, *, metric: str = "loss", own: Mapping[str, str] | None = None,
                 baseline: pd.DataFrame | None = None, eps: float = 1e-6) -> pd.DataFrame:
    """Localization score per run and routed piece, from `ablate_blocks` output.

    With ``L(b, p)`` the mean ``metric`` on piece p with block b ablated and
    ``b(p)`` the block piece p routes into::

        own   = L(b(p), p) - L(none, p)
        other = mean over pieces q not routed into b(p) of [L(b(p), q) - L(none, q)]
        score = max(own, 0) / (max(own, 0) + max(other, 0))       (the own share of the damage)

    so the score is bounded: 1 means ablating p's block hurts only p, 0.5 that it hurts p as
    much as the others, 0 that it hurts only the others (NaN when it hurts nothing). Means
    over runs are meaningful (the earlier ratio ``own / (other + 1e-6)`` reached 10^5 when the
    others were untouched). Compute it on a plainly trained model with the same blocks for
    the baseline.

    Args:
        ablation: `ablate_blocks` output.
        metric: which metric's increase to compare.
        own: piece -> own block; default ``ablation.attrs["own_block"]``, else the
            block named like the piece.
        baseline: `ablate_blocks` output for a baseline (plain) model; adds a
            ``baseline_score`` column (its score for the same piece, mean over runs).
        eps: damage below it counts as none (so float noise cannot decide a share).

    Returns:
        DataFrame: run, seed, piece, block, own_increase, other_increase, score
        (and baseline_score).
    """
    own = dict(own if own is not None else ablation.attrs.get("own_block") or {})
    d = ablation[ablation["metric"] == metric]
    if d.empty:
        raise ConfigError(f"metric={metric!r}: not in the ablation table; accepted: "
                          f"{', '.join(map(str, ablation['metric'].unique()))}")
    tab = d.pivot_table(index=["run", "seed", "block"], columns="piece", values="value", observed=True)
    pieces = list(tab.columns)
    rows = []
    for (run, seed), t in tab.groupby(level=["run", "seed"]):
        t = t.droplevel(["run", "seed"])
        base = t.loc["none"]
        for p in pieces:
            b = own.get(p, p)
            if b not in t.index:
                continue
            inc = t.loc[b] - base
            others = [q for q in pieces if q != p and own.get(q, q) != b]  # not routed into b
            own_inc = float(inc[p])
            other_inc = float(np.mean([inc[q] for q in others])) if others else 0.0
            rows.append({"run": run, "seed": seed, "piece": p, "block": b, "own_increase": own_inc,
                         "other_increase": other_inc,
                         "score": own_share(own_inc, other_inc, eps)})
    out = pd.DataFrame(rows, columns=["run", "seed", "piece", "block", "own_increase", "other_increase", "score"])
    if baseline is not None:
        b = localization(baseline, metric=metric, own=own, eps=eps).groupby("piece")["score"].mean()
        out["baseline_score"] = out["piece"].map(b)
    return out


def own_share(own: float, other: float, eps: float = 1e-6) -> float:
    """The own share of the damage, ``own+ / (own+ + other+)`` in [0, 1]; NaN when neither is
    above ``eps``."""
    a, b = max(own, 0.0), max(other, 0.0)
    return float("nan") if a + b <= eps else a / (a + b)


def ablate_in_params(result: RunResult, units: Sequence[int] | np.ndarray, *, layer: int = 0) -> Any:
    """A copy of ``result.params`` with the outgoing weights of ``units`` of hidden
    layer ``layer`` set to zero in every run (the module's ``outgoing(layer)``)."""
    module = nnx.merge(result.graphdef, jax.tree.map(np.array, result.params))  # writable copies
    if not hasattr(module, "outgoing"):
        raise ConfigError(f"model {type(module).__name__} has no outgoing(layer); cannot ablate in parameters")
    try:
        var = module.outgoing(layer)
    except IndexError as e:
        raise ConfigError(f"layer={layer!r}: {e}") from None
    w = np.array(var.get_value())
    w[:, np.asarray(units, int)] = 0.0  # axis 0 is the run, axis 1 the hidden unit
    var.set_value(w)
    return nnx.state(module)


def retrain_after_ablation(task: Task, method: Method | str, result: RunResult, block: str | Sequence[str], *,
                           steps: int, lr: float, blocks: Any = None, layer: int = 0,
                           batch_size: int | None = None, evals: int = 21, eval_size: int | None = None,
                           probe_points: int = 16, optimizer: Any = None, quiet: bool = True) -> RunResult:
    """Ablate a block in the parameters, then fine-tune every run on all pieces.

    The outgoing weights of the block's units (``layer``) are zeroed, and training
    resumes from there with the *base* method (no routing) on the train split,
    every run with its own seed, for ``steps`` updates at learning rate ``lr``. The
    model config, optimizer (unless given), batch size and eval size default to
    ``result``'s, so the history's per-piece train loss is on the same evaluation
    points as the original run's: step 0 is the ablated model, later steps the
    recovery curve.

    Returns:
        The fine-tuning RunResult; ``config["ablation"]`` records the block(s),
        units, layer and each run's pre-ablation per-piece train loss (``pre``:
        ``{run: {piece: loss}}``), which `recovery_table` compares against.
    """
    from testbed.models.registry import make_model
    from testbed.training.engine import train
    from testbed.training.optim import Optimizer

    method = make_method(method)
    spec = resolve_blocks(task, blocks, method)
    names = [block] if isinstance(block, str) else list(block)
    width = _layer_width(task, base_of(method), result, _eval_batch(task, 2, ANALYSIS_KEY), layer)  # shapes only
    units = spec.units(width)
    unknown = [b for b in names if b not in units]
    if not names or unknown:
        raise ConfigError(f"block={block!r}: unknown block(s) {unknown}; accepted: {', '.join(units)}")
    cfg = result.config
    eval_size = eval_size or int(cfg["eval_size"])
    chosen = np.concatenate([units[b] for b in names])
    edited = ablate_in_params(result, chosen, layer=layer)
    model = make_model(cfg["model"], **cfg["model_config"])
    opt = optimizer or Optimizer(**cfg["optimizer"])
    out = train(task, base_of(method), model, opt, steps=steps,
                batch_size=batch_size or int(cfg["batch_size"]), seeds=[int(s) for s in result.runs["seed"]],
                lr=lr, init_params=edited, evals=evals, eval_size=eval_size, probe_points=probe_points,
                quiet=quiet)
    pre = {}
    if eval_size == int(cfg["eval_size"]):
        f = result.final()
        f = f[(f["split"] == "train") & (f["metric"] == "loss") & (f["piece"] != "all")]
        pre = {int(r): {str(p): float(v) for p, v in zip(g["piece"], g["value"], strict=True)}
               for r, g in f.groupby("run", observed=True)}
    else:  # evaluate the unablated model on the new run's eval points instead
        pre = _pre_ablation_loss(task, method, result, eval_size)
    out.config["ablation"] = {"blocks": names, "layer": layer, "units": [int(u) for u in chosen],
                              "ablated_pieces": [task.pieces[p] for b in names if b in spec.names
                                                 for p in spec.members[spec.names.index(b)]],
                              "pre": pre}
    return out


def _pre_ablation_loss(task: Task, method: Method, result: RunResult, eval_size: int) -> dict:
    batch = task.sample(jax.random.fold_in(jax.random.key(EVAL_KEY), task.splits.index("train")), eval_size,
                        "train")  # the engine's train eval set (`engine._sample_eval`)
    judge, ctx = base_of(method), _ctx(result)
    loss = np.asarray(jax.vmap(lambda p: judge.loss(task, _forward(task, judge, result.graphdef, p, batch, ctx)[0],
                                                    batch))(result.params))
    piece = np.asarray(batch.piece)
    return {r: {task.pieces[p]: float(loss[r, piece == p].mean()) for p in range(len(task.pieces))
                if (piece == p).any()} for r in range(loss.shape[0])}


def recovery_table(result: RunResult, ablated_pieces: Sequence[str] | str | None = None, *, frac: float = 0.1,
                   tol: float | None = None, pre: Mapping | None = None) -> pd.DataFrame:
    """Steps until each piece's train loss recovers after an ablation.

    Per run, with ``pre_p`` a piece's loss before the ablation and ``start_p`` right
    after it (step 0 of ``result``), piece p has recovered at the first evaluation
    step where ``loss_p <= pre_p + tol``; by default ``tol = frac * max_q (start_q -
    pre_q)``, a fraction of the run's largest ablation damage (so the most damaged
    piece must win back ``1 - frac`` of its damage, and pieces the ablation barely
    touched count as recovered from the start).

    Args:
        result: a `retrain_after_ablation` result.
        ablated_pieces: the pieces whose block was ablated (default: the recorded ones).
        frac: default tolerance as a fraction of the largest damage.
        tol: absolute tolerance in loss units (overrides ``frac``).
        pre: ``{run: {piece: loss}}`` before the ablation; default
            ``result.config["ablation"]["pre"]``.

    Returns:
        DataFrame: run, seed, piece, ablated, pre, start, tol, recovery_step (NaN if
        not within the run), recovered, and per run ``ratio``: mean recovery step of
        the ablated pieces over that of the other pieces, the latter floored at the
        first evaluation step after 0 (NaN when a piece did not recover).
    """
    info = result.config.get("ablation", {})
    pre = pre if pre is not None else info.get("pre")
    if not pre:
        raise ConfigError("pre: no pre-ablation losses recorded; pass pre={run: {piece: loss}}")
    if ablated_pieces is None:
        ablated_pieces = info.get("ablated_pieces", [])
    ablated = {ablated_pieces} if isinstance(ablated_pieces, str) else set(ablated_pieces)
    h = result.history
    h = h[(h["split"] == "train") & (h["metric"] == "loss") & (h["piece"] != "all")]
    known = [str(p) for p in h["piece"].unique()]
    if ablated - set(known):
        raise ConfigError(f"ablated_pieces: unknown {sorted(ablated - set(known))}; accepted: {', '.join(known)}")
    if tol is not None and not tol >= 0:
        raise ConfigError(f"tol={tol!r}; accepted: a number >= 0 or None")
    steps = np.sort(h["step"].unique())
    first = float(steps[steps > 0][0]) if (steps > 0).any() else 1.0
    rows = []
    for (run, seed), g in h.groupby(["run", "seed"], observed=True):
        curves = {str(p): c.sort_values("step") for p, c in g.groupby("piece", observed=True)}
        p0 = {p: _lookup(pre, run, p) for p in curves}
        start = {p: float(c["value"].iloc[0]) for p, c in curves.items()}
        t = tol if tol is not None else frac * max(max(start[p] - p0[p] for p in curves), 0.0)
        for p, c in curves.items():
            ok = c["value"].to_numpy() <= p0[p] + t
            rows.append({"run": run, "seed": seed, "piece": p, "ablated": p in ablated, "pre": p0[p],
                         "start": start[p], "tol": t,
                         "recovery_step": float(c["step"].to_numpy()[ok.argmax()]) if ok.any() else np.nan,
                         "recovered": bool(ok.any())})
    df = pd.DataFrame(rows)

    def ratio(g: pd.DataFrame) -> float:
        a, o = g.loc[g["ablated"], "recovery_step"], g.loc[~g["ablated"], "recovery_step"]
        if a.empty or o.empty or a.isna().any() or o.isna().any():
            return np.nan
        return float(a.mean() / max(o.mean(), first))

    r = df.groupby("run")[["ablated", "recovery_step"]].apply(ratio).rename("ratio")
    return df.merge(r, left_on="run", right_index=True)


def _lookup(pre: Mapping, run: Any, piece: str) -> float:
    row = pre.get(int(run), pre.get(str(run)))
    if row is None or piece not in row:
        raise ConfigError(f"pre: no pre-ablation loss for run {run} piece {piece!r}")
    return float(row[piece])


def piece_identification(task: Task, result: RunResult, blocks: Any = None, layer: int = 0, *,
                         eval_size: int = 1024, key: int = ANALYSIS_KEY) -> pd.DataFrame:
    """Per run: how often the most active block names the example's piece.

    For each train-split example (``jax.random.key(key)``), the block with the
    largest RMS activation at ``layer`` is the prediction; it is correct when the
    example's piece routes into that block. Examples of unrouted pieces are left
    out; shared units never vote.

    Returns:
        DataFrame: run, seed, accuracy, chance (the largest share of examples
        routed into any one block: what always naming that block would score), n.
    """
    method = _method_of(result)
    spec = resolve_blocks(task, blocks, method if blocks is None else None)
    judge, ctx = base_of(method), _ctx(result)
    batch = _eval_batch(task, eval_size, key)
    width = _layer_width(task, judge, result, batch, layer)
    bounds = spec.bounds(width)
    assign = np.zeros((width, len(bounds)), np.float32)
    for j, (a, b) in enumerate(bounds):
        assign[a:b, j] = 1.0 / (b - a)

    def rms(params):
        _, hidden = _forward(task, judge, result.graphdef, params, batch, ctx)
        return (hidden[layer] ** 2) @ jnp.asarray(assign)  # mean square per block

    energy = np.asarray(jax.jit(jax.vmap(rms))(result.params))  # [R, N, B]
    own = np.asarray(spec.block_of_piece)
    piece = np.asarray(batch.piece)
    routed = (piece >= 0) & (own[np.maximum(piece, 0)] >= 0)
    target = own[piece[routed]]
    chance = float(np.bincount(target, minlength=len(bounds)).max() / max(len(target), 1))
    acc = (energy[:, routed].argmax(-1) == target[None]).mean(-1)
    return pd.DataFrame({"run": np.arange(len(acc)), "seed": result.runs["seed"].to_numpy(),
                         "accuracy": acc.astype(np.float64), "chance": chance, "n": int(routed.sum())})
