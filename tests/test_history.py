"""RunResult and build_history: one row per (run, step, split, piece, metric), dtypes, run metrics, runs, summary."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

import testbed
from testbed.tasks.registry import make_task
from testbed.training.result import HISTORY_COLUMNS, RunResult, build_history

GRID = [(1e-3, 0.0, 1.0), (1e-2, 0.1, 0.5)]
SEEDS = [3, 7]
RUNS = [(h, s) for h in range(len(GRID)) for s in SEEDS]  # the engine's order: grid cell, then seed
STEPS = np.array([0, 5, 10])
METRICS = ("loss", "mse")
KEYS = ["run", "step", "split", "piece", "metric"]


@pytest.fixture(scope="module")
def task():
    return make_task("two_slopes")  # pieces shallow, steep; splits train, near, far


def _g(task, split: str, piece: str) -> int:
    """Group column of (split, piece) in the engine's [.., G, ..] buffers."""
    pieces = [*task.pieces, "all"]
    return task.splits.index(split) * len(pieces) + pieces.index(piece)


def _metrics(task) -> np.ndarray:
    """[R, E, G, M] values with empty groups (all NaN) and one diverged run."""
    n_groups = len(task.splits) * (len(task.pieces) + 1)
    m = np.random.default_rng(0).normal(size=(len(RUNS), len(STEPS), n_groups, len(METRICS))).astype(np.float32)
    for split, piece in [("near", "steep"), ("far", "shallow"), ("far", "steep"), ("far", "all")]:
        m[:, :, _g(task, split, piece)] = np.nan  # no points there
    m[1, -1] = np.nan  # run 1 diverged before the last evaluation
    return m


def _build(task, metrics=None, run_metrics=None, halted_at=None, profile=None) -> RunResult:
    metrics = _metrics(task) if metrics is None else metrics
    n = len(RUNS)
    return build_history(
        task=task, config={"method": "mse", "model": "mlp", "optimizer": {"name": "adam"}}, runs=RUNS, grid=GRID,
        eval_steps=STEPS, metric_names=METRICS, metrics=metrics, preds=np.zeros((n, len(STEPS), 4)),
        batch_loss=np.zeros((n, int(STEPS[-1]))), diverged_at=np.array([-1, 8, 0, -1]), params={},
        graphdef=None, probe=None, probe_split=np.zeros(4, int), probe_grid=4, timing={}, provenance={},
        halted_at=halted_at, run_metrics=run_metrics, profile=profile)


def _kept(task) -> set[tuple[str, str]]:
    """(split, piece) groups that have points, plus every split's "all"."""
    dropped = {("near", "steep"), ("far", "shallow"), ("far", "steep")}
    return {(s, p) for s in task.splits for p in [*task.pieces, "all"]} - dropped


def test_one_row_per_run_step_group_metric(task):
    h = _build(task).history
    assert list(h.columns) == HISTORY_COLUMNS
    assert len(h) == len(RUNS) * len(STEPS) * len(_kept(task)) * len(METRICS)
    assert not h.duplicated(KEYS).any()
    assert set(zip(h["split"], h["piece"], strict=True)) == _kept(task)  # ("far", "all") is kept, all NaN
    assert h.loc[(h.split == "far") & (h.piece == "all"), "value"].isna().all()
    assert sorted(h["step"].unique()) == STEPS.tolist() and sorted(h["run"].unique()) == list(range(len(RUNS)))


def test_values_and_run_columns_come_from_the_right_cells(task):
    metrics = _metrics(task)
    h = _build(task, metrics).history
    e = np.searchsorted(STEPS, h["step"].to_numpy())
    g = np.array([_g(task, s, p) for s, p in zip(h["split"], h["piece"], strict=True)])
    m = np.array([METRICS.index(x) for x in h["metric"]])
    np.testing.assert_array_equal(h["value"].to_numpy(), metrics[h["run"].to_numpy(), e, g, m].astype(np.float64))
    cell = np.array([RUNS[r][0] for r in h["run"]])
    np.testing.assert_array_equal(h["seed"], [RUNS[r][1] for r in h["run"]])
    for i, col in enumerate(["lr", "weight_decay", "init_scale"]):
        np.testing.assert_array_equal(h[col], np.asarray(GRID)[cell, i])
    assert set(h["task"]) == {"two_slopes"} and set(h["optimizer"]) == {"adam"}
    assert set(h["method"]) == {"mse"} and set(h["model"]) == {"mlp"}


