"""Prompt tasks in suites (`testbed.suites.prompt_cells`) and the ``icl`` analysis: the spec,
the cell's tables, the comparison, the findings and the report's figures, on tiny configs."""

import numpy as np
import pandas as pd
import pytest

import testbed
from testbed.suites.runner import run_suite
from testbed.suites.spec import SuiteError, suite_from_spec
from testbed.tasks.prompts import list_prompt_tasks

TINY = {"name": "icl_tiny", "seeds": 2, "train": {"steps": 40, "batch_size": 16, "evals": 2},
        "grid": {"prompt_tasks": ["icl_linear"],
                 "models": [{"name": "transformer", "width": 8, "depth": 1, "heads": 2}, {"name": "linear_attention"}]},
        "prompts": {"d": 2, "points": 4, "shifts": ["scale_2", "more_points"], "eval_prompts": 16,
                    "probe_prompts": 2}}


def _spec(**changes):
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for path, value in changes.items():
        top, _, key = path.partition(".")
        if key:
            spec[top] = {**spec.get(top, {}), key: value}
        else:
            spec[top] = value
    return spec


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    root = tmp_path_factory.mktemp("icl")
    suite = suite_from_spec(TINY, path="icl.toml")
    run = run_suite(suite, root, quiet=True)
    return suite, run, testbed.load_tables(run.root, suite)


def test_a_prompt_suite_has_one_cell_per_model_keyed_apart_from_row_cells():
    s = suite_from_spec(TINY, path="icl.toml")
    assert [c.kind for c in s.cells] == ["prompts", "prompts"]
    assert {c.model.label for c in s.cells} == {"transformer", "linear_attention"}
    cfg = s.cells[0].config()
    assert cfg["kind"] == "prompts" and list(cfg["train"]["shifts"]) == ["none", "scale_2", "more_points"]
    other = suite_from_spec(_spec(**{"prompts.shifts": ["scale_2"]}), path="icl.toml")
    assert other.cells[0].key != s.cells[0].key  # what is evaluated keys the cell


@pytest.mark.parametrize("changes, field, words", [
    ({"grid.tasks": ["step"]}, "grid.tasks", "not both"),
    ({"grid.prompt_tasks": ["icl_cubic"]}, "grid.prompt_tasks", "icl_linear"),
    ({"prompts.shifts": ["sideways"]}, "prompts.shifts", "scale_2"),
    ({"prompts.baselines": ["oracle"]}, "prompts.baselines", "least_squares"),
    ({"prompts.probe_prompts": -1}, "prompts.probe_prompts", ">= 0"),
    ({"prompts.depth": 3}, "prompts.depth", "accepted"),
    ({"train.probe_points": 8}, "train.probe_points", "does not apply"),
    ({"grid.lr": [1e-3, 1e-2]}, "grid.lr", "one optimizer per value"),
    ({"analyses": ["routing"]}, "analyses", "name none"),
    ({"grid.models": [{"name": "mlp"}]}, "grid.models[0].name", "transformer"),
    ({"grid.models": [{"name": "transformer", "width": 8, "heads": 2, "max_points": 5}]}, "model of task",
     "at least 9"),
    ({"grid.methods": [{"name": "mse", "loss_at": "middle"}]}, "method of task", "all, last"),
    ({"prompts.d": 0}, "task 'icl_linear'", "positive integer"),
])
def test_bad_prompt_suites_name_the_field(changes, field, words):
    with pytest.raises(SuiteError) as e:
        suite_from_spec(_spec(**changes), path="icl.toml")
    assert "icl.toml" in str(e.value) and field in str(e.value) and words in str(e.value)


def test_prompts_without_prompt_tasks_is_refused():
    spec = {"grid": {"tasks": ["step"], "methods": ["mse"]}, "prompts": {"d": 3}}
    with pytest.raises(SuiteError, match="field 'prompts'"):
        suite_from_spec(spec, path="s.toml", build=False)


@pytest.mark.parametrize("name", list_prompt_tasks())
def test_every_prompt_task_builds_in_a_suite(name):
    s = suite_from_spec(_spec(**{"grid.prompt_tasks": [name], "prompts.d": 3}), path="icl.toml")
    assert {c.task for c in s.cells} == {name}


