"""The architecture as an import rule: no module imports a module of a higher layer
(``tests/import_graph.py`` lists the layers), none imports the package root, and there is no
import cycle."""

from import_graph import LAYERS, cycles, import_graph, layer_of


def test_every_module_has_a_layer():
    assert [module for module in import_graph() if layer_of(module) is None] == []


def test_no_module_imports_a_higher_layer():
    upward = [f"{module} (layer {layer_of(module)}) -> {dependency} (layer {layer_of(dependency)})"
              for module, dependencies in import_graph().items()
              for dependency in dependencies if layer_of(dependency) > layer_of(module)]
    assert upward == [], "\n".join(upward)


def test_there_is_no_import_cycle():
    assert cycles(import_graph()) == []


def test_the_rules_can_fail():
    """The checks see an upward import and a cycle when there is one."""
    graph = {"fastgp.ops.backend": {"fastgp.engine.base"}, "fastgp.engine.base": set(),
             "fastgp.a": {"fastgp.b"}, "fastgp.b": {"fastgp.a"}}
    assert layer_of("fastgp.engine.base") > layer_of("fastgp.ops.backend")
    assert cycles(graph) == [["fastgp.a", "fastgp.b", "fastgp.a"]]
    assert layer_of("fastgp") == len(LAYERS)