def test_dtypes(task):
    h = _build(task).history
    for col in ["split", "piece", "metric", "task", "method", "model", "optimizer"]:
        assert isinstance(h[col].dtype, pd.CategoricalDtype), col
    assert list(h["split"].cat.categories) == list(task.splits)
    assert list(h["piece"].cat.categories) == [*task.pieces, "all"]
    assert list(h["metric"].cat.categories) == list(METRICS)
    assert h["value"].dtype == np.float64 and h["lr"].dtype == np.float64
    assert pd.api.types.is_integer_dtype(h["step"]) and pd.api.types.is_integer_dtype(h["run"])
    assert pd.api.types.is_integer_dtype(h["seed"])


def test_run_metrics_are_added_at_the_final_step(task):
    base = _build(task).history
    rm = {"shutdown_rate": np.array([0.1, 0.2, 0.3, 0.4]), "score": np.array([1.0, np.nan, 3.0, 4.0])}
    h = _build(task, run_metrics=rm).history
    extra = h[h.metric.isin(list(rm))]
    assert len(h) == len(base) + len(RUNS) * len(rm) and len(extra) == len(RUNS) * len(rm)
    assert (extra.step == STEPS[-1]).all() and (extra.split == "train").all() and (extra.piece == "all").all()
    for name, values in rm.items():
        rows = extra[extra.metric == name].sort_values("run")
        np.testing.assert_array_equal(rows["value"], values)
        np.testing.assert_array_equal(rows["seed"], [s for _, s in RUNS])
        np.testing.assert_array_equal(rows["lr"], [GRID[c][0] for c, _ in RUNS])
    assert not h.duplicated(KEYS).any() and list(h.columns) == HISTORY_COLUMNS
    for col in ["split", "piece", "metric", "task"]:
        assert isinstance(h[col].dtype, pd.CategoricalDtype), col
    assert list(h["split"].cat.categories) == list(task.splits)  # order kept (tables sort by it)
    assert list(h["metric"].cat.categories) == [*METRICS, *rm]
    assert (extra.task == "two_slopes").all() and (extra.model == "mlp").all()
    # the evaluation rows are unchanged
    pd.testing.assert_frame_equal(h.iloc[:len(base)].astype({c: object for c in ["metric"]}),
                                  base.astype({c: object for c in ["metric"]}))


def test_runs_table(task):
    r = _build(task)
    runs = r.runs
    assert list(runs.columns) == ["run", "seed", "lr", "weight_decay", "init_scale", "diverged_step", "halted_step"]
    assert runs["run"].tolist() == list(range(len(RUNS))) and runs["seed"].tolist() == [s for _, s in RUNS]
    assert runs["lr"].tolist() == [GRID[c][0] for c, _ in RUNS]
    assert runs["init_scale"].tolist() == [GRID[c][2] for c, _ in RUNS]
    assert runs["diverged_step"].tolist() == [-1, 8, 0, -1]  # 0: the very first update
    assert runs["halted_step"].tolist() == [-1] * len(RUNS)  # no halting given: never
    halted = _build(task, halted_at=np.array([-1, -1, 6, -1])).runs
    assert halted["halted_step"].tolist() == [-1, -1, 6, -1]


def test_final_is_the_last_evaluation(task):
    rm = {"score": np.arange(4.0)}
    r = _build(task, run_metrics=rm)
    f = r.final()
    assert (f.step == STEPS[-1]).all() and list(f.index) == list(range(len(f)))
    assert len(f) == len(RUNS) * len(_kept(task)) * len(METRICS) + len(RUNS)
    assert set(f.metric) == {*METRICS, "score"}


