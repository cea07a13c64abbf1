"""Suites: parsing and its errors, cell keys, resume after a kill, attribution."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import testbed
from testbed.analyses.attribution.measure import attribution
from testbed.suites.runner import run_suite
from testbed.suites.spec import SuiteError, load_suite
from testbed.suites.tables import load_tables

TINY_SUITE = """
name = "tiny"
seeds = 2

[train]
steps = 30
batch_size = 32
evals = 3
eval_size = 64
probe_points = 16

[grid]
tasks = ["sine_line", "two_slopes"]
methods = ["mse"]
models = [{ name = "mlp", width = 8, depth = 1 }]
"""


def write(tmp_path, text, name="suite.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_cells_and_labels(tmp_path):
    s = load_suite(write(tmp_path, TINY_SUITE + '\n[overrides.two_slopes]\nmethods = ["mse", {name = "ce", bins = 16}]\n'))
    assert [(c.task, c.method.label) for c in s.cells] == [("sine_line", "mse"), ("two_slopes", "mse"),
                                                          ("two_slopes", "ce")]
    assert s.cells[0].seeds == (0, 1)


@pytest.mark.parametrize("change,field,message", [
    ('tasks = ["sine_line", "nope"]', "grid.tasks", "unknown task 'nope'"),
    ('methods = ["mse", "sgd_magic"]', "grid.methods[1].name", "unknown method 'sgd_magic'"),
    ('methods = []', "grid.methods", "expected a non-empty list"),
    ('tasks = []', "grid.tasks", "expected a non-empty list"),
    ('colour = "red"', "grid.colour", "unknown field"),
    ('models = [{ name = "mlp", width = -3 }]', "model of task", "model.width"),
    ('lr = [-1.0]', "grid.lr", "non-negative"),
])
def test_suite_errors_name_file_and_field(tmp_path, change, field, message):
    key = change.split(" = ")[0]
    text = "\n".join(line for line in TINY_SUITE.splitlines() if not line.startswith(key + " ="))
    text = text.replace("[grid]", "[grid]\n" + change)
    with pytest.raises(SuiteError) as e:
        load_suite(write(tmp_path, text))
    assert "suite.toml" in str(e.value) and field in str(e.value) and message in str(e.value)


def test_bad_toml_and_bad_train_field(tmp_path):
    with pytest.raises(SuiteError, match="not valid TOML"):
        load_suite(write(tmp_path, "name = \n"))
    with pytest.raises(SuiteError, match="train.steps.*positive integer.*0"):
        load_suite(write(tmp_path, TINY_SUITE.replace("steps = 30", "steps = 0")))
    with pytest.raises(SuiteError, match="overrides.step.*not in grid.tasks"):
        load_suite(write(tmp_path, TINY_SUITE + "\n[overrides.step]\nsteps = 5\n"))


def test_cell_keys_ignore_key_order_paths_and_labels(tmp_path):
    a = load_suite(write(tmp_path, TINY_SUITE))
    reordered = TINY_SUITE.replace('models = [{ name = "mlp", width = 8, depth = 1 }]',
                                   'models = [{ depth = 1, name = "mlp", width = 8 }]')
    reordered = reordered.replace("steps = 30\nbatch_size = 32", "batch_size = 32\nsteps = 30")
    (tmp_path / "elsewhere").mkdir()
    b = load_suite(write(tmp_path / "elsewhere", reordered, "other_name.toml"))
    c = load_suite(write(tmp_path, TINY_SUITE.replace('methods = ["mse"]', 'methods = [{name = "mse", label = "plain"}]'),
                         "labelled.toml"))
    assert [x.key for x in a.cells] == [x.key for x in b.cells] == [x.key for x in c.cells]
    d = load_suite(write(tmp_path, TINY_SUITE.replace("steps = 30", "steps = 31"), "d.toml"))
    assert not set(x.key for x in d.cells) & set(x.key for x in a.cells)


def test_run_skips_finished_cells_and_tables_follow_the_schema(tmp_path):
    s = load_suite(write(tmp_path, TINY_SUITE))
    first = run_suite(s, tmp_path / "results", quiet=True)
    assert len(first.ran) == 2 and not first.skipped
    again = run_suite(s, tmp_path / "results", quiet=True)
    assert not again.ran and len(again.skipped) == 2
    tables = load_tables(tmp_path / "results" / "tiny", s)
    h = tables["history"]
    assert list(h.columns[:7]) == ["cell", "task", "method", "model", "optimizer", "target", "primary"]
    assert set(h["task"]) == {"sine_line", "two_slopes"} and set(h["primary"]) == {"mse"}
    assert not h.duplicated(["cell", "run", "step", "split", "piece", "metric"]).any()
    att = tables["attribution"]
    sums = att.groupby(["cell", "run", "split"], observed=True)["fraction"].sum()
    np.testing.assert_allclose(sums, 1.0)
    p = tables["probes"]
    assert {"grid", "ood"} == set(p["kind"]) and set(p["seed"]) == {0}
    agg = pd.read_parquet(tmp_path / "results" / "tiny" / "results.parquet")
    assert len(agg) == len(h)
    # A folder written before cells recorded their facts (target, primary) reads the same.
    import json

    for cfg_path in (tmp_path / "results" / "tiny").glob("*/config.json"):
        cfg = json.loads(cfg_path.read_text())
        assert cfg.pop("facts") == {"target": "scalar", "primary": "mse", "zero_loss": 0.0}
        cfg_path.write_text(json.dumps(cfg))
    old = load_tables(tmp_path / "results" / "tiny", s)["history"]
    assert old[["target", "primary"]].astype(str).drop_duplicates().values.tolist() == [["scalar", "mse"]]


def test_kill_mid_suite_then_resume_equals_uninterrupted_run(tmp_path):
    suite = write(tmp_path, TINY_SUITE)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "testbed.cli", "bench", str(suite), "--no-report", "-q"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["--results", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if list((killed / "tiny").glob("*/DONE")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the suite finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(list((killed / "tiny").glob("*/DONE"))) == 1
    subprocess.run(cmd + ["--results", str(killed)], env=env, check=True, capture_output=True)
    whole = tmp_path / "whole"
    subprocess.run(cmd + ["--results", str(whole)], env=env, check=True, capture_output=True)
    a = pd.read_parquet(killed / "tiny" / "results.parquet")
    b = pd.read_parquet(whole / "tiny" / "results.parquet")
    assert not a.duplicated().any()
    pd.testing.assert_frame_equal(a, b)


def test_attribution_on_a_constructed_case():
    """Predictions equal to the named candidate on the OOD probes are attributed to it."""
    task = testbed.make_task("sine_line")
    r = testbed.train(task, "mse", model=testbed.MLP(width=8, depth=1), steps=5, seeds=2, evals=2,
                      eval_size=32, probe_points=32, quiet=True)
    x = jnp.asarray(r.probe.x)
    preds = r.predictions.copy()
    preds[0, -1] = np.asarray(task.candidate("line_everywhere", x))  # run 0 follows the line
    preds[1, -1] = np.asarray(task(x))  # run 1 follows the target
    r.predictions = preds
    att = attribution(task, r).set_index(["run", "candidate"])["fraction"]
    # On the extrapolation split, x < -1 has target sine but line x; x > 1 has both equal to x.
    assert att[(0, "line_everywhere")] == pytest.approx(0.5, abs=0.1)
    assert att[(1, "target")] == pytest.approx(1.0)
    assert att[(0, "target")] == pytest.approx(0.5, abs=0.1)  # ties go to the target
    assert set(att.index.get_level_values("candidate")) == {"target", "sine_everywhere", "line_everywhere",
                                                            "piece:sine", "piece:line", "linear_fit"}


def test_class_predictions_matching_no_candidate_count_as_other():
    task = testbed.make_task("modular_addition")
    r = testbed.train(task, "ce", model=testbed.MLP(width=8, depth=1), steps=3, seeds=1, evals=2,
                      eval_size=32, probe_points=32, quiet=True)
    x = jnp.asarray(r.probe.x)
    label = np.asarray(task(x))
    preds = r.predictions.copy()
    wrong = np.eye(23, dtype=np.float32)[(label + 1) % 23]
    preds[0, -1] = wrong * 10.0  # every prediction is a wrong class
    r.predictions = preds
    att = attribution(task, r).set_index("candidate")["fraction"]
    assert att["other"] == pytest.approx(1.0) and att["target"] == pytest.approx(0.0)


ROUTING_SUITE = """
name = "tinyroute"
seeds = 2
analyses = ["routing"]

