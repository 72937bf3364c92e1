"""The floors of ``hub/atelier_hub`` and ``repro/repro``, read from the source with ``ast``.

Two rules (ARCHITECTURE.md's layout, issue 25's "done when"):
- no import cycle among the modules of either package. Every import counts: at the top,
  inside a function, under ``if TYPE_CHECKING``. Importing ``a.b.c`` runs ``a/b/__init__``
  too, so that package is imported as well (unless the importer lives inside it: it is
  already running then);
- the mode-free core (``profiles``, ``settings``, ``schema``, ``session``,
  ``profile_spawner``) reaches nothing in ``services/``, ``cluster/`` or the embedded mode,
  neither directly nor through another module it imports.

Nothing is imported or run here: the files are parsed, so a module that fails to import
is still checked.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {"atelier_hub": REPO / "hub" / "atelier_hub", "repro": REPO / "repro" / "repro"}

CORE = {f"atelier_hub.{name}" for name in ("profiles", "settings", "schema", "session", "profile_spawner")}
# The embedded mode (ARCHITECTURE.md's `embedded/` floor: the state folder, the stack, auth
# and its users, the container and process spawners, cgroups, GPUs, the engine and the
# session's network relay): anything under atelier_hub.embedded.
EMBEDDED_PACKAGE = "atelier_hub.embedded"
ABOVE_THE_CORE = ("atelier_hub.services", "atelier_hub.cluster", EMBEDDED_PACKAGE)


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of both packages (a package by its __init__)."""
    found: dict[str, Path] = {}
    for top, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = [top, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ``known`` that module ``name`` imports, wherever in it the import stands."""
    package = name if _is_package(path) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets.add(source)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` a name.
            targets.update(f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in known)
    edges: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            # A package above the importer is already running when it runs: no new import.
            if prefix in known and prefix != name and not name.startswith(prefix + "."):
                edges.add(prefix)
    return edges


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or v in edges.get(v, ()):
                groups.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(groups)


def describe(group: list[str], edges: dict[str, set[str]]) -> str:
    inside = set(group)
    arrows = [f"{a} -> {b}" for a in group for b in sorted(edges[a] & inside)]
    return f"{len(group)} modules: " + "; ".join(arrows)


def reach(start: str, edges: dict[str, set[str]], *, stop=lambda name: False) -> dict[str, list[str]]:
    """Every module ``start`` imports directly or through others, with one shortest path
    to it; the imports of a module where ``stop`` holds are not followed."""
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        if v != start and stop(v):
            continue
        for w in sorted(edges.get(v, ())):
            if w not in paths:
                paths[w] = [*paths[v], w]
                todo.append(w)
    return paths


def is_embedded(name: str) -> bool:
    return name == EMBEDDED_PACKAGE or name.startswith(EMBEDDED_PACKAGE + ".")


def above_the_core(name: str) -> bool:
    return name.startswith(ABOVE_THE_CORE)


# -- the reader itself, on made-up packages: it must see what the rules are about ------------


def test_the_reader_sees_function_level_relative_and_package_imports(tmp_path):
    known = {"p": tmp_path / "p" / "__init__.py", "p.a": tmp_path / "p" / "a.py",
             "p.s": tmp_path / "p" / "s" / "__init__.py", "p.s.x": tmp_path / "p" / "s" / "x.py",
             "p.s.y": tmp_path / "p" / "s" / "y.py"}
    for path in known.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    known["p.a"].write_text("def f():\n    from .s.x import thing\n")
    known["p"].write_text("")
    known["p.s"].write_text("from . import x, y\n")
    known["p.s.x"].write_text("from .y import name\nimport p.a\n")
    known["p.s.y"].write_text("")
    edges = {name: imports_of(name, path, known) for name, path in known.items()}
    # a's function imports s.x, which runs s/__init__ first; x's own package is already running.
    assert edges["p.a"] == {"p.s", "p.s.x"}
    assert edges["p.s"] == {"p.s.x", "p.s.y"}
    assert edges["p.s.x"] == {"p.s.y", "p.a"}
    assert cycles(edges) == [["p.a", "p.s", "p.s.x"]]
    assert reach("p.s.y", edges) == {"p.s.y": ["p.s.y"]}
    assert reach("p.a", edges)["p.s.y"] == ["p.a", "p.s", "p.s.y"]


def test_the_reader_finds_every_module_of_both_packages():
    names = modules()
    for expected in ("atelier_hub", "atelier_hub.session", "atelier_hub.services", "atelier_hub.services.s3",
                     "atelier_hub.cluster.kubespawner", "repro", "repro._run"):
        assert expected in names
    assert CORE <= set(names)
    # The embedded mode lives in its own folder; none of its modules sits flat beside the core.
    assert {name for name in names if is_embedded(name)} == {EMBEDDED_PACKAGE} | {
        f"{EMBEDDED_PACKAGE}.{name}" for name in (
            "state_folder", "stack", "auth", "users", "spawner_base", "process_spawner", "container_spawner",
            "cgroups", "gpus", "engine", "netns_relay")}
    flat = ("stack", "auth", "users", "spawner", "embedded_spawner", "container_spawner", "cgroups",
            "gpus", "engine", "netns_relay")
    assert not {f"atelier_hub.{name}" for name in flat} & set(names)


# -- the rules ----------------------------------------------------------------------------


def test_no_import_cycle_among_the_modules():
    edges = graph()
    found = [describe(group, edges) for group in cycles(edges)]
    assert found == [], "import cycles:\n" + "\n".join(found)


def test_the_mode_free_core_reaches_no_service_mode_or_cluster_module():
    edges = graph()
    problems = []
    for name in sorted(CORE):
        # Each path ends at the first module above the core: that import is the one to remove.
        for target, path in sorted(reach(name, edges, stop=above_the_core).items()):
            if above_the_core(target):
                problems.append(" -> ".join(path))
    assert problems == [], "the core reaches above itself:\n" + "\n".join(problems)


def test_a_service_base_lives_apart_from_the_list():
    """A descriptor imports its base class, never the list that loads every descriptor."""
    edges = graph()
    importers = sorted(name for name, targets in edges.items()
                       if name.startswith("atelier_hub.services.") and "atelier_hub.services" in targets)
    assert importers == [], f"these import the list of services: {importers}"


def test_the_cluster_spawner_loads_no_embedded_code():
    """KubeSpawner's module reads the services' descriptors (mode-free), never the
    embedded stack or a service's process code: what really gets loaded, in a fresh
    interpreter."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, atelier_hub.cluster.kubespawner; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('atelier_hub'))))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout)
    embedded = [m for m in loaded if is_embedded(m)
                or m.endswith(("_server", "_front", "_page", "_spawner")) and "profile_spawner" not in m]
    assert "atelier_hub.services.s3" in loaded  # the descriptors are read
    assert embedded == []
