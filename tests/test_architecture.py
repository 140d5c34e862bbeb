"""The package's shape (docs/architecture.md): no import cycles, files of at most 400 lines, and imports that
only go down the layers. Measured from the source with ``ast`` (tools/module_graph.py), nothing is imported."""

from __future__ import annotations

from tools.module_graph import cycles, edges, scan

# Bottom to top: a module may import its own layer and the layers before it, never a later one.
LAYERS = ["errors", "runtime", "geometry", "model", "world", "train", "adapt", "eval", "app", "studies", "demo", "cli"]
MAX_LINES = 400

MODULES = scan()
GRAPH = edges(MODULES)


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package's own __init__ (a docstring)
        return -1
    return LAYERS.index(parts[1])


def test_every_module_has_a_layer():
    assert len(MODULES) > 40
    unknown = sorted(m for m in MODULES if m != "st4r_lite" and m.split(".")[1] not in LAYERS)
    assert not unknown, f"modules outside the layers of docs/architecture.md: {unknown}"


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_cycle_detection_works():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_package_imports_inside_functions():
    hidden = [(m.name, line, t) for m in MODULES.values() for line, t in m.function_imports]
    assert not hidden, f"imports of package modules inside functions (hoist them; a cycle means a layer is wrong): {hidden}"


def test_files_are_short():
    long = {m.name: m.lines for m in MODULES.values() if m.lines > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_dependencies_point_down():
    wrong = sorted((a, b) for a, targets in GRAPH.items() for b in targets if layer(b) > layer(a))
    assert not wrong, f"imports from a lower layer to a higher one (order {LAYERS}): {wrong}"
