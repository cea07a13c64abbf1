"""Plug-ins: a task, a method, a model and an analysis in one user file, run by a suite through the CLI."""

from __future__ import annotations

import sys
import textwrap

import pandas as pd
import pytest

from testbed.core.plugins import PluginError, load_plugins

PLUGIN = '''
from dataclasses import dataclass

import jax.numpy as jnp
import matplotlib
import numpy as np
import pandas as pd
from flax import nnx
from matplotlib.figure import Figure as MplFigure

import testbed
from testbed.tasks.task import Domain, Piece


@testbed.register_task
def plugin_ramp(slope: float = 2.0) -> testbed.Task:
    """y = slope * x on [-1, 1]; OOD: |x| > 0.5 outside the train band."""
    return testbed.build_task(
        name="plugin_ramp", description="a ramp from a plug-in", domain=Domain("box", (-1.0,), (1.0,)),
        pieces=[Piece("ramp", lambda raw: jnp.ones(raw.shape[0], bool), lambda raw: slope * raw[:, 0])],
        splits={"train": (lambda raw: jnp.abs(raw[:, 0]) <= 0.5, None, None),
                "outside": (lambda raw: jnp.abs(raw[:, 0]) > 0.5, None, None)},
        target="scalar", params={"slope": slope})


@testbed.register_method("plugin_mae")
def plugin_mae() -> testbed.Method:
    """Mean absolute error."""
    return testbed.Method("plugin_mae", head_dim=lambda task: 1,
                          loss=lambda task, out, batch: jnp.abs(out[:, 0] - batch.y),
                          predict=lambda task, out: out[:, 0])


class _Tiny(nnx.Module):
    def __init__(self, in_dim, out_dim, width, *, rngs):
        self.a = nnx.Linear(in_dim, width, rngs=rngs)
        self.b = nnx.Linear(width, out_dim, rngs=rngs)

    def __call__(self, x):
        return self.b(jnp.tanh(self.a(x)))


@testbed.register_model("plugin_tiny")
@dataclass(frozen=True, kw_only=True)
class Tiny:
    width: int = 8  # hidden units
    name = "plugin_tiny"

    def build(self, in_dim, out_dim, *, rngs):
        return _Tiny(in_dim, out_dim, self.width, rngs=rngs)

    def hidden_sizes(self):
        return (self.width,)


def _measure(task, method, result):
    import jax

    norms = [float(np.sqrt(sum(float((np.asarray(a)[r] ** 2).sum()) for a in jax.tree.leaves(result.params))))
             for r in range(len(result.runs))]
    return {"plugin_norm": result.runs[["run", "seed", "lr", "weight_decay", "init_scale"]].assign(norm=norms)}


def _compare(v):
    df = v.with_label(v.tables["plugin_norm"])
    out = df.groupby(["label", "task"], observed=True)["norm"].mean().reset_index()
    out.attrs.update(title="Parameter norm (plug-in)", note="mean over runs")
    return {"plugin_norm": out}


def _figures(tables):
    fig = MplFigure(figsize=(3, 2))
    ax = fig.subplots()
    ax.bar(range(len(tables["plugin_norm"])), tables["plugin_norm"]["norm"])
    from testbed.analyses.base import Figure

    return [Figure("plugin_norm", "parameter norm per run\\nOne bar per run.", fig)]


@testbed.register_analysis("plugin_norm")
def plugin_norm() -> testbed.Analysis:
    return testbed.Analysis("plugin_norm", tables=("plugin_norm",), measure=_measure, compare=_compare,
                            printed=("plugin_norm",), figures=_figures)
'''

SUITE = '''
name = "plugged"
seeds = 2
plugins = ["lab/my_lab.py"]
analyses = ["plugin_norm"]

[train]
steps = 40
evals = 4
eval_size = 128
probe_points = 32

[grid]
tasks = ["plugin_ramp"]
methods = ["plugin_mae"]
models = [{ name = "plugin_tiny", width = 4 }]
'''


@pytest.fixture(autouse=True)
def _restore_registries():
    """What a test's plug-ins register is gone after it, so other tests see the built-ins only."""
    from testbed.analyses.base import ANALYSES
    from testbed.core import plugins
    from testbed.methods.base import METHODS
    from testbed.models.registry import MODELS
    from testbed.tasks import registry as tasks

    regs = [ANALYSES, METHODS, MODELS]
    saved = [(dict(r._factories), dict(r._where), dict(r._cache)) for r in regs]
    saved_tasks = (dict(tasks._FACTORIES), dict(tasks._CACHE))
    saved_plugins = dict(plugins._LOADED)
    yield
    for r, (f, w, c) in zip(regs, saved, strict=True):
        r._factories, r._where, r._cache = f, w, c
    tasks._FACTORIES.clear()
    tasks._FACTORIES.update(saved_tasks[0])
    tasks._CACHE.clear()
    tasks._CACHE.update(saved_tasks[1])
    plugins._LOADED.clear()
    plugins._LOADED.update(saved_plugins)


