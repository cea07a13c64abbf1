"""The package's layering: imports run one way, down the data flow, and never in a circle.

Layers, lowest first: core < tasks < models < methods < training < analyses < suites <
report < reproduce < cli. A module may import its own layer and the ones below it, never one above.
Every import counts, also one inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "testbed"
LAYERS = ["core", "tasks", "models", "methods", "training", "analyses", "suites", "report", "reproduce", "cli"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(target: str, names: list[str], known: dict[str, Path]) -> list[str]:
    """The modules an import statement loads: ``from a.b import c`` is ``a.b.c`` when that is a module."""
    out = []
    for n in names or [None]:
        sub = f"{target}.{n}" if n else None
        out.append(sub if sub in known else target)
    return out


def _imports(path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "testbed"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "testbed":
            found += [(m, node.lineno) for m in _resolve(node.module, [a.name for a in node.names], known)]
    typing_only = [(n.lineno, n.end_lineno) for n in ast.walk(tree)
                   if isinstance(n, ast.If) and isinstance(n.test, ast.Name) and n.test.id == "TYPE_CHECKING"]
    return [(m, line) for m, line in found if not any(a <= line <= b for a, b in typing_only)]


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the public surface, testbed/__init__.py
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else None


def test_every_module_is_in_a_layer():
    stray = [m for m in _modules() if m != "testbed" and _layer(m) is None]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_imports_never_reach_a_higher_layer():
    known = _modules()
    bad = []
    for mod, path in known.items():
        if mod == "testbed":
            continue
        for target, line in _imports(path, known):
            if target == "testbed" and _layer(mod) != LAYERS.index("cli"):
                bad.append(f"{path}:{line}: imports the public surface `testbed` (import the module itself)")
            elif _layer(target) is not None and _layer(target) > _layer(mod):
                bad.append(f"{path}:{line}: {LAYERS[_layer(mod)]} imports {target} ({LAYERS[_layer(target)]})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    known = _modules()
    graph = {m: sorted({t for t, _ in _imports(p, known) if t in known and t != m}) for m, p in known.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_violation(tmp_path):
    """The layer check must be able to fail: a core module importing the engine is caught."""
    known = _modules()
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from testbed.training.engine import train\n")
    targets = [t for t, _ in _imports(bad, known)]
    assert targets == ["testbed.training.engine"] and _layer(targets[0]) > _layer("testbed.core.x")


def _fresh(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("module", ["testbed", "testbed.cli", "testbed.report.build", "testbed.report.compare",
                                    "testbed.suites.tables", "testbed.analyses"])
def test_readers_and_the_cli_do_not_import_jax(module):
    out = _fresh(f"import sys, {module}; print('jax' in sys.modules)")
    assert out.strip() == "False", f"importing {module} loads JAX"


def test_help_does_not_import_jax():
    code = ("import sys\nfrom testbed import cli\n"
            "try:\n    cli.app(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print('JAX' if 'jax' in sys.modules else 'no jax')")
    assert _fresh(code).strip().endswith("no jax")


def test_every_subpackage_ships_in_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {_module_name(p) for p in ROOT.rglob("__init__.py")}
    assert on_disk <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_derived_tables_do_not_import_the_drawing_code():
    """Every analysis's ``derive`` (run on each report, also when its figures are copied from
    the figure cache) leaves seaborn and matplotlib unimported: importing them took ~2.5 s
    of a warm suite run. Fails where a derive step imports a drawing module."""
    code = ("import sys\nfrom testbed.analyses.base import all_analyses\n"
            "for a in all_analyses():\n    if a.derive is not None:\n        a.derive({})\n"
            "print(sorted(m for m in ('seaborn', 'matplotlib', 'scipy') if m in sys.modules))")
    assert _fresh(code).strip() == "[]"
