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

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from testbed.tasks.metrics import kl_from_logits
from testbed.tasks.task import Task
from testbed.training.result import RunResult


def candidate_values(task: Task, x: jax.Array, train_size: int = 2048) -> dict[str, np.ndarray]:
    """Every candidate behaviour evaluated at model inputs ``x: [n, in_dim]``.

    Returns name -> [n] (scalar, class) or [n, k] arrays, the target first.
    """
    raw = task.domain.decode(x)
    out = {"target": np.asarray(task(x))}
    for name in task.candidates:
        out[name] = np.asarray(task.candidate(name, x))
    if len(task.pieces) > 1:
        for p in task.piece_specs:
            v = jnp.broadcast_to(p.f(raw), out["target"].shape)
            out[f"piece:{p.name}"] = np.asarray(jnp.round(v).astype(jnp.int32) if task.target == "class" else v)
    if task.target != "class":
        train_raw = np.asarray(task.sample_raw(jax.random.key(2), train_size, "train"), np.float64)
        train_y = np.asarray(task.target_of_raw(jnp.asarray(train_raw, jnp.float32)), np.float64)
        design = np.concatenate([train_raw, np.ones((len(train_raw), 1))], axis=1)
        coef, *_ = np.linalg.lstsq(design, train_y.reshape(len(train_raw), -1), rcond=None)
        fit = np.concatenate([np.asarray(raw, np.float64), np.ones((raw.shape[0], 1))], axis=1) @ coef
        out["linear_fit"] = fit.reshape(out["target"].shape).astype(np.float32)
    return out


def distances(task: Task, pred: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Per-point distance [n] between predictions and one candidate's values."""
    if task.target == "scalar":
        return (pred - cand) ** 2
    if task.target == "vector":
        return np.mean((pred - cand) ** 2, axis=-1)
    if task.target == "distribution":
        return np.asarray(kl_from_logits(jnp.asarray(cand), jnp.asarray(pred)))
    return (np.argmax(pred, axis=-1) != cand).astype(np.float32)


def attribution(task: Task, result: RunResult) -> pd.DataFrame:
    """OOD attribution of every run's final predictions.

    Returns:
        One row per (run, OOD split, candidate): columns run, seed, lr,
        weight_decay, init_scale, split, candidate, fraction (of the split's
        probe points where this candidate is the closest), mean_distance.
    """
    x = jnp.asarray(result.probe.x)
    cands = candidate_values(task, x)
    names = list(cands)
    other = task.target == "class"  # a class matching no candidate: distance 0.5 beats every 1
    final = result.predictions[:, -1]  # [R, Pn, ...]
    rows = []
    for s_idx, split in enumerate(task.splits):
        if split == "train":
            continue
        mask = result.probe_split == s_idx
        if not mask.any():
            continue
        for r, run in result.runs.iterrows():
            d = np.stack([distances(task, final[r][mask], cands[n][mask]) for n in names]
                         + ([np.full(int(mask.sum()), 0.5, np.float32)] if other else []))  # [C, m]
            closest = np.argmin(d, axis=0)  # ties: first candidate (the target) wins
            for c, name in enumerate(names + (["other"] if other else [])):
                rows.append((int(run["run"]), int(run["seed"]), float(run["lr"]), float(run["weight_decay"]),
                             float(run["init_scale"]), split, name, float(np.mean(closest == c)),
                             float(np.mean(d[c]))))
    return pd.DataFrame(rows, columns=["run", "seed", "lr", "weight_decay", "init_scale", "split", "candidate",
                                       "fraction", "mean_distance"])
