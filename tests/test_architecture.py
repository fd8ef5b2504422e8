"""The package's shape: no import cycles, and readers of a run directory never import the
search that wrote it."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT


def _modules() -> dict[str, ast.Module]:
    """Every `automl` module by name (a package by its own name: `automl.models` is its
    `__init__`), parsed."""
    modules = {}
    for path in (ROOT / "automl").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = ast.parse(path.read_text())
    return modules


def _imports() -> dict[str, set[str]]:
    """Every `automl` module and the `automl` modules it imports, at module level or inside a
    function (a late import still ties the two together). `from automl.report import plots`
    imports the submodule `automl.report.plots`, not a name of the package's `__init__`;
    `from automl.models import FAMILIES` imports the `__init__`. Type-checking-only imports
    do not run, so they do not count."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, tree in modules.items():
        graph[name] = set()
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING")
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("automl"):
                module = str(node.module)
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    graph[name].add(sub if sub in modules else module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("automl")}
        graph[name].discard(name)
    return graph


def test_no_import_cycles() -> None:
    """No cycle between modules, packages' `__init__` modules included: a family that imports
    its shared types back from the registry that imports it is a cycle."""
    graph = _imports()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph.get(node, ()):
            if nxt in path:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif len(path) < 12:
                visit(nxt, [*path, nxt])

    for module in graph:
        visit(module, [module])
    assert cycles == []
    assert "automl.search.loop" not in graph["automl.search.isolation"]  # they did, both ways


def test_readers_of_a_run_directory_do_not_import_the_search() -> None:
    code = (
        "import sys, automl.predict, automl.report, automl.report.page, automl.ensemble, "
        "automl.ensemble.build, automl.ensemble.keras_export, automl.estimator\n"
        "print(sorted(m for m in sys.modules if m.startswith('automl.search')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
