"""The task registry: every task builds and is cached, registration, spec folders, clashes, edits, errors."""

import dataclasses
import inspect
import os
import uuid

import jax.numpy as jnp
import numpy as np
import pytest

from testbed.core.errors import ConfigError, SpecError, TestbedError, UnknownNameError
from testbed.tasks import registry
from testbed.tasks.registry import (
    add_task_dir,
    list_tasks,
    make_task,
    register_task,
    spec_files,
    task_dirs,
)
from testbed.tasks.task import Task

RAMP = """name = "{name}"
description = "a ramp of slope {slope}"
target = "scalar"

[domain]
low = [-1.0]
high = [1.0]

[params]
slope = {slope}

[[pieces]]
name = "ramp"
where = "x >= -1"
f = "slope * x"

[splits]
train = "x < 0"
right = "x >= 0"
"""


def _ramp(folder, name, slope=2.0, file=None):
    path = folder / (file or f"{name}.toml")
    path.write_text(RAMP.format(name=name, slope=slope))
    return path


def _unique(prefix="tmp_task"):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def _keep_spec_folders():
    """Every test starts with no added spec folders and leaves them as it found them."""
    saved = list(registry._EXTRA_DIRS)
    registry._EXTRA_DIRS.clear()
    yield
    registry._EXTRA_DIRS[:] = saved


@pytest.fixture
def throwaway():
    """A fresh task name, removed from the registry (and its cache) afterwards."""
    name = _unique()
    yield name
    registry._FACTORIES.pop(name, None)
    for k in [k for k in registry._CACHE if k[0] == name]:
        del registry._CACHE[k]


def _overridable(name: str) -> dict[str, float]:
    """Numeric parameters a task accepts as overrides, with their current values."""
    if name in spec_files():
        return dict(make_task(name).params)
    sig = inspect.signature(registry._FACTORIES[name])
    return {p.name: p.default for p in sig.parameters.values()
            if isinstance(p.default, int | float) and not isinstance(p.default, bool)}


@pytest.mark.parametrize("name", list_tasks())
def test_every_listed_task_builds_once_per_request(name):
    t = make_task(name)
    assert isinstance(t, Task) and t.name == name
    assert make_task(name) is t
    files = spec_files()
    assert t.source == (str(files[name]) if name in files else "python")
    params = _overridable(name)
    if not params:
        return
    k, v = next(iter(params.items()))
    new = v + 1
    t2 = make_task(name, **{k: new})
    assert t2 is not t and make_task(name, **{k: new}) is t2
    if k in t2.params:
        assert t2.params[k] == new and t.params[k] == v
    if len(params) >= 2:  # keyword order does not matter
        (k1, v1), (k2, v2) = list(params.items())[:2]
        a = make_task(name, **{k1: v1 + 1, k2: v2 + 1})
        assert make_task(name, **{k2: v2 + 1, k1: v1 + 1}) is a and a is not t2


@pytest.mark.parametrize("name", list_tasks())
def test_an_unknown_override_names_the_param(name):
    with pytest.raises(TestbedError, match="no_such_param"):
        make_task(name, no_such_param=1.0)


def test_toml_override_errors_list_the_accepted_params():
    with pytest.raises(SpecError, match=r"unknown override 'frq'.*freq"):
        make_task("sine_line", frq=3.0)
    with pytest.raises(SpecError, match="params.freq"):
        make_task("sine_line", freq="fast")


def test_list_overrides_are_cached_like_tuples():
    a = make_task("deep_linear", singular_values=[3.0, 1.0])
    assert make_task("deep_linear", singular_values=(3.0, 1.0)) is a
    assert a is not make_task("deep_linear")


def test_register_task_refuses_a_duplicate_name(throwaway):
    base = make_task("two_slopes")

    @register_task(throwaway)
    def first():
        return dataclasses.replace(base, name=throwaway)

    assert throwaway in list_tasks()
    t = make_task(throwaway)
    assert t.name == throwaway and make_task(throwaway) is t
    with pytest.raises(ConfigError, match=f"{throwaway}.*already registered"):
        register_task(throwaway)(lambda: base)
    assert registry._FACTORIES[throwaway] is first and make_task(throwaway) is t


def test_register_task_by_function_name(throwaway):
    def factory(slope: float = 1.0):
        return dataclasses.replace(make_task("two_slopes"), name=throwaway, params={"slope": slope})

    factory.__name__ = throwaway
    assert register_task(factory) is factory
    assert make_task(throwaway, slope=2.0).params["slope"] == 2.0
    with pytest.raises(ConfigError, match="bad arguments.*slop"):
        make_task(throwaway, slop=2.0)


def test_a_factory_must_return_a_task(throwaway):
    register_task(throwaway)(lambda: 42)
    with pytest.raises(ConfigError, match="returned int, not a Task"):
        make_task(throwaway)