def test_a_prompt_cell_stores_the_tables_every_reader_knows(ran):
    suite, run, t = ran
    assert len(run.ran) == 2
    h = t["history"]
    assert set(h["split"].astype(str)) == {"train", "scale_2", "more_points"}
    assert set(h["metric"].astype(str)) == {"mse", "loss"}
    e = t["icl_error"]
    final = e[(e["step"] == 40) & (e["shift"] == "none") & (e["n"] == 4)]
    mse = h[(h["step"] == 40) & (h["split"] == "train") & (h["metric"] == "mse")]
    # the history's mse is the error of the query from all K examples
    np.testing.assert_allclose(np.sort(final["error"].to_numpy()), np.sort(mse["value"].to_numpy()))
    more = e[(e["shift"] == "more_points")]
    assert more["n"].max() == 8  # twice the training length
    assert set(t["icl_baselines"]["baseline"].astype(str)) == {"least_squares", "averaging", "one_step_gd", "knn"}
    p = t["icl_probes"]
    assert set(p["n"]) == {1, 2, 4} and p["prompt"].nunique() == 2 and p["step"].nunique() == 2
    assert len(t["batch_loss"]) == 2 * 2 * 40  # cells x seeds x updates


def test_the_comparison_lists_models_and_baselines_at_d_half_d_and_2d(ran):
    from testbed.report.compare import comparison

    suite, run, t = ran
    comp = comparison(t)
    table = comp["icl_error"]
    rows = table[(table["task"] == "icl_linear") & (table["shift"] == "none")]
    assert set(rows["model or baseline"]) == {"mse/transformer", "mse/linear_attention", "baseline: least_squares",
                                              "baseline: averaging", "baseline: one_step_gd", "baseline: knn"}
    assert list(table.columns[3:]) == ["N = d/2", "N = d", "N = 2d"]
    long = comp["icl_long"]
    ls = t["icl_baselines"]
    ls = ls[(ls["baseline"] == "least_squares") & (ls["shift"] == "none") & (ls["n"] == 4)]["error"]
    assert float(ls.mean()) < 1e-8  # least squares is exact once N >= d (d = 2, N = 4)
    assert set(long["examples"]) == set(range(5)) | set(range(9))
    near = comp["icl_closest"]
    assert set(near["n"]) == {1, 2, 4}


def test_the_findings_say_what_each_model_reaches_and_behaves_like(ran):
    from testbed.report.compare import comparison

    _, _, t = ran
    found = comparison(t)["findings"]
    text = " ".join(found.loc[found["task"] == "icl_linear", "finding"])
    assert "mse/transformer at N = 4" in text and "least squares" in text and "nearest to" in text


def test_the_report_draws_the_error_and_probe_figures(ran, tmp_path):
    from testbed.report.build import build_report

    suite, run, _ = ran
    build_report(run.root, suite)
    figs = sorted(p.name for p in (run.root / "figures").glob("*.png"))
    assert "icl_linear-error_vs_n.png" in figs and "icl_linear-probe_predictions.png" in figs
    assert "normalized error against the number of in-context examples" in (run.root / "report.html").read_text()


def test_a_rerun_skips_finished_cells_and_force_gives_the_same_numbers(ran):
    suite, run, t = ran
    again = run_suite(suite, run.root.parent, quiet=True)
    assert again.ran == [] and len(again.skipped) == 2
    forced = run_suite(suite, run.root.parent, quiet=True, force=True)
    assert len(forced.ran) == 2
    t2 = testbed.load_tables(run.root, suite)
    cols = ["cell", "seed", "step", "shift", "n"]
    a, b = (x["icl_error"].sort_values(cols).reset_index(drop=True) for x in (t, t2))
    pd.testing.assert_frame_equal(a, b)


PROBE = """
import json, sys
from testbed.report.build import build_report
from testbed.suites.runner import run_suite
from testbed.suites.spec import suite_from_spec
suite = suite_from_spec(json.loads(sys.argv[1]), path="icl.toml", build=False)
run = run_suite(suite, sys.argv[2], quiet=True)
build_report(run.root, suite)
print(len(run.skipped), "jax" in sys.modules)
"""


def test_a_finished_prompt_suite_reopens_without_jax(ran):
    import json
    import os
    import subprocess
    import sys

    suite, run, _ = ran
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_PLUGINS"}  # a plug-in may start JAX
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(TINY), str(run.root.parent)], capture_output=True,
                         text=True, check=True, env=env)
    assert res.stdout.split() == ["2", "False"], res.stderr[-2000:]  # both cells skipped, JAX never started
