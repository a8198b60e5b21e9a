"""fastgp's import graph: which module imports which, at import time.

    python tests/import_graph.py        # prints "module -> modules it imports", one per line

Only module-level imports count (those inside functions run when the function does, and
``if TYPE_CHECKING:`` blocks never run). ``from fastgp.x import y`` counts as an import of
``fastgp.x.y`` when ``y`` is a module, else of ``fastgp.x``. ``tests/test_import_graph.py``
checks the graph against :data:`LAYERS`: no module imports a module of a higher layer, and
there is no cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fastgp"

#: The architecture, lowest layer first (DESIGN §2): a module may import its own layer and the
#: layers below, never above. The longest matching prefix places a module.
LAYERS: list[tuple[str, ...]] = [
    ("fastgp._version", "fastgp.validation", "fastgp.devices", "fastgp.nn", "fastgp.reference"),
    ("fastgp.ops",),
    ("fastgp.losses", "fastgp.engine", "fastgp.models"),
    ("fastgp.penalty",),
    ("fastgp.perf",),
    ("fastgp.train",),
    ("fastgp.cli_errors", "fastgp.cli", "fastgp.__main__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return ((PACKAGE.parent / relative).with_suffix(".py").is_file()
            or (PACKAGE.parent / relative / "__init__.py").is_file())


def _top_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported (not in functions or classes,
    not under ``if TYPE_CHECKING``)."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
            pending += node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending += node.body + node.orelse + node.finalbody
            for handler in node.handlers:
                pending += handler.body


def imports_of(path: Path) -> set[str]:
    """The fastgp modules ``path`` imports at import time."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in _top_level_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("fastgp")}
            continue
        base = node.module or ""
        if node.level:  # relative import
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                            + ([node.module] if node.module else []))
        if not base.startswith("fastgp"):
            continue
        for alias in node.names:
            child = f"{base}.{alias.name}"
            found.add(child if _is_module(child) else base)
    return found


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph[name] = {m for m in imports_of(path) if m != name}
    return graph


def layer_of(module: str) -> int | None:
    """The layer of ``module`` (its longest matching prefix); the package root, which re-exports
    the public API, is above every layer. None: a module no layer names."""
    if module == "fastgp":
        return len(LAYERS)
    best, best_length = None, -1
    for layer, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = layer, len(prefix)
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each as the list of modules on it (depth-first search)."""
    found, state = [], {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = "open"
        stack.append(module)
        for dependency in sorted(graph.get(module, ())):
            if state.get(dependency) == "open":
                found.append(stack[stack.index(dependency):] + [dependency])
            elif dependency not in state:
                visit(dependency)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


if __name__ == "__main__":
    for module, dependencies in import_graph().items():
        print(f"{module} -> {', '.join(sorted(dependencies)) or '(nothing of fastgp)'}")
    sys.exit(0)
