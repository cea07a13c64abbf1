"""Plug-ins: a user's task, method, model or analysis in one Python file, without editing the package.

A plug-in is a Python file (``my_method.py``) or an importable module (``mylab.methods``)
that registers what it defines when imported (``@testbed.register_method("...")``, ...).
Plug-ins come from a suite file's ``plugins = [...]`` (paths relative to the suite file),
from ``TESTBED_PLUGINS`` (a path list, like ``PATH``) and from the CLI's ``--plugins``.
Each file is imported once per process however often it is named, so registrations are
never repeated. An error raised while importing one names the plug-in's file and line.

The shape follows pytest's ``pytest_plugins``: a plug-in is named, imported, and then
takes part through the registries alone.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from testbed.core.errors import TestbedError

ENV = "TESTBED_PLUGINS"
_LOADED: dict[str, ModuleType] = {}  # resolved path or module name -> module


class PluginError(TestbedError):
    """A plug-in could not be found or raised while it was imported; names its file and line."""


def is_path(spec: str) -> bool:
    """Whether a plug-in name is a file path (``.py`` or with a folder) rather than a module."""
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def resolve(spec: str, base: str | Path | None = None) -> str:
    """The canonical form of a plug-in name: an absolute file path, or the module name."""
    if not is_path(spec):
        return spec
    p = Path(spec).expanduser()
    if not p.is_absolute() and base is not None:
        p = Path(base) / p
    return str(p.resolve())


def load_plugins(specs: Iterable[str], *, base: str | Path | None = None, where: str = "--plugins") -> list[str]:
    """Import each plug-in once; return their canonical names (see `resolve`).

    Args:
        specs: file paths or module names.
        base: folder that relative paths are relative to (a suite file's folder); default the
            working directory.
        where: what named them (a suite file's field, ``TESTBED_PLUGINS``, ``--plugins``), for errors.

    Raises:
        PluginError: a file or module that does not exist, or one that raised while imported.
    """
    out = []
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise PluginError(f"{where}: expected a file path or module name, got {spec!r}")
        name = resolve(spec.strip(), base)
        if name not in _LOADED:
            _LOADED[name] = _import_path(name, where) if is_path(name) else _import_module(name, where)
        out.append(name)
    return out


def load_env_plugins() -> list[str]:
    """Import the plug-ins named by ``TESTBED_PLUGINS`` (``os.pathsep``-separated)."""
    parts = [p.strip() for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
    return load_plugins(parts, where=ENV)


def loaded() -> list[str]:
    """Canonical names of the plug-ins imported so far, in order."""
    return list(_LOADED)


def _import_path(path: str, where: str) -> ModuleType:
    p = Path(path)
    if not p.is_file():
        raise PluginError(f"{where}: plug-in file {path!r} does not exist")
    if p.suffix != ".py":
        raise PluginError(f"{where}: plug-in file {path!r} is not a .py file")
    mod_name = f"testbed_plugin_{p.stem}_{hashlib.sha256(path.encode()).hexdigest()[:8]}"
    spec = importlib.util.spec_from_file_location(mod_name, p)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module  # dataclasses and pickling look modules up by name
    if str(p.parent) not in sys.path:  # a plug-in may import a helper module beside it (as pytest does)
        sys.path.insert(0, str(p.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[mod_name]
        raise PluginError(f"{_where_in(e, path)}: {type(e).__name__}: {e} (plug-in named by {where})") from e
    return module


def _import_module(name: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):
            raise PluginError(f"{where}: no plug-in module {name!r} (not a file path either: "
                              "a path must end in .py or contain a '/')") from None
        raise PluginError(f"{_where_in(e, None)}: {type(e).__name__}: {e} (plug-in {name!r} named by {where})") from e
    except Exception as e:
        raise PluginError(f"{_where_in(e, None)}: {type(e).__name__}: {e} (plug-in {name!r} named by {where})") from e


def _where_in(e: BaseException, path: str | None) -> str:
    """``file:line`` of the innermost frame in the plug-in's file (or the innermost frame
    outside the import machinery when the file is not known)."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "importlib" not in f.filename]
    if path is not None:
        own = [f for f in frames if Path(f.filename).resolve() == Path(path)]
        frames = own or frames
    if not frames:
        return path or "<plug-in>"
    f = frames[-1]
    return f"{f.filename}:{f.lineno}"
