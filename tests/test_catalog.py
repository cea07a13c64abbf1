"""The catalog: the names a suite file may use, known without JAX, are the registries' names."""

import importlib.resources
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.core import catalog

# In a fresh process: the catalog's answer before any registry is imported, then every
# registry's own list, and whether JAX had started before the registries were imported.
PROBE = """
import json, sys
from testbed.core import catalog
before = {kind: catalog.names(kind) for kind in catalog.REGISTRIES}
jax_before = "jax" in sys.modules
from testbed.methods import list_methods
from testbed.models import list_models
from testbed.tasks.registry import list_tasks, spec_files
from testbed.training.optim import list_optimizers
from testbed.tasks.prompts import SHIFTS, list_prompt_tasks
from testbed.tasks.prompt_baselines import BASELINES
from testbed.models.sequence import list_prompt_models
after = {"method": list_methods(), "model": list_models(), "optimizer": list_optimizers(), "task": list_tasks(),
         "prompt_task": list_prompt_tasks(), "prompt_model": list_prompt_models(), "shift": list(SHIFTS),
         "baseline": list(BASELINES)}
python_tasks = sorted(set(list_tasks()) - set(spec_files()))
print(json.dumps({"before": before, "after": after, "python_tasks": python_tasks, "jax_before": jax_before}))
"""


def _bare_env() -> dict:
    """This environment without the plug-ins and spec folders a developer may have set."""
    return {k: v for k, v in os.environ.items() if k not in ("TESTBED_PLUGINS", "TESTBED_TASKS")}


def test_the_built_in_names_are_the_registries_and_are_known_without_jax():
    res = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=_bare_env())
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert not got["jax_before"]  # the catalog alone never starts JAX
    assert set(got["after"]) == set(catalog.REGISTRIES)
    for kind in catalog.REGISTRIES:  # a built-in missing from catalog.BUILTIN fails here, by kind
        assert got["before"][kind] == got["after"][kind], (kind, "catalog.BUILTIN is out of date")
    assert sorted(catalog.BUILTIN["task"]) == got["python_tasks"]


PLUGIN = """
import testbed
from testbed.models.sequence import Transformer, register_prompt_model

@testbed.register_method("catalog_mae")
def catalog_mae():
    return testbed.make_method("mse")

register_prompt_model("catalog_tf")(Transformer)
"""


def test_a_plugin_s_names_are_known_once_it_registered_them(tmp_path):
    (tmp_path / "lab.py").write_text(PLUGIN)
    probe = ("from testbed.core import catalog\nfrom testbed.core.plugins import load_plugins\n"
             "assert 'catalog_mae' not in catalog.names('method')\n"
             f"load_plugins([{str(tmp_path / 'lab.py')!r}])\n"
             "print('catalog_mae' in catalog.names('method'), 'catalog_tf' in catalog.names('prompt_model'))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=_bare_env())
    assert res.returncode == 0 and res.stdout.split() == ["True", "True"], res.stderr[-2000:]


def test_the_built_in_spec_folder_is_the_packaged_one():
    assert catalog.builtin_specs() == Path(str(importlib.resources.files("testbed.tasks.specs")))


def test_a_spec_folder_on_testbed_tasks_is_seen(tmp_path, monkeypatch):
    (tmp_path / "wiggle.toml").write_text('name = "catalog_wiggle"\n')
    monkeypatch.setenv("TESTBED_TASKS", str(tmp_path))
    assert "catalog_wiggle" in catalog.names("task")
    probe = "from testbed.core import catalog; print('catalog_wiggle' in catalog.names('task'))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "True"  # and so does the catalog, without the registry
    monkeypatch.setenv("TESTBED_TASKS", str(tmp_path / "missing"))
    with pytest.raises(Exception, match="TESTBED_TASKS: .*is not a folder"):
        catalog.spec_dirs()
