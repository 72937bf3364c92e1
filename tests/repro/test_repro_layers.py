"""repro's modules import one another in one direction only: no import cycle, counting
every import in a file (inside functions and ``if TYPE_CHECKING:`` blocks too)."""

from __future__ import annotations

import ast
from pathlib import Path

import repro

PACKAGE = Path(repro.__file__).parent


def imports(package: Path) -> dict[str, set[str]]:
    """{module: the package's modules it imports} for the flat package at ``package``."""
    modules = {p.stem for p in package.glob("*.py")}
    name = package.name
    edges: dict[str, set[str]] = {}
    for module in modules:
        found: set[str] = set()
        tree = ast.parse((package / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                absolute = node.level == 0 and (node.module or "").split(".")[0] == name
                if node.level == 1 or absolute:
                    parts = (node.module or "").split(".")[0 if node.level else 1:]
                    if parts and parts[0]:
                        found.add(parts[0])  # from ._x import y / from pkg._x import y
                    else:
                        found.update(a.name for a in node.names)  # from . import _x
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] == name and len(parts) > 1:
                        found.add(parts[1])
        edges[module] = (found & modules) - {module}
    return edges


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_repro_has_no_import_cycle() -> None:
    edges = imports(PACKAGE)
    assert "_run" in edges and "_capture" in edges["_run"]  # the walk sees function-level imports
    assert cycle(edges) is None, " -> ".join(cycle(edges) or [])


def test_a_function_level_back_edge_is_a_cycle(tmp_path: Path) -> None:
    """The check above can fail: a package whose lower module imports the upper one
    inside a function (as ``_entry`` once imported ``_run``) has a cycle."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from ._top import run\n")
    (package / "_top.py").write_text("from . import _low\n\ndef run():\n    return _low.f()\n")
    (package / "_low.py").write_text("def f():\n    from ._top import run\n    return run\n")
    (package / "_leaf.py").write_text("import pkg._low\n")
    edges = imports(package)
    assert edges == {"__init__": {"_top"}, "_top": {"_low"}, "_low": {"_top"}, "_leaf": {"_low"}}
    assert cycle(edges) == ["_top", "_low", "_top"]