def run_cli(monkeypatch, capsys, *args):
    from testbed import cli

    monkeypatch.setattr(sys, "argv", ["testbed", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_a_plugin_file_adds_task_method_model_and_analysis_to_a_suite(tmp_path, monkeypatch, capsys):
    (tmp_path / "lab").mkdir()
    (tmp_path / "lab" / "my_lab.py").write_text(PLUGIN)
    (tmp_path / "plugged.toml").write_text(SUITE)
    monkeypatch.chdir(tmp_path.parent)  # plug-in paths are relative to the suite file, not the cwd
    code, out, err = run_cli(monkeypatch, capsys, "bench", str(tmp_path / "plugged.toml"), "--all",
                             "--results", str(tmp_path / "results"), "-q")
    assert code == 0, err
    root = tmp_path / "results" / "plugged"
    cells = [d for d in root.iterdir() if (d / "DONE").is_file()]
    assert len(cells) == 1
    norm = pd.read_parquet(cells[0] / "plugin_norm.parquet")
    assert len(norm) == 2 and (norm["norm"] > 0).all()
    assert "Parameter norm (plug-in)" in out  # printed by the comparison
    assert (root / "tables" / "plugin_norm.csv").is_file()
    assert (root / "figures" / "plugin_norm.png").is_file()
    assert "parameter norm per run" in (root / "report.html").read_text()
    # reading the folder back loads the plug-in from the manifest: compare works in a new process too
    code, out, err = run_cli(monkeypatch, capsys, "compare", str(root), "--all")
    assert code == 0 and "Parameter norm (plug-in)" in out


def test_loading_a_plugin_twice_registers_once(tmp_path):
    path = tmp_path / "once.py"
    path.write_text("import testbed\n@testbed.register_method('plugin_once')\n"
                    "def f():\n    return testbed.make_method('mse')\n")
    a = load_plugins([str(path)])
    b = load_plugins([str(path), str(path)])
    assert a == b[:1] == b[1:]


def test_a_plugin_error_names_its_file_and_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(textwrap.dedent("""\
        import testbed

        raise RuntimeError("half-written plug-in")
        """))
    with pytest.raises(PluginError, match=r"broken\.py:3: RuntimeError: half-written plug-in"):
        load_plugins([str(path)])
    (tmp_path / "syntax.py").write_text("x = (\n")
    with pytest.raises(PluginError, match=r"syntax\.py:1"):
        load_plugins([str(tmp_path / "syntax.py")])


def test_missing_plugins_are_named(tmp_path):
    with pytest.raises(PluginError, match="does not exist"):
        load_plugins(["nowhere/lab.py"], base=tmp_path, where="suite.toml: field 'plugins'")
    with pytest.raises(PluginError, match="no plug-in module 'not_a_module_xyz'"):
        load_plugins(["not_a_module_xyz"])


def test_env_plugins_reach_every_command(tmp_path, monkeypatch, capsys):
    path = tmp_path / "env_task.py"
    path.write_text(PLUGIN.replace("plugin_ramp", "plugin_env_ramp").replace('"plugin_mae"', '"plugin_env_mae"')
                    .replace('"plugin_tiny"', '"plugin_env_tiny"').replace('"plugin_norm"', '"plugin_env_norm"'))
    monkeypatch.setenv("TESTBED_PLUGINS", str(path))
    code, out, _ = run_cli(monkeypatch, capsys, "tasks")
    assert code == 0 and "| plugin_env_ramp " in out


def test_a_plugin_may_import_a_module_beside_it(tmp_path):
    (tmp_path / "plugin_helper_mod.py").write_text("VALUE = 41\n")
    (tmp_path / "uses_helper.py").write_text("from plugin_helper_mod import VALUE\nANSWER = VALUE + 1\n")
    (name,) = load_plugins([str(tmp_path / "uses_helper.py")])
    from testbed.core import plugins

    assert plugins._LOADED[name].ANSWER == 42


def test_a_folder_whose_plugin_moved_still_reads(tmp_path, capsys):
    import json

    from testbed.report.build import load_manifest_plugins

    root = tmp_path / "results"
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"suite": "x", "plugins": [str(tmp_path / "gone.py")]}))
    assert load_manifest_plugins(root) == []
    err = capsys.readouterr().err
    assert "gone.py" in err and "does not exist" in err and "reading without it" in err
