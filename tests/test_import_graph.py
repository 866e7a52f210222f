"""The project's own modules import one another without a cycle, and each layer imports only
the layers below it: the core (``der_core``) nothing of the project, the physics
(``der_physics``) only the core, the gateway never the cloud (a gateway runs on a home's
device with only its own packages), and the optimizer never its evaluation (the live
decision must not depend on how it is measured).

The graph is built statically from every ``.py`` file of the repository's packages (every
folder at the root with an ``__init__.py``, tests aside) and of its top-level scripts. Imports
inside functions count: they run as soon as the function does. Imports under
``if TYPE_CHECKING:`` do not, since they are never executed. ``from package import name``
points at the submodule ``package.name`` where there is one, else at the package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_PRODUCT = {"tests"}
GATEWAY, CLOUD = "edge_gateway", "cloud"
#: What each layer may import of the project (itself included).
LAYERS = {
    "der_core": {"der_core"},
    "der_physics": {"der_core", "der_physics"},
    GATEWAY: {"der_core", "der_physics", GATEWAY},
}


def project_modules(root: Path) -> dict[str, Path]:
    """Module name to file, for the packages at ``root`` and its top-level scripts."""
    modules = {}
    packages = [p for p in root.iterdir() if (p / "__init__.py").is_file() and p.name not in NOT_PRODUCT]
    for package in packages:
        for path in package.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in root.glob("*.py"):
        modules[path.stem] = path
    return modules


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:`` (their ``else`` runs, so it counts)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            skipped.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return skipped


def _own(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` loads: itself, or the innermost package of it that is one."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports, at any depth of its code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_only(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([node.module] if node.module else []))
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(target for name in names if (target := _own(name, modules)) not in (None, module))
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = project_modules(root)
    return {module: imported(module, path, modules) for module, path in sorted(modules.items())}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, None when there is none (depth-first search)."""
    done, path, on_path = set(), [], set()

    def visit(module: str) -> list[str] | None:
        path.append(module)
        on_path.add(module)
        for target in sorted(graph.get(module, ())):
            if target in on_path:
                return path[path.index(target):] + [target]
            if target not in done and (cycle := visit(target)):
                return cycle
        path.pop()
        on_path.discard(module)
        done.add(module)
        return None

    for module in sorted(graph):
        if module not in done and (cycle := visit(module)):
            return cycle
    return None


def test_the_project_is_found_from_the_repository_root():
    graph = import_graph()
    assert {GATEWAY, CLOUD} <= {module.partition(".")[0] for module in graph}
    assert not any(module.startswith("tests") for module in graph)
    assert "run_optimizer" in graph and "edge_gateway.stores.factory" in graph["edge_gateway.cli"]


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_the_layers_below_it(layer):
    graph = import_graph()
    wrong = {module: sorted(t for t in targets if t.partition(".")[0] not in LAYERS[layer])
             for module, targets in graph.items() if module.partition(".")[0] == layer}
    assert {module for module in graph if module.partition(".")[0] == layer}
    assert not {module: targets for module, targets in wrong.items() if targets}


def test_the_optimizer_never_imports_its_evaluation():
    graph = import_graph()
    wrong = {module: sorted(t for t in targets if t.startswith("cloud.evaluation"))
             for module, targets in graph.items() if module.startswith("cloud.optimization")}
    assert not {module: targets for module, targets in wrong.items() if targets}


@pytest.mark.parametrize("files, cycle", [
    ({"a.py": "import b\n", "b.py": "def f():\n    import a\n"}, ["a", "b", "a"]),
    ({"p/__init__.py": "", "p/x.py": "from p import y\n", "p/y.py": "from . import x\n"}, ["p.x", "p.y", "p.x"]),
    ({"p/__init__.py": "", "p/x.py": "from .y import thing\n", "p/y.py": "from p.x import other\n"}, ["p.x", "p.y", "p.x"]),
    ({"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import b\n", "b.py": "import a\n"}, None),
    ({"p/__init__.py": "from p.x import f\n", "p/x.py": "import os\n", "q.py": "from p import f\n"}, None),
])
def test_cycles_are_found_in_function_bodies_and_relative_imports_but_not_type_checking_blocks(tmp_path, files, cycle):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert find_cycle(import_graph(tmp_path)) == cycle