def test_summary_is_mean_and_ci_over_seeds(task):
    metrics = _metrics(task)
    r = _build(task, metrics)
    s = r.summary()
    assert list(s.columns) == ["lr", "weight_decay", "init_scale", "split", "metric", "mean", "ci_low", "ci_high", "n"]
    assert not s.duplicated(["lr", "weight_decay", "init_scale", "split", "metric"]).any()
    assert len(s) == len(GRID) * len(task.splits) * len(METRICS)  # whole splits only
    for c, (lr, wd, init) in enumerate(GRID):
        runs = [i for i, (h, _) in enumerate(RUNS) if h == c]
        for split in task.splits:
            for mi, metric in enumerate(METRICS):
                row = s[(s.lr == lr) & (s.weight_decay == wd) & (s.init_scale == init) & (s.split == split)
                        & (s.metric == metric)]
                assert len(row) == 1
                vals = metrics[runs, -1, _g(task, split, "all"), mi].astype(np.float64)
                finite = vals[np.isfinite(vals)]
                assert row["n"].item() == finite.size
                if finite.size:
                    np.testing.assert_allclose(row["mean"].item(), finite.mean(), rtol=1e-12)
                    assert row["ci_low"].item() <= row["mean"].item() <= row["ci_high"].item()
                else:
                    assert np.isnan(row["mean"].item())
    # cell 0 lost run 1 at the end: one seed left; cell 1 has both
    assert set(s[(s.lr == GRID[0][0]) & (s.split == "train")]["n"]) == {1}
    assert set(s[(s.lr == GRID[1][0]) & (s.split == "train")]["n"]) == {len(SEEDS)}
    only = r.summary(metrics=("mse",))
    assert set(only.metric) == {"mse"} and len(only) == len(GRID) * len(task.splits)


def test_profile_table_has_whole_split_rows(task):
    spec = SimpleNamespace(axis="k", names=("p_stop", "reward"))
    values = np.array([1.0, 2.0, 4.0])
    n_groups = len(task.splits) * (len(task.pieces) + 1)
    arr = np.random.default_rng(1).normal(size=(len(RUNS), len(STEPS), n_groups, len(values), 2))
    p = _build(task, profile=(spec, values, arr)).profile
    assert len(p) == len(RUNS) * len(STEPS) * len(task.splits) * len(values) * 2
    assert {"lr", "weight_decay", "init_scale", "run", "seed", "step", "split", "k", "metric", "value"} <= set(p.columns)
    row = p[(p.run == 2) & (p.step == 5) & (p.split == "near") & (p.k == 4.0) & (p.metric == "reward")]
    assert row["value"].item() == arr[2, 1, _g(task, "near", "all"), 2, 1]
    assert row["seed"].item() == RUNS[2][1] and row["lr"].item() == GRID[RUNS[2][0]][0]


def test_trained_history_is_consistent_end_to_end():
    eval_size = 64
    r = testbed.train("two_slopes", "mse", model=testbed.MLP(width=8, depth=1), steps=20, seeds=2, batch_size=16,
                      evals=3, eval_size=eval_size, probe_points=8, quiet=True)
    h, task = r.history, make_task("two_slopes")
    assert list(h.columns) == HISTORY_COLUMNS and not h.duplicated(KEYS).any()
    assert np.isfinite(h["value"]).all() and h["step"].max() == 20
    s = r.summary()
    assert (s["n"] == 2).all() and np.isfinite(s[["mean", "ci_low", "ci_high"]].to_numpy()).all()
    # every split's whole-split value is the point-weighted mean of its pieces' values: the weights
    # (the pieces' shares of the split's eval points) are the same in every run, step and metric
    for split in task.splits:
        d = h[h.split == split].pivot_table(index=["run", "step", "metric"], columns="piece", values="value",
                                           observed=True)
        pieces = d[[p for p in task.pieces if p in d.columns]].to_numpy()
        whole = d["all"].to_numpy()
        w, *_ = np.linalg.lstsq(pieces, whole, rcond=None)
        np.testing.assert_allclose(pieces @ w, whole, rtol=1e-5, atol=1e-7)
        assert (w > 0).all() and abs(w.sum() - 1) < 1e-4, w
        np.testing.assert_allclose(w * eval_size, np.round(w * eval_size), atol=1e-3)  # shares of 64 points


@given(st.lists(st.sampled_from(["train", "none", "far", "b", "a"]), min_size=1, max_size=8),
       st.lists(st.integers(0, 7), min_size=1, max_size=30))
def test_probe_table_categories_are_those_of_the_strings(labels, picks):
    # probe_table builds its label columns from per-probe codes; they must equal the categorical
    # pandas makes of the full string column (the values present, sorted), duplicates included
    from testbed.training.tables import _expand

    labels = np.asarray(labels)
    index = np.asarray(picks) % len(labels)
    got = pd.Series(_expand(labels, index))
    pd.testing.assert_series_equal(got, pd.Series(labels[index]).astype("category"))
