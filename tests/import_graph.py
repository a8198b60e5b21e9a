"""fastgp's import graph: which module imports which.

    python tests/import_graph.py             # "module -> modules it imports", one per line
    python tests/import_graph.py --layers    # the same, one line per layer of LAYERS

Two graphs: the imports that run when a module is imported (module level, not under
``if TYPE_CHECKING:``), and all of them, including imports inside functions, which run when the
function does (listed after a "|" in the printout). ``from fastgp.x import y`` counts as an
import of ``fastgp.x.y`` when ``y`` is a module, else of ``fastgp.x``.
``tests/test_import_graph.py`` checks both against :data:`LAYERS`: no module imports a module of
a higher layer, not even inside a function, and there is no cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fastgp"

#: The architecture, lowest layer first (DESIGN §2): a module may import its own layer and the
#: layers below, never above. The longest matching prefix places a module. The ops are layered
#: inside too (fastgp/ops/README.md): rules, formulas, the three implementations, the choice of
#: one, the public functions.
LAYERS: list[tuple[str, ...]] = [
    ("fastgp._version", "fastgp.validation", "fastgp.devices", "fastgp.nn", "fastgp.reference",
     "fastgp.extras"),
    ("fastgp.ops._checks", "fastgp.ops._layout"),
    ("fastgp.ops.formulas",),
    ("fastgp.ops.composite", "fastgp.ops.native", "fastgp.ops.triton"),
    ("fastgp.ops.backend",),
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


def _all_imports(tree: ast.Module):
    """Every import statement that can run: module level and inside functions and classes
    (``if TYPE_CHECKING:`` blocks never run)."""
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif not (isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)):
            pending += ast.iter_child_nodes(node)


def imports_of(path: Path, lazy: bool = False) -> set[str]:
    """The fastgp modules ``path`` imports at import time, or anywhere when ``lazy``."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in (_all_imports(tree) if lazy else _top_level_imports(tree)):
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


def import_graph(lazy: bool = False) -> dict[str, set[str]]:
    """Module -> the fastgp modules it imports at import time (or anywhere, when ``lazy``)."""
    graph = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        graph[name] = {m for m in imports_of(path, lazy) if m != name}
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


def layer_graph(graph: dict[str, set[str]]) -> dict[int, set[int]]:
    """Layer -> the other layers its modules import (the graph of :data:`LAYERS`)."""
    edges: dict[int, set[int]] = {layer: set() for layer in range(len(LAYERS) + 1)}
    for module, dependencies in graph.items():
        edges[layer_of(module)] |= {layer_of(d) for d in dependencies} - {layer_of(module)}
    return edges


def _layer_name(layer: int) -> str:
    return "fastgp (root)" if layer == len(LAYERS) else " ".join(LAYERS[layer])


if __name__ == "__main__":
    eager, everywhere = import_graph(), import_graph(lazy=True)
    if "--layers" in sys.argv:
        lazy_edges = layer_graph(everywhere)
        for layer, below in layer_graph(eager).items():
            in_functions = sorted(lazy_edges[layer] - below)
            print(f"{layer}. {_layer_name(layer)} -> {', '.join(map(str, sorted(below))) or '-'}"
                  + (f" | in functions: {', '.join(map(str, in_functions))}" if in_functions else ""))
        sys.exit(0)
    for module, dependencies in eager.items():
        line = f"{module} -> {', '.join(sorted(dependencies)) or '(nothing of fastgp)'}"
        in_functions = sorted(everywhere[module] - dependencies)
        print(line + (f" | in functions: {', '.join(in_functions)}" if in_functions else ""))
    sys.exit(0)
