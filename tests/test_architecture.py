"""The package's layers: imports point one way (README "Layout"), lazy imports included."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import speq_search

LAYERS = {
    1: ("schema", "config", "errors", "files", "yamlio", "plugins", "registry", "storage"),
    2: ("quant", "speq", "models", "data", "costs", "compiling"),
    3: ("train", "sensitivity"),
    4: ("space", "spec", "samplers", "proxy"),
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


MAX_FUNCTION_LINES = 80


def test_no_function_in_the_package_is_over_80_lines():
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, long


# ----------------------------------------------------------------- dependencies' private names
FOREIGN = ("ray", "optuna")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _foreign_names(tree: ast.AST) -> dict[str, str]:
    """Local names bound to Ray or Optuna modules and objects: ``{local name: dotted origin}``."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in FOREIGN:
                    names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FOREIGN:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _chain(node: ast.AST) -> list[str] | None:
    """``["ray", "tune", "report"]`` for ``ray.tune.report``; None when it does not start at a name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return [node.id, *reversed(parts)] if isinstance(node, ast.Name) else None


def _resolve(dotted: str):
    module, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return importlib.import_module(dotted)


def private_uses(source: str) -> list[str]:
    """Where ``source`` uses a private name of Ray or Optuna: imports, attributes, keywords, and, in
    classes derived from theirs, overridden private methods and private attributes read from ``self``
    that the class never sets itself."""
    tree = ast.parse(source)
    foreign = _foreign_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in FOREIGN and any(map(_private, a.name.split(".")))]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in FOREIGN:
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if any(map(_private, [*node.module.split("."), a.name]))]
        elif isinstance(node, ast.Attribute):
            chain = _chain(node)
            if chain and chain[0] in foreign and any(map(_private, chain[1:])):
                found.append(f"{node.lineno}: {'.'.join(chain)}")
        elif isinstance(node, ast.Call):
            chain = _chain(node.func)
            if chain and chain[0] in foreign:
                found += [f"{node.lineno}: {'.'.join(chain)}({k.arg}=...)" for k in node.keywords if k.arg and _private(k.arg)]
        elif isinstance(node, ast.ClassDef):
            found += _private_in_subclass(node, foreign)
    return found


def _private_in_subclass(cls: ast.ClassDef, foreign: dict[str, str]) -> list[str]:
    bases = [_resolve(foreign[b.id]) for b in cls.bases if isinstance(b, ast.Name) and b.id in foreign]
    if not bases:
        return []
    own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    assigned = {t.attr for n in ast.walk(cls) for t in getattr(n, "targets", [getattr(n, "target", None)])
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"}
    found = [f"{cls.lineno}: {cls.name} overrides {name}" for name in own
             if _private(name) and any(hasattr(b, name) for b in bases)]
    for n in ast.walk(cls):
        if (isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self" and _private(n.attr)
                and n.attr not in assigned and n.attr not in own):
            found.append(f"{n.lineno}: {cls.name} reads self.{n.attr}, set by its {'/'.join(b.__name__ for b in bases)}")
    return found


def test_no_private_name_of_ray_or_optuna_is_used():
    uses = [f"{path.relative_to(PACKAGE)}:{use}" for path in PACKAGE.rglob("*.py")
            for use in private_uses(path.read_text())]
    assert not uses, uses


def test_the_private_name_rule_finds_what_the_old_searcher_did():
    old = """
import optuna
from ray._raylet import Config
from ray.tune.search import SearchGenerator
from ray.tune.search.optuna import OptunaSearch
import ray

class SpeqOptunaSearch(OptunaSearch):
    def _setup_study(self, mode):
        self._ot_study.set_metric_names([])
        self._mine = 1
        return self._mine

ray.init(address="local", _temp_dir="/tmp/x")
x = optuna.samplers._tpe
"""
    uses = private_uses(old)
    assert any("ray._raylet" in u for u in uses) and any("overrides _setup_study" in u for u in uses)
    assert any("self._ot_study" in u for u in uses) and not any("self._mine" in u for u in uses)
    assert any("_temp_dir" in u for u in uses) and any("optuna.samplers._tpe" in u for u in uses)
