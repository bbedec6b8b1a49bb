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
    "incident": 5,
    "run": 5,
    "cli": 6,
    "__main__": 7,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
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


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # `from monitor.x import y` names module monitor.x.y when y is a module, else monitor.x
        graph[name] = {i for i in _imports(path) if i in modules and i != name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_has_a_rank():
    assert {_part(m) for m in _graph()} <= set(RANKS), "a new package or top module: give it a rank here"


def test_no_module_imports_from_a_later_stage():
    upward = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _part(target) != _part(module) and RANKS[_part(target)] >= RANKS[_part(module)]
    ]
    assert upward == []


def test_no_import_cycle():
    graph = _graph()
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
    assert cycles == []


def test_the_checker_sees_an_arrow_up(tmp_path):
    """The checks above can fail: an import of the sidecar from the scan stage is seen."""
    probe = PACKAGE / "scan" / "matcher.py"
    assert "monitor.run" not in str(_imports(probe))
    source = probe.read_text() + "\nfrom monitor.run.sidecar import Sidecar\n"
    copy = tmp_path / "matcher.py"
    copy.write_text(source)
    assert "monitor.run.sidecar" in _imports(copy)
    assert RANKS[_part("monitor.run.sidecar")] > RANKS[_part("monitor.scan.matcher")]
