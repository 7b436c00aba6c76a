"""Registries: the one list of names of each concept (models, data sets, weight scalings, figures...).

A :class:`Registry` maps a name to an :class:`Entry`: the registered object (a builder, a
class), a one-line description, and what its kind records about it at registration (timm's
pattern: a model's input size or searchable dimensions). An unknown name is a one-line
:class:`~speq_search.errors.ConfigError` listing the known ones, and help texts are made from
the registry, so a new entry is one registration. Plain Python: no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from speq_search.errors import ConfigError, near_miss

T = TypeVar("T")


def first_line(obj: Any) -> str:
    """The first non-empty line of ``obj``'s docstring, or ``""`` (most users' functions have none)."""
    for line in (getattr(obj, "__doc__", None) or "").strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: the object, its description, and what else its kind records."""

    name: str
    obj: T
    description: str = ""
    info: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Names of one kind of thing, in registration order.

    ``field`` names the setting an unknown name is reported under (``model.name``);
    ``before_lookup`` runs before every lookup (loading installed plugins' entry points).
    """

    def __init__(self, kind: str, field: str, before_lookup: Callable[[], None] | None = None) -> None:
        self.kind, self.field = kind, field
        self._entries: dict[str, Entry[T]] = {}
        self._before_lookup = before_lookup

    def register(self, name: str, obj: T | None = None, *, description: str = "", **info: Any):
        """Register ``obj`` as ``name`` (a later registration replaces an earlier one); without ``obj``,
        a decorator. ``description`` defaults to the first line of the object's docstring."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.kind} name", name, "a non-empty string")

        def add(target: T) -> T:
            self._entries[name] = Entry(name, target, description or first_line(target), dict(info))
            return target

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Forget ``name`` (a plugin unloaded in tests)."""
        self._entries.pop(name, None)

    def _load(self) -> None:
        if self._before_lookup is not None:
            self._before_lookup()

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        self._load()
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load()
        return iter(list(self._entries.values()))

    def choices(self) -> str:
        """``"a | b | c"``: what an error or a help text lists."""
        return " | ".join(self.names())

    def get(self, name: Any, field: str | None = None) -> Entry[T]:
        """The entry of ``name``; an unknown one is an error naming ``field`` (default: the registry's)."""
        self._load()
        entry = self._entries.get(name) if isinstance(name, str) else None
        if entry is None:
            near = near_miss(str(name), list(self._entries)) if isinstance(name, str) else None
            raise ConfigError(field or self.field, name, self.choices() + (f" (did you mean {near}?)" if near else ""))
        return entry

    def check(self, name: Any, field: str | None = None) -> str:
        """``name`` if registered, else the error of :meth:`get`."""
        return self.get(name, field).name

    def describe(self) -> dict[str, str]:
        """``{name: one-line description}``, sorted by name."""
        self._load()
        return {name: e.description for name, e in sorted(self._entries.items())}
