"""The command line: output, files written, and exit status 2 with a clear message on bad input."""

import json
import os
import sys

import pandas as pd
import pytest

from testbed import cli


def run(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["testbed", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_tasks_lists_every_task(monkeypatch, capsys):
    import testbed

    code, out, _ = run(monkeypatch, capsys, "tasks")
    assert code == 0
    for name in testbed.list_tasks():
        assert f"| {name} " in out


@pytest.mark.parametrize("args,message", [
    (["train", "--task", "nope"], "unknown task 'nope'"),
    (["train", "--task", "step", "--steps", "0"], "--steps"),
    (["train", "--task", "step", "--method", "magic"], "unknown method 'magic'"),
    (["train", "--task", "step", "--model", "mlp", "--width", "0"], "model.width"),
    (["train", "--task", "step", "--optimizer", "lbfgs"], "unknown optimizer 'lbfgs'"),
    (["train", "--task", "step", "--bogus"], "No such option: --bogus"),
    (["show", "sine_line", "-o", "picture.jpg"], "must end in .png or .svg"),
    (["train", "--task", "step", "--method", "myopic", "-m", "cutoff"], "--method-arg: expected KEY=VALUE"),
    (["train", "--task", "step", "--method", "myopic", "-m", "cutoff=[1"], "cutoff: '[1' is not a TOML value"),
    (["train", "--task", "step", "--method", "myopic", "-m", "cutoff=50", "--steps", "100"],
     "cutoff=50 is outside the run: 100 steps of 10 are 10 epochs"),
    (["train", "--task", "step", "--method", "mse", "-m", "bins=3"], "unexpected keyword"),
    (["train", "--task", "step", "--stage", "ten"], "--stage: expected STEPS[:METHOD[:SPLIT]]"),
    (["train", "--task", "step", "--stage", "10", "--stage", "10:ce"], "stages[1].method: 'ce' changes the model"),
    (["train", "--task", "step", "--stage", "10::nope"], "stages[0].split"),
    (["compare", "no/such/folder"], "not a suite results folder"),
    (["export", "mlflow", "no/such/folder"], "unknown tracker 'mlflow'; accepted: tensorboard, wandb"),
    (["export", "tensorboard", "no/such/folder"], "not a suite results folder"),
    (["bench", "no/such.toml", "--executor", "ray"], "unknown executor 'ray'; accepted: inprocess, local, slurm"),
    (["bench", "no/such.toml", "--executor", "local", "--max-jobs", "0"], "max_jobs: 0"),
    (["--tasks-dir", "no/such/folder", "tasks"], "is not a folder"),
])
def test_bad_input_exits_2_with_a_clear_message(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert message in err + out


def test_bench_with_a_bad_suite_names_the_field(monkeypatch, capsys, tmp_path):
    suite = tmp_path / "bad.toml"
    suite.write_text('[grid]\ntasks = ["sine_line"]\nmethods = ["mse"]\n[train]\nsteps = -1\n')
    code, _, err = run(monkeypatch, capsys, "bench", str(suite), "--results", str(tmp_path))
    assert code == 2 and "bad.toml" in err and "train.steps" in err


def test_train_prints_summary_and_writes_the_run(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "train", "--task", "step", "--seeds", "2", "--steps", "20",
                       "--width", "8", "--depth", "1", "--evals", "3", "--out", str(tmp_path), "-q")
    assert code == 0
    for split in ("train", "boundary", "extrapolate"):
        assert f"| {split}" in out
    (folder,) = tmp_path.iterdir()
    assert {"config.json", "history.parquet", "runs.parquet", "arrays.npz"} <= {p.name for p in folder.iterdir()}
    h = pd.read_parquet(folder / "history.parquet")
    assert set(h["seed"]) == {0, 1} and h["step"].max() == 20


def test_train_in_stages_writes_one_continuous_run(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "train", "--task", "step", "--seeds", "2", "--stage", "20",
                       "--stage", "10:routing:extrapolate", "--width", "8", "--depth", "1", "--evals", "6",
                       "--out", str(tmp_path), "-q")
    assert code == 0, out
    (folder,) = tmp_path.iterdir()
    st = pd.read_parquet(folder / "stages.parquet")
    assert st[["start", "steps", "stage_method", "split"]].values.tolist() == [[0, 20, "mse", "train"],
                                                                             [20, 10, "routing", "extrapolate"]]
    assert pd.read_parquet(folder / "history.parquet")["step"].max() == 30


def test_icl_trains_and_plots_the_error_against_examples(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "icl", "--model", "linear_attention", "--d", "3", "--points", "6",
                       "--steps", "50", "--evals", "1", "--shift", "scale_2", "--curriculum-every", "20",
                       "--out", str(tmp_path), "-q")
    assert code == 0, out
    assert "| scale_2" in out and "least_squares" in out and "linear_attention" in out
    (folder,) = tmp_path.iterdir()
    assert {"history.parquet", "baselines.parquet", "config.json", "error_vs_n.png"} <= {p.name for p in folder.iterdir()}
    code, _, err = run(monkeypatch, capsys, "icl", "--model", "lstm", "--steps", "1", "--out", str(tmp_path))
    assert code == 2 and "--model: 'lstm'" in err


def test_show_writes_a_picture(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "show", "step", "-o", str(tmp_path / "step.png"))
    assert code == 0 and (tmp_path / "step.png").stat().st_size > 10_000


def test_user_task_folder(monkeypatch, capsys, tmp_path):
    (tmp_path / "mine.toml").write_text(
        'name = "my_line"\ndescription = "a line"\n[domain]\nlow = [-2.0]\nhigh = [2.0]\n'
        '[[pieces]]\nname = "line"\nf = "2 * x"\n[splits]\ntrain = "x < 0"\nright = "x >= 0"\n')
    code, out, _ = run(monkeypatch, capsys, "--tasks-dir", str(tmp_path), "tasks")
    assert code == 0 and "my_line" in out


def test_train_passes_method_arguments_and_writes_traces(monkeypatch, capsys, tmp_path):
    import numpy as np

    code, out, _ = run(monkeypatch, capsys, "train", "--task", "sine_line", "--method", "myopic", "-m", "schedule=window",
                       "-m", "start=2", "-m", "end=3", "-m", "epoch_steps=5", "-m", "stop_on_shutdown=false",
                       "--seeds", "2", "--steps", "20", "--width", "8", "--depth", "1", "--evals", "3",
                       "--out", str(tmp_path), "-q")
    assert code == 0 and "shutdown_epoch" in out and "shutdown_rate" in out
    (folder,) = tmp_path.iterdir()
    cfg = (folder / "config.json").read_text()
    assert '"schedule": "window"' in cfg and '"stop_on_shutdown": false' in cfg
    arrays = np.load(folder / "arrays.npz")
    assert arrays["trace_p_stop"].shape == (2, 20) and np.isfinite(arrays["trace_p_stop"]).all()
    assert set(pd.read_parquet(folder / "profile.parquet")["epoch"]) == set(range(8))


TINY = ('name = "tiny_cli"\nseeds = 2\n[train]\nsteps = 30\nevals = 3\neval_size = 64\nprobe_points = 16\n'
        '[grid]\ntasks = ["sine_line"]\nmethods = ["mse", "ce"]\nmodels = [{ name = "mlp", width = 8, depth = 1 }]\n')


def test_bench_prints_findings_first_and_a_finished_suite_is_read_without_jax(monkeypatch, capsys, tmp_path):
    import subprocess

    (tmp_path / "tiny.toml").write_text(TINY)
    code, out, err = run(monkeypatch, capsys, "bench", str(tmp_path / "tiny.toml"), "--results", str(tmp_path), "-q")
    assert code == 0, err
    assert "## Findings" in out and "lowest OOD mse" in out and "## OOD" not in out  # the short answer first
    assert "report: " in out and "--all" in out
    root = tmp_path / "tiny_cli"
    state = (root / "report_state.json").read_text()
    code, out, _ = run(monkeypatch, capsys, "compare", str(root), "--all")
    assert code == 0 and out.index("## Findings") < out.index("## OOD")
    # readers of a results folder never start JAX, through the command line too
    probe = ("import sys\nfrom testbed import cli\nsys.argv = ['testbed', *{args!r}]\n"
             "try:\n    cli.main()\nexcept SystemExit:\n    pass\nprint('JAX' if 'jax' in sys.modules else 'no jax')")
    devices = json.loads((root / "manifest.json").read_text())["devices"]
    env = {k: v for k, v in os.environ.items() if k != "TESTBED_PLUGINS"}  # a plug-in may start JAX
    tasks = tmp_path / "my_tasks"  # a finished suite reopened, with a spec folder added
    tasks.mkdir()
    for args in (["compare", str(root)], ["report", str(root)],
                 ["--tasks-dir", str(tasks), "bench", str(tmp_path / "tiny.toml"), "--results", str(tmp_path), "-q"]):
        res = subprocess.run([sys.executable, "-c", probe.format(args=args)], capture_output=True, text=True,
                             check=True, env=env)
        assert res.stdout.strip().endswith("no jax"), (args, res.stdout[-300:], res.stderr[-300:])
    assert "skipped 2 finished" in res.stdout
    assert (root / "report_state.json").read_text() == state  # nothing changed: all three were reused
    manifest = json.loads((root / "manifest.json").read_text())  # the devices that computed the cells
    assert manifest["devices"] == devices and manifest["skipped"] and not manifest["ran"]
    res = subprocess.run([sys.executable, "-c", probe.format(args=["compare", str(root), "--redraw"])],
                         capture_output=True, text=True, check=True, env=env)  # remade: read, derived, compared
    assert res.stdout.strip().endswith("no jax") and "## Findings" in res.stdout, res.stderr[-300:]
    code, out, _ = run(monkeypatch, capsys, "report", str(root), "--redraw", "--svg")
    assert code == 0 and any(p.suffix == ".svg" for p in (root / "figures").iterdir())


def test_model_flags_given_twice_are_refused(monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "train", "--task", "step", "--width", "8", "-M", "width=16")
    assert code == 2 and "width is also given as --width" in err


def test_reproduce_lists_runs_and_reports(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "reproduce", "--list")
    assert code == 0 and "saxe_modes: A deep linear network" in out
    code, out, err = run(monkeypatch, capsys, "reproduce", "saxe_modes", "--quick", "--out", str(tmp_path))
    assert code == 0 and "| saxe_modes " in out and "PASS" in err
    assert (tmp_path / "report.html").is_file() and (tmp_path / "saxe_modes.png").is_file()
    assert pd.read_csv(tmp_path / "reproductions.csv")["verdict"].tolist() == ["PASS"]
    code, _, err = run(monkeypatch, capsys, "reproduce", "saxe")
    assert code == 2 and "unknown reproduction 'saxe'" in err


def test_superposition_prints_the_capacities_and_plots_them(monkeypatch, capsys, tmp_path):
    code, out, _ = run(monkeypatch, capsys, "superposition", "--n", "6", "--m", "2", "--steps", "100", "--seeds", "1",
                       "--sparsity", "0", "--sparsity", "0.9", "--out", str(tmp_path))
    assert code == 0 and "capacity_sum" in out and (tmp_path / "superposition.png").is_file()
    code, _, err = run(monkeypatch, capsys, "superposition", "--m", "50")
    assert code == 2 and "m=50 hidden dimensions exceed n=20" in err
