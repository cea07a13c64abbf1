"""What a training call returns: a tidy history table plus arrays for deeper looks.

``RunResult.history`` has one row per (run, step, split, piece, metric) with
columns ``run, seed, step, split, piece, metric, value`` and the config columns
``task, method, model, optimizer, lr, weight_decay, init_scale``; ``piece`` is
``"all"`` for whole-split rows. Analysis reads this table, never the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from flax import nnx

from testbed.core.columns import COMPONENTS, RUN, SWEPT
from testbed.core.stats import summarize
from testbed.tasks.task import Task

HISTORY_COLUMNS = [*COMPONENTS, *SWEPT,
                   "run", "seed", "step", "split", "piece", "metric", "value"]


@dataclass
class RunResult:
    """The outcome of `testbed.train`.

    Attributes:
        config: everything that defines the call (JSON-able).
        history: tidy evaluation table (see module docstring).
        runs: one row per run: run, seed, lr, weight_decay, init_scale, diverged_step,
            halted_step (-1: never; see `Extras.halt`).
        eval_steps: [E] steps at which evaluations were taken.
        probe: Batch(x [Pn, in_dim], y, piece): probe inputs with their targets; the
            first ``probe_grid`` are a grid over the domain, the rest samples of
            each OOD split.
        probe_split: [Pn] index into ``task.splits`` of the split holding each probe (-1: none).
        probe_grid: number of grid probes at the start of ``probe``.
        predictions: [R, E, Pn, ...] predictions at the probe inputs over training.
        batch_loss: [R, steps] the training-batch loss at every update (NaN once a run
            has diverged or halted).
        traces: the method's other per-update values, {name: [R, steps]} (e.g. the
            myopic method's ``p_stop`` and ``reward``); empty for most methods.
        profile: long table of the method's `Profile` (run, seed, step, split, piece,
            <axis>, metric, value), or None.
        params: per-run parameters, a pytree of [R, ...] arrays.
        graphdef: the NNX graph definition; with ``params`` it rebuilds a model.
        timing: compile_s (the program's compile seconds), compiled (whether this call
            compiled it or reused it), wall_s (the whole call), run_s (the training
            alone, without compiling), runs, devices.
        provenance: platform, devices, package versions, git commit.
        stages: for a staged run (`testbed.train_stages`), one row per stage: stage, name,
            start (its first step), steps, stage_method, stage_optimizer, split; None otherwise.
        snapshots: with ``train(..., snapshots=True)``, the parameters at every evaluation, a
            pytree of [R, E, ...] arrays (E = ``len(eval_steps)``); None otherwise.
    """

    config: dict
    history: pd.DataFrame
    runs: pd.DataFrame
    eval_steps: np.ndarray
    probe: Any
    probe_split: np.ndarray
    probe_grid: int
    predictions: np.ndarray
    batch_loss: np.ndarray
    params: Any
    graphdef: Any
    timing: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    traces: dict = field(default_factory=dict)
    profile: pd.DataFrame | None = None
    stages: pd.DataFrame | None = None
    snapshots: Any = None

    def model(self, run: int = 0) -> nnx.Module:
        """The trained NNX module of one run."""
        return nnx.merge(self.graphdef, _index(self.params, run))

    def final(self) -> pd.DataFrame:
        """History rows at the last evaluation step."""
        h = self.history
        return h[h["step"] == h["step"].max()].reset_index(drop=True)

    def summary(self, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
        """Final whole-split values, mean and 95% bootstrap CI over seeds, per grid cell.

        Columns: lr, weight_decay, init_scale, split, metric, mean, ci_low, ci_high, n.
        """
        f = self.final()
        f = f[f["piece"] == "all"]
        if metrics is not None:
            f = f[f["metric"].isin(metrics)]
        return summarize(f, [*SWEPT, "split", "metric"])


def _index(tree, i: int):
    import jax

    return jax.tree.map(lambda a: a[i], tree)


def build_history(*, task: Task, config: dict, runs: list[tuple[int, int]], grid: list[tuple[float, ...]],
                  eval_steps: np.ndarray, metric_names: tuple[str, ...], metrics: np.ndarray,
                  preds: np.ndarray, batch_loss: np.ndarray, diverged_at: np.ndarray, params: Any,
                  graphdef: Any, probe: Any, probe_split: np.ndarray, probe_grid: int, timing: dict,
                  provenance: dict, halted_at: np.ndarray | None = None, traces: dict | None = None,
                  profile: tuple | None = None, run_metrics: dict | None = None,
                  snapshots: Any = None) -> RunResult:
    """Turn the engine's stacked buffers into a RunResult.

    Args:
        runs: (grid index, seed) per run.
        metrics: [R, E, G, M] with G = splits x (pieces + 1), the last of each split "all".
        profile: (Profile, [K] axis values, [R, E, G, K, Q] values) or None.
        run_metrics: {name: [R]} per-run values, added at the final step (train, all).
    """
    n_runs, n_eval, n_groups, n_metrics = metrics.shape
    piece_names = [*task.pieces, "all"]
    split_idx = np.arange(n_groups) // len(piece_names)
    piece_idx = np.arange(n_groups) % len(piece_names)
    present = ~np.isnan(metrics).all(axis=(0, 1, 3))  # drop (split, piece) groups with no points
    present |= piece_idx == len(piece_names) - 1  # but keep every split's "all" rows
    g_keep = np.flatnonzero(present)
    r, e, g, m = np.meshgrid(np.arange(n_runs), np.arange(n_eval), g_keep, np.arange(n_metrics), indexing="ij")
    r, e, g, m = r.ravel(), e.ravel(), g.ravel(), m.ravel()
    h_of_run = np.array([h for h, _ in runs])
    seed_of_run = np.array([s for _, s in runs])
    grid_arr = np.asarray(grid, dtype=np.float64)
    opt = config["optimizer"]["name"]
    history = pd.DataFrame({
        "task": pd.Categorical([task.name] * len(r)),
        "method": pd.Categorical([config["method"]] * len(r)),
        "model": pd.Categorical([config["model"]] * len(r)),
        "optimizer": pd.Categorical([opt] * len(r)),
        **{c: grid_arr[h_of_run[r], i] for i, c in enumerate(SWEPT)},
        "run": r,
        "seed": seed_of_run[r],
        "step": eval_steps[e],
        "split": pd.Categorical.from_codes(split_idx[g], list(task.splits)),
        "piece": pd.Categorical.from_codes(piece_idx[g], piece_names),
        "metric": pd.Categorical.from_codes(m, list(metric_names)),
        "value": metrics[r, e, g, m].astype(np.float64),
    }, columns=HISTORY_COLUMNS)
    if run_metrics:
        names = list(run_metrics)
        rr, mm = (a.ravel() for a in np.meshgrid(np.arange(n_runs), np.arange(len(names)), indexing="ij"))
        extra = pd.DataFrame({
            **{c: history[c].iloc[0] if len(history) else np.nan for c in ("task", "method", "model", "optimizer")},
            **{c: grid_arr[h_of_run[rr], i] for i, c in enumerate(SWEPT)}, "run": rr, "seed": seed_of_run[rr],
            "step": eval_steps[-1], "split": "train", "piece": "all",
            "metric": np.asarray(names, dtype=object)[mm],
            "value": np.stack([np.asarray(run_metrics[k], np.float64) for k in names], 1)[rr, mm],
        }, columns=HISTORY_COLUMNS)
        for c in ("task", "method", "model", "optimizer", "split", "piece", "metric"):  # keep category order
            cats = list(dict.fromkeys([*history[c].cat.categories, *pd.unique(extra[c])]))
            history[c], extra[c] = (pd.Categorical(d[c].astype(object), categories=cats) for d in (history, extra))
        history = pd.concat([history, extra], ignore_index=True)
    halted = np.full(n_runs, -1) if halted_at is None else np.where(halted_at >= 0, halted_at, -1)
    runs_df = pd.DataFrame({
        "run": np.arange(n_runs), "seed": seed_of_run,
        **{c: grid_arr[h_of_run, i] for i, c in enumerate(SWEPT)},
        "diverged_step": np.where(diverged_at >= 0, diverged_at, -1), "halted_step": halted,
    })
    profile_df = None
    if profile is not None:
        spec, values, arr = profile
        profile_df = _profile_table(task, spec, values, arr, eval_steps, runs_df, piece_names)
    return RunResult(config=config, history=history, runs=runs_df, eval_steps=eval_steps, probe=probe,
                     probe_split=probe_split, probe_grid=probe_grid,
                     predictions=preds, batch_loss=batch_loss, params=params, graphdef=graphdef,
                     timing=timing, provenance=provenance, traces=dict(traces or {}), profile=profile_df,
                     snapshots=snapshots)


def _profile_table(task: Task, spec, values: np.ndarray, arr: np.ndarray, eval_steps: np.ndarray,
                   runs_df: pd.DataFrame, piece_names: list[str]) -> pd.DataFrame:
    """[R, E, G, K, Q] -> long table, whole splits only (piece "all")."""
    n_runs, n_eval, n_groups, n_k, n_q = arr.shape
    n_p = len(piece_names)
    g_all = np.arange(n_p - 1, n_groups, n_p)  # each split's "all" column
    r, e, g, k, q = (a.ravel() for a in np.meshgrid(np.arange(n_runs), np.arange(n_eval), np.arange(len(g_all)),
                                                     np.arange(n_k), np.arange(n_q), indexing="ij"))
    return pd.DataFrame({
        **{c: runs_df[c].to_numpy()[r] for c in RUN},
        "step": eval_steps[e], "split": pd.Categorical.from_codes(g, list(task.splits)),
        spec.axis: values[k], "metric": pd.Categorical.from_codes(q, list(spec.names)),
        "value": arr[r, e, g_all[g], k, q].astype(np.float64),
    })
