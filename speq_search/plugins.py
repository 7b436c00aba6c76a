"""Plugins: your own models and data sets, registered in every process that trains.

A plugin is a Python module that calls :func:`speq_search.register_model` or
:func:`speq_search.register_dataset` when imported. It is named in one of three ways:

- a ``plugins: [...]`` list in a train config or a space file, or ``--plugin`` on ``train`` and
  ``run``: a module name (``my_pkg.models``, importable where the search runs) or a ``.py`` file
  (a relative path is relative to the file that names it, or to the working directory on the
  command line);
- the entry-point groups ``speq_search.models`` and ``speq_search.datasets`` of an installed
  package, loaded the first time a registry is asked for a name.

A search ships its file plugins, and module plugins that are not installed packages, to every
Ray worker through the job's ``runtime_env`` (``py_modules``), so a worker on another machine
imports the same code. No Ray here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from speq_search.errors import ConfigError

ENTRY_POINT_GROUPS = ("speq_search.models", "speq_search.datasets")
# Set in a search's runtime_env: the module names of file plugins that Ray's py_modules put on
# the workers' path (a worker on another machine has the file under that name, not at its path).
SHIPPED_ENV = "SPEQ_SEARCH_SHIPPED_PLUGINS"

_loaded: dict[str, ModuleType] = {}
_entry_points_loaded = False


def is_file_plugin(name: str) -> bool:
    """A ``.py`` file (else a module name)."""
    return name.endswith(".py") or os.sep in name or "/" in name


def check_plugins(value, field: str = "plugins") -> tuple[str, ...]:
    """``value`` as a tuple of plugin names, file plugins made absolute; a one-line error otherwise."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(field, value, "a list of module names (my_pkg.models) or .py files (./my_models.py)")
    return tuple(str(Path(v).expanduser().resolve()) if is_file_plugin(v) else v.strip() for v in value)


def resolve_relative(plugins, folder: Path):
    """``plugins`` with relative ``.py`` paths taken relative to ``folder`` (the file that names them)."""
    if isinstance(plugins, str):
        plugins = [plugins]
    if not isinstance(plugins, (list, tuple)):
        return plugins  # check_plugins names the field
    return [str((folder / p).resolve()) if isinstance(p, str) and is_file_plugin(p) and not Path(p).expanduser().is_absolute()
            else p for p in plugins]


def load_plugins(plugins: Sequence[str], field: str = "plugins") -> list[ModuleType]:
    """Import each plugin once (in this process); a plugin that fails is a one-line error naming it."""
    modules = []
    for name in check_plugins(plugins, field):
        if name not in _loaded:
            _loaded[name] = _import(name, field)
        modules.append(_loaded[name])
    return modules


def _import(name: str, field: str) -> ModuleType:
    try:
        if not is_file_plugin(name):
            return importlib.import_module(name)
        path = Path(name)
        stem = path.stem
        if stem in os.environ.get(SHIPPED_ENV, "").split(os.pathsep):
            return importlib.import_module(stem)  # a Ray worker: the copy py_modules put on its path
        if not path.is_file():
            raise ConfigError(field, name, "an existing .py file (or a module name)")
        module_spec = importlib.util.spec_from_file_location(stem, path)
        module = importlib.util.module_from_spec(module_spec)
        # Registered under its file's name, the name it has on a worker that received it by py_modules.
        sys.modules[stem] = module
        try:
            module_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(stem, None)
            raise
        return module
    except ConfigError:
        raise
    except Exception as err:  # ImportError, SyntaxError, or anything the plugin raised while registering
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(field, name, f"a plugin that imports ({type(err).__name__}: {first})") from None


def load_entry_points() -> None:
    """Import the plugins installed packages declare in :data:`ENTRY_POINT_GROUPS` (once per process)."""
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for group in ENTRY_POINT_GROUPS:
        for ep in entry_points(group=group):
            try:
                loaded = ep.load()
                if callable(loaded) and not isinstance(loaded, ModuleType):
                    loaded()  # "pkg.module:register": a function that registers
            except Exception as err:
                _entry_points_loaded = False  # a fixed package is tried again
                first = (str(err).strip().splitlines() or [""])[0][:200]
                raise ConfigError(f"entry point {group}:{ep.name}", ep.value,
                                  f"a plugin that imports ({type(err).__name__}: {first})") from None


def runtime_env_for(plugins: Sequence[str]) -> dict:
    """What a Ray job needs so that its workers import ``plugins``: ``py_modules`` (file plugins, and
    module plugins that are not installed in site-packages) and the shipped files' module names."""
    shipped, names = [], []
    for name in check_plugins(plugins):
        if is_file_plugin(name):
            shipped.append(name)
            names.append(Path(name).stem)
            continue
        top = name.split(".")[0]
        module_spec = importlib.util.find_spec(top)
        origin = Path(module_spec.origin) if module_spec is not None and module_spec.origin else None
        if origin is None or any(part in ("site-packages", "dist-packages") for part in origin.parts):
            continue  # installed: the workers have it (same environment)
        shipped.append(str(origin.parent if origin.name == "__init__.py" else origin))
    if not shipped:
        return {}
    return {"py_modules": shipped, "env_vars": {SHIPPED_ENV: os.pathsep.join(names)}}
