"""Imports run one way (DESIGN.md): engine <- studio, engine <- training, and no circle inside a package.

Read from the source (AST), so an import hidden inside a function counts as much as one at the top: both run.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "studio", "training")
ALLOWED = {"engine": set(), "training": {"engine"}, "studio": {"engine", "training"}}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict) -> list[str]:
    """The project modules one import statement runs: `from engine import errors` is engine.errors, not engine's
    __init__'s names (both run engine/__init__.py, which is checked as a module of its own)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    names = [f"{source}.{a.name}" for a in node.names]
    submodules = [n for n in names if n in modules]
    return submodules if len(submodules) == len(names) else [source, *submodules]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(node, module, path.name == "__init__.py", modules):
                # the closest project module the name belongs to (engine.models.transformer_humo.X -> that file)
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != module and not module.startswith(target + "."):
                    graph[module].add(target)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_package_imports_against_the_flow():
    wrong = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if b.split(".")[0] != a.split(".")[0] and b.split(".")[0] not in ALLOWED[a.split(".")[0]]
    ]
    assert not wrong, "imports against engine <- training <- studio:\n" + "\n".join(sorted(wrong))


def test_no_circle_inside_a_package():
    graph = import_graph()
    found = circles(graph)
    detail = [" <-> ".join(c) + "\n    " + "; ".join(f"{a}->{sorted(graph[a] & set(c))}" for a in c) for c in found]
    assert not found, "import circles:\n" + "\n".join(detail)


def test_the_checker_sees_a_circle_and_a_wrong_way_arrow():
    """The checker itself: a two-module circle and an engine -> studio arrow are found."""
    assert circles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    tree = ast.parse("from studio import store\nfrom . import dub\n")
    modules = {"studio": None, "studio.store": None, "engine.dub": None, "engine.pipeline": None}
    found = [t for n in ast.walk(tree) for t in _targets(n, "engine.pipeline", False, modules)]
    assert found == ["studio.store", "engine.dub"]
