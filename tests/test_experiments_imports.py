"""The modules of :mod:`experiments` import each other without a cycle.

Two checks: the import graph read from the source with :mod:`ast` (every ``import``, also inside
functions and ``if TYPE_CHECKING:`` blocks, which hide a cycle from the interpreter but not from a
reader) is acyclic, and each module imports alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

import experiments

PACKAGE_DIR = Path(experiments.__file__).parent
MODULES = sorted(f"experiments.{p.stem}" for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")


def _imported_modules(path: Path) -> set[str]:
    """Modules of :mod:`experiments` that the file at ``path`` imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from experiments import report`` imports the module experiments.report
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES}


def import_graph() -> dict[str, set[str]]:
    """Module -> the experiments modules it imports (self-imports dropped)."""
    graph = {}
    for module in MODULES:
        path = PACKAGE_DIR / f"{module.rsplit('.', 1)[1]}.py"
        graph[module] = _imported_modules(path) - {module}
    return graph


def test_import_graph_finds_the_edges_it_should():
    # A guard on the parser itself: these edges exist, so a graph without them is misread.
    graph = import_graph()
    assert {"experiments.report", "experiments.plots"} <= set(MODULES)
    assert "experiments.results" in graph["experiments.report"]
    assert "experiments.results" in graph["experiments.plots"]
    assert {"experiments.report", "experiments.plots"} <= graph["experiments.simulate"]


def test_no_import_cycle_among_experiments_modules():
    graph = import_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle among experiments modules: {' -> '.join(exc.args[1])}")
    assert set(order) == set(MODULES)
    # The result types depend on nothing that produces or reads them.
    assert graph["experiments.results"] <= {"experiments.config"}


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