def test_register_task_refuses_a_name_a_spec_uses():
    try:
        with pytest.raises(ConfigError, match="two_slopes"):
            register_task("two_slopes")(lambda: make_task("step"))
        assert "two_slopes" in list_tasks()
    finally:
        if registry._FACTORIES.get("two_slopes") is not None:
            del registry._FACTORIES["two_slopes"]


def test_add_task_dir_lists_and_builds_its_specs(tmp_path):
    name = _unique()
    path = _ramp(tmp_path, name, slope=2.0)
    assert name not in list_tasks()
    add_task_dir(tmp_path)
    add_task_dir(str(tmp_path))  # again, as a string: still one entry
    assert task_dirs().count(tmp_path) == 1 and task_dirs()[-1] == tmp_path
    assert name in list_tasks() and spec_files()[name] == path
    t = make_task(name)
    assert t.source == str(path) and t.pieces == ("ramp",) and t.splits == ("train", "right")
    x = jnp.array([[-0.5], [0.25]])
    np.testing.assert_allclose(t(x), [-1.0, 0.5])
    np.testing.assert_allclose(make_task(name, slope=-3.0)(x), [1.5, -0.75])
    with pytest.raises(ConfigError, match="is not a folder"):
        add_task_dir(tmp_path / "missing")


def test_testbed_tasks_folders_come_after_the_built_ins(monkeypatch, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    na, nb = _unique("env_a"), _unique("env_b")
    _ramp(a, na), _ramp(b, nb, slope=4.0)
    monkeypatch.setenv("TESTBED_TASKS", os.pathsep.join([str(a), "", str(b)]))
    add_task_dir(a)  # also added: listed once
    dirs = task_dirs()
    assert dirs[1:] == [a, b] and (dirs[0] / "two_slopes.toml").is_file()
    assert {na, nb} <= set(list_tasks())
    assert make_task(nb).params["slope"] == 4.0
    monkeypatch.delenv("TESTBED_TASKS")
    assert nb not in list_tasks() and na in list_tasks()


def test_a_spec_named_like_a_built_in_names_both_files(tmp_path):
    mine = _ramp(tmp_path, "two_slopes", file="mine.toml")
    add_task_dir(tmp_path)
    builtin = task_dirs()[0] / "two_slopes.toml"
    for call in (spec_files, list_tasks, lambda: make_task("sine_line")):
        with pytest.raises(SpecError) as e:
            call()
        assert str(mine) in str(e.value) and str(builtin) in str(e.value) and e.value.field == "name"


def test_a_spec_named_by_its_file_stem_clashes_too(tmp_path):
    (tmp_path / "sine_line.toml").write_text(RAMP.replace('name = "{name}"\n', "").format(slope=1.0))
    add_task_dir(tmp_path)
    with pytest.raises(SpecError, match="sine_line"):
        spec_files()


def test_clashes_between_user_folders_and_with_python_tasks(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    name = _unique()
    pa, pb = _ramp(a, name), _ramp(b, name)
    add_task_dir(a), add_task_dir(b)
    with pytest.raises(SpecError) as e:
        list_tasks()
    assert str(pa) in str(e.value) and str(pb) in str(e.value)
    registry._EXTRA_DIRS.remove(b)
    assert name in list_tasks()
    py = next(n for n in list_tasks() if n not in spec_files())  # a Python task
    c = tmp_path / "c"
    c.mkdir()
    pc = _ramp(c, py)
    add_task_dir(c)
    with pytest.raises(SpecError, match="Python task") as e:
        list_tasks()
    assert str(pc) in str(e.value)


def _touch_later(path, seconds=1):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_editing_a_spec_gives_a_new_task(tmp_path):
    name = _unique()
    path = _ramp(tmp_path, name, slope=2.0)
    add_task_dir(tmp_path)
    t1 = make_task(name)
    assert make_task(name) is t1
    _ramp(tmp_path, name, slope=5.0)
    _touch_later(path)
    t2 = make_task(name)
    assert t2 is not t1 and t2.params["slope"] == 5.0 and make_task(name) is t2
    np.testing.assert_allclose(t2(jnp.array([[0.5]])), [2.5])
    renamed = _unique()
    path.write_text(RAMP.format(name=renamed, slope=1.0))
    _touch_later(path, 2)
    assert renamed in list_tasks() and name not in list_tasks()
    with pytest.raises(UnknownNameError):
        make_task(name)


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as e:
        make_task("two_slope")
    err = e.value
    assert isinstance(err, KeyError) and err.kind == "task" and err.name == "two_slope"
    assert sorted(err.known) == list_tasks()
    assert "'two_slope'" in str(err) and "two_slopes" in str(err)
    for name in list_tasks():
        assert name in str(err)
