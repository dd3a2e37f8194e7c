"""Imports go one way (CLI → training → packaging → serving → networks/data; tracking below training), with no
cycles. The test parses every module of the package (no import is executed) and checks each edge."""

from __future__ import annotations

import ast
from pathlib import Path

import datamint_lightning

PACKAGE = Path(datamint_lightning.__file__).parent

# A module may import only from its own layer or a layer listed after it here.
ALLOWED = {
    "cli": {"cli", "config", "training", "packaging", "serving", "tracking", "networks", "data", "base"},
    # predict and export sit beside the CLI: they use serving models and packaging, never training
    "predict": {"predict", "packaging", "serving", "tracking", "networks", "data", "base"},
    "export": {"export", "packaging", "serving", "tracking", "networks", "data", "base"},
    "training": {"training", "config", "packaging", "tracking", "networks", "data", "base"},
    "config": {"config", "base"},
    "packaging": {"packaging", "serving", "networks", "data", "base"},
    "serving": {"serving", "networks", "data", "base"},
    "tracking": {"tracking", "data", "base"},
    "networks": {"networks", "base"},
    "data": {"data", "base"},
    "base": {"base"},
}
TOP = {"__init__", "__main__", "mlflow"}  # the public surfaces re-export every layer


def layer_of(module: str) -> str:
    parts = module.split(".")[1:]
    if not parts or parts[0] in TOP:
        return "top"
    head = parts[0]
    if head in ("cli", "cli_help"):
        return "cli"
    if head in ("config",):
        return "config"
    if head in ("errors", "paths", "console"):
        return "base"
    return head


def module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("datamint_lightning.")}


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for target in imports_of(path):
            while target and target not in modules:  # `from pkg.mod import name` names a module or an attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def test_no_upward_imports():
    upward = []
    for source, targets in graph().items():
        layer = layer_of(source)
        if layer == "top":
            continue
        for target in targets:
            target_layer = layer_of(target)
            if target_layer == "top" or target_layer not in ALLOWED[layer]:
                upward.append(f"{source} -> {target}")
    assert not upward, "imports against the layer order:\n" + "\n".join(sorted(upward))


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target) :], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    # a package's __init__ importing its own submodules lazily is not a cycle worth reporting
    cycles = [c for c in cycles if "datamint_lightning ->" not in c + " " and not c.startswith("datamint_lightning ")]
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_an_upward_edge(tmp_path):
    """The checker itself can fail: a serving module importing training is reported."""
    assert layer_of("datamint_lightning.serving.inputs") == "serving"
    assert "training" not in ALLOWED["serving"]
    assert "packaging" not in ALLOWED["tracking"]
    assert "training" not in ALLOWED["predict"] and "training" not in ALLOWED["export"]


def test_no_test_fixtures_ship_in_the_package():
    assert not list(PACKAGE.rglob("examples.py")), "test model factories belong under tests/"
