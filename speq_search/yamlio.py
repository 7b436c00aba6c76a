"""Reading YAML that a user wrote: every space file, config and cost table comes through here.

``yaml.safe_load`` runs no code, but it takes a file at its word in ways that hurt a tool:
a duplicate key silently wins over the first, and a "billion laughs" file (aliases of
aliases) loads in microseconds into a value whose printing or walking takes gigabytes. So
the reader here decodes strict UTF-8, refuses duplicate keys and bounds how large a
document may become once its aliases are expanded. Every failure is a :class:`ConfigError`
naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from speq_search.errors import ConfigError

# Nodes a document may hold once every alias is expanded. The largest shipped space has a few
# hundred; a per-layer space of a deep network a few thousand.
MAX_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and documents that expand past MAX_NODES."""

    def compose_document(self):  # noqa: D102
        node = super().compose_document()
        if node is not None:
            _check_expanded_size(node)
        return node

    def construct_mapping(self, node, deep=False):  # noqa: D102
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the parent's construct_mapping names it
                continue
            if duplicate:
                raise _Duplicate(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep)


class _Duplicate(Exception):
    def __init__(self, key, line: int):
        super().__init__(key, line)
        self.key, self.line = key, line


class _TooLarge(Exception):
    pass


def _check_expanded_size(root) -> None:
    """Count the nodes of the expanded document; a shared (aliased) node counts every time it is used."""
    sizes: dict[int, int] = {}

    def size(node, depth: int) -> int:
        if depth > 200:
            raise _TooLarge
        known = sizes.get(id(node))
        if known is not None:
            return known
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(v, depth + 1) for v in node.value)
        else:
            n = 1
        if n > MAX_NODES:
            raise _TooLarge
        sizes[id(node)] = n
        return n

    size(root, 0)


def parse_yaml(text: str, field: str, where: str) -> Any:
    """The value of a YAML document ``text``; errors name ``field`` and ``where`` it came from."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _Duplicate as dup:
        raise ConfigError(field, where, f"each key once per mapping ({dup.key!s:.40} repeats on line {dup.line})") from None
    except (_TooLarge, RecursionError):
        raise ConfigError(field, where, f"a YAML document of at most {MAX_NODES:,} values once its aliases (*name) "
                          "are expanded") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(field, where, f"valid YAML ({type(err).__name__}{at})") from None


def load_yaml(path: str | Path, field: str) -> Any:
    """Read and parse a YAML file; a missing, unreadable, non-UTF-8 or malformed file names ``field``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ConfigError(field, str(p), f"a readable YAML file ({err.strerror or type(err).__name__})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(field, str(p), f"a UTF-8 text file (byte {err.start} is not UTF-8: is it binary?)") from None
    if "\x00" in text:
        raise ConfigError(field, str(p), "a YAML text file (it holds NUL bytes: is it binary?)")
    return parse_yaml(text, field, str(p))
