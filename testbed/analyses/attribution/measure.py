"""Out-of-distribution attribution: which behaviour does the model follow out there?

For every OOD probe point, the model's final prediction is compared with a set of
candidate behaviours, and the closest one is counted:

* ``target``: the true function;
* each named candidate of the task (e.g. a proxy that agrees with the target on
  ``train`` only);
* ``piece:<name>``: each piece's function continued outside its region (tasks
  with several pieces);
* ``linear_fit``: the least-squares affine fit of the training data (what a
  straight line through the training set predicts; cf. Xu et al. 2021, "How
  Neural Networks Extrapolate": ReLU MLPs become linear along rays).

Distances: squared error (mean over outputs) for scalar and vector targets,
KL(candidate || prediction) on softmax distributions for distribution targets,
0/1 disagreement of the predicted class for class targets; for class targets a
point whose predicted class matches no candidate counts as ``other``. Ties go to
the candidate listed first (the target first), so a candidate that equals the
target on some points never steals them.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from testbed.core.columns import SWEPT
from testbed.tasks.metrics import kl_from_logits
from testbed.tasks.registry import task_values
from testbed.tasks.task import Task
from testbed.training.result import RunResult

FIT_KEY = 2  # seed of the train sample the linear_fit candidate is fitted to


def candidate_values(task: Task, x: jax.Array | np.ndarray, train_size: int = 2048) -> dict[str, np.ndarray]:
    """Every candidate behaviour evaluated at model inputs ``x: [n, in_dim]``.

    Returns name -> [n] (scalar, class) or [n, k] arrays (read-only), the target first.
    Kept per (task, inputs), the most recent 64: the cells of a task share their probes, and
    a suite computes them ahead on a compile thread (the analysis' ``prepare``) while earlier
    cells train.
    """
    xs = np.ascontiguousarray(x)
    return dict(_kept_candidates(task, xs.tobytes(), xs.shape, xs.dtype.str, train_size))


@functools.lru_cache(maxsize=64)
def _kept_candidates(task: Task, data: bytes, shape: tuple, dtype: str, train_size: int) -> dict[str, np.ndarray]:
    """`_candidate_values`, read-only, kept on disk too (`testbed.tasks.registry.task_values`)."""
    what = f"candidates|{hashlib.sha256(data).hexdigest()}|{shape}|{dtype}|{train_size}"
    return task_values(task, what, lambda: _candidate_values(task, np.frombuffer(data, dtype).reshape(shape), train_size))


def _candidate_values(task: Task, x: np.ndarray, train_size: int) -> dict[str, np.ndarray]:
    vals, train_raw, train_y = _jax_candidates(task, jnp.asarray(x), train_size)
    names = ["target", *task.candidates, *([f"piece:{p.name}" for p in task.piece_specs] if len(task.pieces) > 1
                                          else [])]
    out = {k: np.asarray(v) for k, v in zip(names, vals, strict=True)}  # in this order (the target first)
    if task.target != "class":
        raw = np.asarray(task.domain.decode(jnp.asarray(x)), np.float64)
        train_raw, train_y = np.asarray(train_raw, np.float64), np.asarray(train_y, np.float64)
        design = np.concatenate([train_raw, np.ones((len(train_raw), 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design, train_y.reshape(len(train_raw), -1), rcond=None)
        fit = np.concatenate([raw, np.ones((raw.shape[0], 1))], axis=1) @ coef
        out["linear_fit"] = fit.reshape(out["target"].shape).astype(np.float32)
    return out


@functools.partial(jax.jit, static_argnums=(0, 2))
def _jax_candidates(task: Task, x: jax.Array, train_size: int):
    """The JAX part of `candidate_values` as one program (not one eager program per op):
    the candidates' values at ``x`` and the train sample the linear fit is fitted to."""
    raw = task.domain.decode(x)
    target = task(x)
    out = [target, *(task.candidate(name, x) for name in task.candidates)]
    if len(task.pieces) > 1:
        for p in task.piece_specs:
            v = jnp.broadcast_to(p.f(raw), target.shape)
            out.append(jnp.round(v).astype(jnp.int32) if task.target == "class" else v)
    out = tuple(out)  # a tuple keeps the order (a dict's keys would come back sorted)
    if task.target == "class":
        return out, None, None
    train_raw = task.sample_raw(jax.random.key(FIT_KEY), train_size, "train")
    return out, train_raw, task.target_of_raw(train_raw.astype(jnp.float32))


def distances(task: Task, pred: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-point distance between predictions ``[..., n(, k)]`` and one candidate's values
    ``[n(, k)]`` (broadcast over leading axes, e.g. runs): ``[..., n]``."""
    if task.target == "scalar":
        return (pred - cand) ** 2
    if task.target == "vector":
        return np.mean((pred - cand) ** 2, axis=-1)
    if task.target == "distribution":  # one [n, K] call per leading index: the same sums whatever the batch
        rows = pred.reshape((-1, *pred.shape[-2:]))
        kl = [np.asarray(kl_from_logits(jnp.asarray(cand), jnp.asarray(p))) for p in rows]
        return np.stack(kl).reshape(pred.shape[:-1])
    return (np.argmax(pred, axis=-1) != cand).astype(np.float32)


def attribution(task: Task, result: RunResult) -> pd.DataFrame:
    """OOD attribution of every run's final predictions.

    Returns:
        One row per (run, OOD split, candidate): columns run, seed, lr,
        weight_decay, init_scale, split, candidate, fraction (of the split's
        probe points where this candidate is the closest), mean_distance.
    """
    cands = candidate_values(task, result.probe.x)
    names = list(cands) + (["other"] if task.target == "class" else [])
    final = np.asarray(result.predictions[:, -1])  # [R, Pn, ...]
    runs = result.runs
    parts = []
    for s_idx, split in enumerate(task.splits):
        mask = result.probe_split == s_idx
        if split == "train" or not mask.any():
            continue
        pred = final[:, mask]  # [R, m, ...]
        d = np.stack([distances(task, pred, cands[n][mask]) for n in cands]
                     # a class matching no candidate: distance 0.5 beats every 1
                     + ([np.full(pred.shape[:2], 0.5, np.float32)] if task.target == "class" else []), 1)  # [R, C, m]
        closest = np.argmin(d, axis=1)  # [R, m]; ties: first candidate (the target) wins
        frac = (closest[:, None, :] == np.arange(len(names))[None, :, None]).mean(-1)  # [R, C]
        r, c = (a.ravel() for a in np.meshgrid(np.arange(len(runs)), np.arange(len(names)), indexing="ij"))
        parts.append(pd.DataFrame({
            "run": runs["run"].to_numpy()[r].astype(int), "seed": runs["seed"].to_numpy()[r].astype(int),
            **{col: runs[col].to_numpy()[r].astype(float) for col in SWEPT},
            "split": split, "candidate": np.asarray(names, dtype=object)[c],
            "fraction": frac[r, c].astype(float),
            # one 1-D mean per (run, candidate): the same float32 sums as a per-run loop gives
            "mean_distance": [float(np.mean(d[i, j])) for i, j in zip(r, c, strict=True)]}))
    cols = ["run", "seed", *SWEPT, "split", "candidate", "fraction", "mean_distance"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)
