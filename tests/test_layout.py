"""The layout holds: ``recipes/`` is what users touch (the YAML recipes and a few thin commands),
the machinery is in ``recipekit/``, data flows one way, and no modules import each other in a circle.

``python -m tests.test_layout`` prints the import graph between the project's modules.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("recipes", "recipekit", "plugins", "preprocess")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in (REPO_ROOT / package).rglob("*.py")}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules a file imports, at any depth of its code (deferred imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_modules_import_each_other_in_a_circle():
    assert circles(import_graph()) == []


def test_a_circle_would_be_found():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_machinery_never_imports_the_commands_or_plugins():
    """Data flows one way: the commands (recipes) and plugins use recipekit, never the reverse."""
    graph = import_graph()
    upward = {(m, t) for m, targets in graph.items() if m.startswith("recipekit")
              for t in targets if t.split(".")[0] in ("recipes", "plugins")}
    allowed = {("recipekit.config.parse", "plugins.base")}  # plugin classes are loaded by dotted path from a recipe
    assert upward <= allowed, upward - allowed


def test_recipes_holds_the_recipes_and_at_most_eight_entry_modules():
    folder = REPO_ROOT / "recipes"
    assert len(list(folder.glob("*.py"))) <= 8
    assert [p for p in folder.iterdir() if p.is_dir() and p.name != "__pycache__"] == []
    assert len(list(folder.glob("*.yaml"))) >= 2


if __name__ == "__main__":
    for module, targets in sorted(import_graph().items()):
        print(f"{module} -> {', '.join(sorted(targets)) or '(none)'}")
    sys.exit(1 if circles(import_graph()) else 0)
