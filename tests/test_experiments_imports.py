"""The rule of imports of ``docs/architecture.md``, and no cycle inside :mod:`experiments`.

Imports are read from the source with :mod:`ast` (every ``import``, also inside functions and
``if TYPE_CHECKING:`` blocks, which hide an import from the interpreter but not from a reader).
Between packages: ``bandits`` imports none of ours; ``arms`` none of bandits, envs, experiments,
serving; ``envs`` none of bandits, experiments, serving; ``serving`` never envs or experiments;
``experiments`` reaches ``serving`` only inside the functions of ``experiments/cli.py``. Inside
``experiments``: the import graph is acyclic, and each module imports alone in a fresh
interpreter. Each module of ``serving`` imports alone too (in a child forked from an interpreter
that has loaded only third-party libraries: a cycle among our modules shows whichever is
imported first).
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


def _imports(tree: ast.AST) -> dict[str, int]:
    """Every module name an ``import`` anywhere in ``tree`` names, with its first line.

    ``from experiments import report`` names both ``experiments`` and ``experiments.report``; a
    relative import names its package-relative module (none is used in this project).
    """
    found: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            found.setdefault(name, node.lineno)
    return found


def _imported_modules(path: Path) -> set[str]:
    """Modules of :mod:`experiments` that the file at ``path`` imports, anywhere in it."""
    return set(_imports(ast.parse(path.read_text(encoding="utf-8")))) & set(MODULES)


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
                          text=True, timeout=500)  # a few seconds; 50x that at load 11
    assert done.returncode == 0, done.stderr


SERVING_DIR = PACKAGE_DIR.parent / "serving"
SERVING_MODULES = sorted(
    ".".join(p.relative_to(SERVING_DIR.parent).with_suffix("").parts)
    for p in SERVING_DIR.rglob("*.py") if p.stem != "__init__")
#: What serving's modules import from elsewhere, loaded once before the forks (not ours).
THIRD_PARTY = ("numpy", "scipy.sparse", "scipy.special", "scipy.stats", "pandas", "sqlalchemy",
               "starlette.applications", "fastapi", "pydantic", "orjson", "uvicorn")
FORK_EACH = """
import importlib, os, sys
for name in {third_party!r}:
    importlib.import_module(name)
assert not [m for m in sys.modules if m.split(".")[0] in ("serving", "arms", "bandits")]
failed = []
for module in {modules!r}:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(module)
        except BaseException as exc:
            print(module, type(exc).__name__, exc, flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        failed.append(module)
print("failed:", failed)
sys.exit(1 if failed else 0)
"""


#: serving's modules in this many parts, one child each: all of them in one took 17 s on a
#: quiet machine and up to 127 s at load 12, too near the child's time-out.
SERVING_PARTS = 4


def test_the_serving_modules_are_found():
    assert len(SERVING_MODULES) > 40 and "serving.store.base" in SERVING_MODULES


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
@pytest.mark.parametrize("part", range(SERVING_PARTS))
def test_each_serving_module_imports_alone(part: int) -> None:
    # Found by review: serving.multileave imported first failed (multileave -> serving.store
    # package -> store.base -> multileave, half initialised).
    modules = SERVING_MODULES[part::SERVING_PARTS]
    done = subprocess.run(
        [sys.executable, "-c", FORK_EACH.format(third_party=THIRD_PARTY, modules=modules)],
        capture_output=True, text=True, timeout=300, cwd=PACKAGE_DIR.parent)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


# ---------------------------------------------------------------------------- between packages
ROOT = PACKAGE_DIR.parent
PACKAGES = ("bandits", "arms", "envs", "experiments", "serving")
#: docs/architecture.md, "The rule of imports": package -> our packages it must not import.
FORBIDDEN = {
    "bandits": {"arms", "envs", "experiments", "serving"},
    "arms": {"bandits", "envs", "experiments", "serving"},
    "envs": {"bandits", "experiments", "serving"},
    "serving": {"envs", "experiments"},
}
#: The one door from the lab to the service: the CLI's service commands, imported lazily.
LAZY_SERVING_DOOR = "experiments/cli.py"


def package_imports(package: str) -> list[tuple[str, int, str, bool]]:
    """Imports of our other packages anywhere in ``package``.

    Returns
    -------
    list of (file relative to the repository, line, imported package, at module level)
    """
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top_level = {node.lineno for node in tree.body
                     if isinstance(node, ast.Import | ast.ImportFrom)}
        for name, line in _imports(tree).items():
            target = name.split(".")[0]
            if target in PACKAGES and target != package:
                found.append((path.relative_to(ROOT).as_posix(), line, target, line in top_level))
    return found


def test_package_import_reader_sees_lazy_and_type_checking_imports(tmp_path):
    # A guard on the reader: an import hidden in a function or a TYPE_CHECKING block counts.
    source = (
        "from typing import TYPE_CHECKING\n"
        "import numpy as np\n"
        "if TYPE_CHECKING:\n"
        "    from envs.base import UserModel\n"
        "def later():\n"
        "    import experiments.simulate\n"
    )
    names = _imports(ast.parse(source))
    assert names["envs.base"] == 4 and names["experiments.simulate"] == 6
    # ...and the real tree has the edges the architecture page draws.
    edges = {(package, target) for package in PACKAGES
             for _, _, target, _ in package_imports(package)}
    assert {("envs", "arms"), ("serving", "bandits"), ("serving", "arms"),
            ("experiments", "bandits"), ("experiments", "envs"),
            ("experiments", "serving")} <= edges


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_none_of_the_packages_the_architecture_forbids(package):
    broken = [f"{file}:{line} imports {target}" for file, line, target, _ in
              package_imports(package) if target in FORBIDDEN[package]]
    assert not broken, f"docs/architecture.md forbids {package} -> {sorted(FORBIDDEN[package])}"


def test_experiments_reaches_serving_only_lazily_from_the_cli():
    wrong = [f"{file}:{line}" for file, line, target, top in package_imports("experiments")
             if target == "serving" and (file != LAZY_SERVING_DOOR or top)]
    assert not wrong, f"serving imported outside the CLI's command functions: {wrong}"


def test_http_clients_are_httpx2_and_the_test_client_takes_it_without_a_warning():
    # httpx is unmaintained; Starlette's TestClient prefers its successor httpx2 and warns
    # (StarletteDeprecationWarning) on the httpx path, which a later Starlette may drop. A
    # module importing httpx would mix two client libraries (TestClient is an httpx2.Client).
    uses = [f"{path.relative_to(ROOT)}:{line}"
            for folder in ("serving", "experiments", "bench", "tests")
            for path in sorted((ROOT / folder).rglob("*.py"))
            for name, line in _imports(ast.parse(path.read_text())).items()
            if name == "httpx" or name.startswith("httpx.")]
    assert uses == [], uses
    child = subprocess.run([sys.executable, "-W", "error", "-c",
                            "import starlette.testclient as t; print(t.httpx.__name__)"],
                           capture_output=True, text=True, timeout=120)
    assert (child.returncode, child.stdout.strip()) == (0, "httpx2"), child.stderr[-2000:]
