"""The architecture as an import rule: no module imports a module of a higher layer
(``tests/import_graph.py`` lists the layers), not even inside a function, none imports the
package root, and there is no import cycle, not even through imports inside functions."""

import pytest
from import_graph import LAYERS, cycles, import_graph, layer_of


def test_every_module_has_a_layer():
    assert [module for module in import_graph() if layer_of(module) is None] == []


@pytest.mark.parametrize("lazy", [False, True], ids=["at import", "anywhere"])
def test_no_module_imports_a_higher_layer(lazy):
    upward = [f"{module} (layer {layer_of(module)}) -> {dependency} (layer {layer_of(dependency)})"
              for module, dependencies in import_graph(lazy).items()
              for dependency in dependencies if layer_of(dependency) > layer_of(module)]
    assert upward == [], "\n".join(upward)


@pytest.mark.parametrize("lazy", [False, True], ids=["at import", "anywhere"])
def test_there_is_no_import_cycle(lazy):
    assert cycles(import_graph(lazy)) == []


def test_the_rules_can_fail():
    """The checks see an upward import and a cycle when there is one."""
    graph = {"fastgp.ops.backend": {"fastgp.engine.base"}, "fastgp.engine.base": set(),
             "fastgp.a": {"fastgp.b"}, "fastgp.b": {"fastgp.a"}}
    assert layer_of("fastgp.engine.base") > layer_of("fastgp.ops.backend")
    assert cycles(graph) == [["fastgp.a", "fastgp.b", "fastgp.a"]]
    assert layer_of("fastgp") == len(LAYERS)
