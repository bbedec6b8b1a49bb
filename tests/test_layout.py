"""The package layout is the pipeline: no module imports from a stage after its own, no cycles.

Stages in the order a line of log travels: `follow` -> `scan` -> `export` -> `reconcile`,
then the two applications built from them, `incident` (one-shot commands) and `run` (the
sidecar), which never import each other; `cli` sits on top. `config`, `logs` and `exits` are at the
bottom, used by all. Every import counts, the ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "monitor"
# rank of each part: a module may import its own part and parts of a lower rank only.
RANKS = {
    "__init__": 0,
    "config": 0,
    "exits": 0,
    "logs": 0,
    "follow": 1,
    "scan": 2,
    "export": 3,
    "reconcile": 4,
    "audit": 4,
    "incident": 5,
    "run": 5,
    "cli": 6,
    "__main__": 7,
}


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n == "monitor" or n.startswith("monitor.")}


def _graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (`from monitor.x import y` names
    module monitor.x.y when y is a module, else monitor.x)."""
    modules = {_module_name(p, package.parent): p for p in package.rglob("*.py")}
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _part(target) != _part(module) and RANKS[_part(target)] >= RANKS[_part(module)]
    ]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return cycles


def test_every_part_has_a_rank():
    assert {_part(m) for m in _graph()} <= set(RANKS), "a new package or top module: give it a rank here"


def test_no_module_imports_from_a_later_stage():
    assert _upward(_graph()) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_checks_see_an_arrow_up_a_sideways_arrow_and_a_cycle(tmp_path):
    """The checks can fail: a small package with each fault, lazy imports included."""
    package = tmp_path / "monitor"
    for name, source in {
        "__init__.py": "",
        "config.py": "",
        "scan/__init__.py": "",
        "scan/matcher.py": "def f():\n    from monitor.run.sidecar import Sidecar\n",
        "run/__init__.py": "",
        "run/sidecar.py": "from monitor.scan import matcher\nfrom monitor.incident.verify import x\n",
        "run/a.py": "import monitor.run.b\n",
        "run/b.py": "from monitor.run.a import y\n",
        "incident/__init__.py": "",
        "incident/verify.py": "from monitor.config import Config\n",
    }.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(source)
    graph = _graph(package)
    assert _upward(graph) == [
        "monitor.run.sidecar imports monitor.incident.verify",
        "monitor.scan.matcher imports monitor.run.sidecar",
    ]
    assert _cycles(graph) == [
        ["monitor.run.a", "monitor.run.b", "monitor.run.a"],
        ["monitor.run.sidecar", "monitor.scan.matcher", "monitor.run.sidecar"],
    ]