[train]
steps = 60
batch_size = 64
evals = 3
eval_size = 128
probe_points = 16

[grid]
tasks = ["two_slopes"]
methods = ["mse", { name = "routing", l1 = 0.01, label = "routed" }]
models = [{ name = "mlp", width = 16, depth = 1 }]
optimizers = [{ name = "adam", lr = 1e-2 }]
"""


def test_routing_analyses_are_stored_compared_and_plotted(tmp_path):
    from testbed.analyses.routing.figures import routing_figure
    from testbed.report.build import analysed_tables
    from testbed.report.compare import comparison, render_markdown

    s = load_suite(write(tmp_path, ROUTING_SUITE))
    assert all(c.analyses == ("routing",) and "analyses" in c.config() for c in s.cells)
    run_suite(s, tmp_path / "results", quiet=True)
    tables = analysed_tables(tmp_path / "results" / "tinyroute", s)
    for name in ("ablation", "localization", "identification", "recovery", "recovery_curves"):
        assert set(tables[name]["method"]) == {"mse", "routed"}, name
    h = tables["history"]
    assert {"localization", "identification", "recovery_ratio", "recovery_step"} <= set(h["metric"])
    assert any(str(m).startswith("ablated_loss:") for m in h["metric"].unique())
    out = comparison(tables)
    loc = out["routing_localization"]
    assert set(loc["label"]) == {"mse", "routed"} and "two_slopes" in loc.columns
    assert "Gradient routing: identification" in render_markdown(out)
    fig = routing_figure(tables, "two_slopes")
    assert fig is not None and len(fig.axes) == 4


def test_unknown_analysis_is_refused(tmp_path):
    with pytest.raises(SuiteError, match="field 'analyses'.*accepted: .*routing"):
        load_suite(write(tmp_path, TINY_SUITE.replace('name = "tiny"', 'name = "tiny"\nanalyses = ["magic"]')))


def test_programs_compile_ahead_on_threads_and_change_no_number(tmp_path, monkeypatch):
    import threading

    from testbed.analyses.attribution import measure
    from testbed.core import durable
    from testbed.training import engine

    text = TINY_SUITE.replace('tasks = ["sine_line", "two_slopes"]', 'tasks = ["sine_line", "two_slopes", "step"]')
    s = load_suite(write(tmp_path, text))
    computed = []  # (task, thread) of every attribution candidate computation
    own = measure._candidate_values

    def recorded(task, x, train_size):
        computed.append((task.name, threading.current_thread().name))
        return own(task, x, train_size)

    monkeypatch.setattr(measure, "_candidate_values", recorded)
    monkeypatch.setattr(durable, "values_folder", lambda: tmp_path / "values")  # nothing kept on disk yet
    engine._PROGRAMS.clear()  # nothing compiled yet in this process
    measure._kept_candidates.cache_clear()
    ahead = run_suite(s, tmp_path / "ahead", quiet=True, prefetch=True)
    timing = ahead.timing["cells"]
    # the first cell's own call gets its program (compiled, or loaded from disk); the threads
    # get the others ahead, and the others' analyses' prepare work (attribution's candidates)
    first = ahead.ran[0]
    assert len(timing) == len(s.cells) and not any(c["compiled"] for k, c in timing.items() if k != first)
    # the time a cell waited for a thread's program counts as its compile wait
    assert all(0 <= c["prefetch_wait_s"] <= c["compile_wait_s"] for c in timing.values())
    assert sorted(t for t, _ in computed) == ["sine_line", "step", "two_slopes"]  # once a task
    assert [th.startswith("testbed-compile") for t, th in computed if t != "sine_line"] == [True, True]
    engine._PROGRAMS.clear()
    measure._kept_candidates.cache_clear()
    monkeypatch.setattr(durable, "values_folder", lambda: tmp_path / "values_inline")  # computed again, not read
    inline = run_suite(s, tmp_path / "inline", quiet=True, prefetch=False)
    assert sorted(inline.ran) == sorted(ahead.ran)
    assert all(th == "MainThread" for _, th in computed[3:]) and len(computed) == 6
    for key in ahead.ran:
        for table in ("history", "attribution"):
            a = pd.read_parquet(tmp_path / "ahead" / s.name / key / f"{table}.parquet")
            b = pd.read_parquet(tmp_path / "inline" / s.name / key / f"{table}.parquet")
            pd.testing.assert_frame_equal(a, b)


def test_probe_inputs_are_the_probes_train_records():
    from testbed.training.engine import probe_inputs

    r = testbed.train("two_slopes", "mse", testbed.MLP(width=8, depth=1), seeds=[0], steps=5, evals=2, eval_size=32,
                      probe_points=16)
    np.testing.assert_array_equal(probe_inputs("two_slopes", eval_size=32, probe_points=16), r.probe.x)


def test_a_cell_changed_after_it_finished_is_found_and_redone(tmp_path):
    from testbed.suites.store import SuiteStore

    suite = load_suite(write(tmp_path, TINY_SUITE))
    run = run_suite(suite, tmp_path / "results", quiet=True)
    store = SuiteStore(run.root)
    key = suite.cells[0].key
    before = pd.read_parquet(store.cell_dir(key) / "history.parquet")
    assert all(store.verify_cell(k) is None for k in run.ran)
    path = store.cell_dir(key) / "history.parquet"
    path.write_bytes(path.read_bytes()[:100])  # truncated after DONE
    assert "history.parquet changed" in store.verify_cell(key)
    with pytest.warns(UserWarning, match=f"{key}: history.parquet changed after the cell finished"):
        again = run_suite(suite, tmp_path / "results", quiet=True)
    assert again.ran == [key] and len(again.skipped) == len(suite.cells) - 1
    pd.testing.assert_frame_equal(pd.read_parquet(path), before)  # redone: the same numbers
    (store.cell_dir(key) / "runs.parquet").unlink()
    assert store.verify_cell(key) == "runs.parquet is missing"


def test_a_second_writer_on_the_same_suite_folder_is_stopped(tmp_path):
    from testbed.suites.store import SuiteLockedError, SuiteStore

    suite = load_suite(write(tmp_path, TINY_SUITE))
    code = (f"import time; from testbed.suites.store import SuiteStore\n"
            f"with SuiteStore({str(tmp_path / 'results' / 'tiny')!r}).lock():\n"
            "    print('held', flush=True); time.sleep(30)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SuiteLockedError, match=rf"tiny is being written by pid {holder.pid} since"):
            run_suite(suite, tmp_path / "results", quiet=True)
        assert SuiteStore(tmp_path / "results" / "tiny").done_keys() == []  # nothing was written
    finally:
        holder.kill()
        holder.wait()
    assert len(run_suite(suite, tmp_path / "results", quiet=True).ran) == len(suite.cells)  # released on death


def test_an_unwritable_results_folder_fails_before_anything_runs(tmp_path):
    from testbed.core.files import StoreError

    suite = load_suite(write(tmp_path, TINY_SUITE))
    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    with pytest.raises(StoreError, match=r"cannot write the results folder .*a_file/tiny"):
        run_suite(suite, blocked, quiet=True)


def test_a_full_disk_names_the_folder_keeps_finished_cells_and_the_next_run_continues(tmp_path, monkeypatch):
    import errno

    from testbed.core import files as files_mod
    from testbed.core.files import StoreError

    suite = load_suite(write(tmp_path, TINY_SUITE))
    real, writes = files_mod.atomic_write_bytes, []

    def full_after_one_cell(path, data):
        if path.name == "history.parquet":
            writes.append(path)
            if len(writes) > 1:  # the second cell's history: the disk is full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real(path, data)

    monkeypatch.setattr(files_mod, "atomic_write_bytes", full_after_one_cell)
    with pytest.raises(StoreError, match=r"cannot write cell \w+ into .*tiny: No space left on device.*kept"):
        run_suite(suite, tmp_path / "r", quiet=True)
    monkeypatch.undo()
    done = list((tmp_path / "r" / "tiny").glob("*/DONE"))
    assert len(done) == 1 and not list((tmp_path / "r" / "tiny").glob(".staging/*"))
    again = run_suite(suite, tmp_path / "r", quiet=True)
    assert len(again.ran) == 1 and len(again.skipped) == 1
    run_suite(suite, tmp_path / "whole", quiet=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "r" / "tiny" / "results.parquet"),
                                  pd.read_parquet(tmp_path / "whole" / "tiny" / "results.parquet"))


def test_a_suite_that_would_not_fit_in_memory_is_refused_before_any_cell_runs(tmp_path, monkeypatch):
    from testbed.training.memory import LIMIT_ENV, MemoryLimitError

    big = TINY_SUITE.replace("probe_points = 16", "probe_points = 4096").replace("evals = 3", "evals = 400")
    suite = load_suite(write(tmp_path, big.replace("seeds = 2", "seeds = 64").replace("steps = 30", "steps = 400")))
    monkeypatch.setenv(LIMIT_ENV, "0.02")
    with pytest.raises(MemoryLimitError, match=r"suite.toml: cell sine_line/mse/mlp: train: .* needs about .*"
                                               r"turn down probe_points"):
        run_suite(suite, tmp_path / "r", quiet=True)
    assert not list((tmp_path / "r" / "tiny").glob("*/DONE"))


def test_routing_block_order_enters_the_cell_key(tmp_path):
    # the first blocks take the spare units, so two orders are two configurations
    from testbed.core.files import cell_key

    def cell(blocks: str, name: str):
        text = TINY_SUITE.replace('methods = ["mse"]', f'methods = [{{ name = "routing", blocks = {blocks} }}]')
        return next(c for c in load_suite(write(tmp_path, text, name)).cells if c.task == "two_slopes")

    ab = cell('{ a = ["shallow"], b = ["steep"] }', "a.toml")
    ba = cell('{ b = ["steep"], a = ["shallow"] }', "b.toml")
    assert ab.key != ba.key
    assert json.loads(json.dumps(ba.config()["method"]["blocks"])) == [["b", ["steep"]], ["a", ["shallow"]]]
    # routing reads the pairs as it reads the table: the same blocks in the same order
    from testbed.methods.routing import block_spec
    from testbed.tasks import make_task

    task = make_task("two_slopes")
    pairs = block_spec(task, [["b", ["steep"]], ["a", ["shallow"]]])
    table = block_spec(task, {"b": ["steep"], "a": ["shallow"]})
    assert pairs.names == table.names == ("b", "a") and pairs.members == table.members
    # a table in sorted order keeps the key it had
    assert ab.key == cell_key({**ab.config(), "method": {**ab.config()["method"],
                                                          "blocks": {"a": ["shallow"], "b": ["steep"]}}})


def test_a_changed_default_enters_only_its_methods_cell_keys(tmp_path, monkeypatch):
    from testbed.core.keyed import KEYED_DEFAULTS

    def cell(methods: str, name: str):
        text = TINY_SUITE.replace('methods = ["mse"]', f"methods = [{methods}]")
        return next(c for c in load_suite(write(tmp_path, text, name)).cells if c.task == "sine_line")

    plain, default = cell('"mse"', "a.toml"), cell('"routing"', "b.toml")
    explicit, off = cell('{ name = "routing", foreign_l1 = 1.0 }', "c.toml"), cell('{ name = "routing", foreign_l1 = 0.0 }', "d.toml")
    assert plain.config()["method"] == {"name": "mse"}  # other methods' keys are as they were
    assert default.config()["method"] == {"name": "routing", **KEYED_DEFAULTS["routing"]}
    assert default.key == explicit.key != off.key  # the default and the same value given are one cell
    assert testbed.make_method("routing").hparams == testbed.make_method("routing", foreign_l1=1.0).hparams
    # a stage's method gets it too
    staged = TINY_SUITE.replace("evals = 3", 'evals = 3\nstages = [{ steps = 20, method = "routing" }, { steps = 10 }]')
    (st,) = [c for c in load_suite(write(tmp_path, staged, "e.toml")).cells if c.task == "sine_line"]
    assert st.config()["train"]["stages"][0]["method"] == {"name": "routing", **KEYED_DEFAULTS["routing"]}
    # a plain cell that the routing analysis measures on routing's default blocks is keyed by them
    routed_analysis = TINY_SUITE.replace("seeds = 2", 'seeds = 2\nanalyses = ["routing"]')

    def measured_cell(name):
        return next(c for c in load_suite(write(tmp_path, routed_analysis, name)).cells if c.task == "sine_line")

    before = measured_cell("g.toml")
    assert before.config()["analysis_defaults"] == {"routing": KEYED_DEFAULTS["routing"]}
    before_key, plain_key = before.key, plain.key
    monkeypatch.setitem(KEYED_DEFAULTS, "routing", {**KEYED_DEFAULTS["routing"], "shared": 0.25})
    assert measured_cell("h.toml").key != before_key and cell('"mse"', "i.toml").key == plain_key
    monkeypatch.undo()
    # both spellings in one grid are one configuration twice: refused, naming both
    with pytest.raises(SuiteError, match=r"field 'grid': two cells are the same configuration: sine_line / "
                                         r"\{'name': 'routing'\}.* and sine_line / \{'name': 'routing', 'foreign_l1'"):
        load_suite(write(tmp_path, TINY_SUITE.replace('methods = ["mse"]', 'methods = ["routing", '
                                                      '{ name = "routing", foreign_l1 = 1.0 }]'), "f.toml"))
