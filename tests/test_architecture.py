"""The package's shape: no import cycles, and readers of a run directory never import the
search that wrote it."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.conftest import ROOT


def _imports() -> dict[str, set[str]]:
    """Every `automl` module and the `automl` modules it imports, at module level or inside a
    function (a late import still ties the two together)."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "automl").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("automl"):
                graph[name].add(str(node.module))
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("automl")}
    return graph


def _family(a: str, b: str) -> bool:
    """A package and its own submodule (`automl.report` and `automl.report.page`)."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def test_no_import_cycles() -> None:
    graph = _imports()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph.get(node, ()):
            if _family(node, nxt):
                continue
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
