"""Tests for training in stages (`testbed.training.stages`): one continuous run through several
methods, optimizers or training splits."""

from __future__ import annotations

import numpy as np
import pytest

import testbed
from testbed.core.errors import ConfigError

KW = dict(seeds=2, batch_size=64, evals=20, eval_size=128, probe_points=16, quiet=True)


@pytest.fixture(scope="module")
def task():
    return testbed.make_task("sine_line")


def test_two_stages_equal_the_second_started_from_the_first(task):
    model = testbed.MLP(width=16, depth=2)
    stages = [testbed.Stage(steps=120, method="mse", optimizer=testbed.Optimizer(name="adam", lr=3e-3)),
              testbed.Stage(steps=80, method="routing", optimizer=testbed.Optimizer(name="sgd", lr=0.05, momentum=0.9))]
    r = testbed.train_stages(task, stages, model, **KW)
    first = testbed.train(task, "mse", model, stages[0].optimizer, steps=120, evals=12, **{
        k: v for k, v in KW.items() if k != "evals"})
    second = testbed.train(task, "routing", model, stages[1].optimizer, steps=80, evals=8, init_params=first.params,
                           data_stream=1, **{k: v for k, v in KW.items() if k != "evals"})
    # Parameters, per-update losses and predictions: bitwise those of the two calls.
    for a, b in zip(_leaves(r.params), _leaves(second.params), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(r.batch_loss, np.concatenate([first.batch_loss, second.batch_loss], axis=1))
    np.testing.assert_array_equal(r.predictions[:, :12], first.predictions)
    np.testing.assert_array_equal(r.predictions[:, 12:], second.predictions[:, 1:])
    # One continuous history: steps run on, a later stage's step 0 is not repeated.
    assert list(r.eval_steps) == [*first.eval_steps, *(second.eval_steps[1:] + 120)]
    h = r.history
    assert h["step"].max() == 200 and set(h[h["step"] > 120]["method"].astype(str)) == {"routing"}
    late = h[(h.step == 200) & (h.metric == "mse") & (h.split == "train") & (h.piece == "all")]
    want = second.history
    want = want[(want.step == 80) & (want.metric == "mse") & (want.split == "train") & (want.piece == "all")]
    np.testing.assert_array_equal(late.sort_values("run")["value"].to_numpy(),
                                  want.sort_values("run")["value"].to_numpy())
    assert r.stages[["stage", "start", "steps", "stage_method", "stage_optimizer", "split"]].values.tolist() == [
        [0, 0, 120, "mse", "adam", "train"], [1, 120, 80, "routing", "sgd", "train"]]
    assert len(r.config["stages"]) == 2 and r.config["steps"] == 200


def _leaves(tree):
    import jax
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_a_stage_can_train_on_another_split(task):
    ood = task.ood_splits[0]
    r = testbed.train_stages(task, [{"steps": 60}, {"steps": 60, "split": ood, "name": "fine-tune"}],
                             testbed.MLP(width=16, depth=1), **KW)
    assert r.stages["split"].tolist() == ["train", ood] and r.stages["name"].tolist() == ["stage 0: mse", "fine-tune"]
    h = r.history
    loss = h[(h.metric == "mse") & (h.piece == "all") & (h.split == ood)].groupby("step")["value"].mean()
    assert loss.loc[120] < loss.loc[60]  # fine-tuning on the OOD split lowers its error


def test_stages_that_change_the_model_are_refused_before_training(task):
    with pytest.raises(ConfigError, match=r"stages\[1\].method: 'ce' changes the model's shape"):
        testbed.train_stages(task, [{"steps": 10}, {"steps": 10, "method": "ce"}], **KW)  # 64 bins, not 1 output
    with pytest.raises(ConfigError, match=r"stages\[1\].method: 'myopic' changes the model's shape"):
        testbed.train_stages(task, [{"steps": 10}, {"steps": 10, "method": "myopic"}], **KW)
    with pytest.raises(ConfigError, match=r"stages\[0\].split: .* no split 'nope'"):
        testbed.train_stages(task, [{"steps": 10, "split": "nope"}], **KW)
    with pytest.raises(ConfigError, match=r"stages\[0\].steps"):
        testbed.train_stages(task, [{"steps": 0}], **KW)
    with pytest.raises(ConfigError, match=r"unknown field\(s\) stepz"):
        testbed.train_stages(task, [{"stepz": 3}], **KW)
    with pytest.raises(ConfigError, match="train-split"):
        testbed.train(task, steps=5, train_split="nope", **KW)


STAGED_SUITE = """
name = "staged"
seeds = 2

[train]
batch_size = 32
evals = 12
eval_size = 64
probe_points = 16

[[train.stages]]
steps = 60
name = "pre-train"

[[train.stages]]
steps = 40
split = "{split}"
optimizer = {{ name = "sgd", lr = 0.01, momentum = 0.0 }}
name = "fine-tune"

[grid]
tasks = ["sine_line"]
methods = ["mse"]
models = [{{ name = "mlp", width = 8, depth = 1 }}]
"""


def test_a_suite_cell_runs_in_stages_and_its_figures_mark_them(tmp_path):
    from testbed.analyses.figkit import stage_starts
    from testbed.analyses.plateaus.figures import loss_curves
    from testbed.report.build import analysed_tables
    from testbed.suites.runner import run_suite
    from testbed.suites.spec import load_suite

    ood = testbed.make_task("sine_line").ood_splits[0]
    path = tmp_path / "s.toml"
    path.write_text(STAGED_SUITE.format(split=ood))
    s = load_suite(path)
    (cell,) = s.cells
    assert cell.total_steps == 100 and cell.config()["train"]["stages"][1]["optimizer"]["name"] == "sgd"
    run_suite(s, tmp_path / "results", quiet=True)
    tables = analysed_tables(tmp_path / "results" / "staged", s)
    st = tables["stages"]
    assert st[["name", "start", "steps", "split", "stage_optimizer"]].values.tolist() == [
        ["pre-train", 0, 60, "train", "adam"], ["fine-tune", 60, 40, ood, "sgd"]]
    h = tables["history"]
    assert h["step"].max() == 100 and not h.duplicated(["cell", "run", "step", "split", "piece", "metric"]).any()
    assert tables["batch_loss"]["step"].max() == 100 and len(tables["batch_loss"]) == 2 * 100
    assert stage_starts(tables, [cell.key]) == [(60, "fine-tune")]
    fig = loss_curves(tables, "sine_line")
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == "stage_start"]
    assert lines and all(ln.get_xdata()[0] == 60 for ln in lines)


@pytest.mark.parametrize("stage,message", [
    ('steps = 0', "train.stages\\[0\\].steps"),
    ('steps = 5\nmethod = "nope"', "unknown method 'nope'"),
    ('steps = 5\nsplit = "nope"', "no split 'nope'"),
    ('steps = 5\nmethod = "ce"', "changes the model's shape"),
    ('steps = 5\nwhen = 1', "train.stages\\[0\\].when"),
])
def test_bad_stages_are_refused_naming_the_field(tmp_path, stage, message):
    from testbed.suites.spec import SuiteError, load_suite

    text = STAGED_SUITE.format(split="train").replace('steps = 60\nname = "pre-train"', stage)
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(SuiteError, match=message):
        load_suite(path)
