"""The package's layers: imports point one way (README "Layout"), lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import speq_search

LAYERS = {
    1: ("schema", "config", "errors", "files", "yamlio", "plugins", "registry"),
    2: ("quant", "speq", "models", "data", "costs", "compiling"),
    3: ("train", "sensitivity"),
    4: ("spec", "samplers"),
    5: ("analysis",),
    6: ("search", "export"),
    7: ("cli",),
}
LAYER = {name: level for level, names in LAYERS.items() for name in names}
PACKAGE = Path(speq_search.__file__).parent


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("speq_search"):
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "speq_search" else [node.module]
            yield from ((node.lineno, n) for n in names)
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("speq_search"))


def test_every_module_has_a_layer():
    tops = {p.relative_to(PACKAGE).parts[0].removesuffix(".py") for p in PACKAGE.rglob("*.py")}
    assert tops - {"__init__"} <= set(LAYER), sorted(tops - set(LAYER) - {"__init__"})


def test_imports_point_down():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        me = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        if me == "__init__":  # the package face re-exports lazily (PEP 562)
            continue
        for line, module in _imports(path):
            other = module.split(".")[1]
            if other in LAYER and LAYER[other] > LAYER[me]:
                upward.append(f"{path.relative_to(PACKAGE)}:{line} {me} -> {other}")
    assert not upward, upward


def test_ray_is_imported_only_in_search():
    outside = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "search":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            outside += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for n in names if n.split(".")[0] == "ray"]
    assert not outside, outside
