"""Space files: where the shipped ones are, reading one (with ``--set`` overrides), writing the resolved one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from speq_search.config import set_dotted
from speq_search.errors import ConfigError
from speq_search.plugins import check_plugins, resolve_relative
from speq_search.space.model import SearchSpec
from speq_search.space.names import ALIASES
from speq_search.yamlio import load_yaml

TOP_KEYS = ("name", "description", "train", "params", "objectives", "search", "per_layer", "constraints", "warm_start",
            "plugins", "oneshot")


def _shipped_dir() -> Path:
    """The shipped spaces: inside the installed package (a wheel carries ``search_spaces/`` as
    ``speq_search/search_spaces``), else the source tree's ``search_spaces/``, where they are edited."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "search_spaces"
    return installed if installed.is_dir() else package.parent / "search_spaces"


SHIPPED_DIR = _shipped_dir()


def shipped_spaces() -> dict[str, str]:
    """``{name: description}`` of the spaces in ``search_spaces/``."""
    out = {}
    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        try:
            out[path.stem] = (load_yaml(path, "space") or {}).get("description", "")
        except (ConfigError, AttributeError):
            out[path.stem] = "(unreadable)"
    return out


def resolve_space_path(name_or_path: str | None) -> Path:
    """A file path, or the name of a shipped space (``default``); none means ``default``."""
    if not name_or_path:
        return SHIPPED_DIR / "default.yaml"
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = SHIPPED_DIR / f"{name_or_path}.yaml"
    if shipped.is_file() and "/" not in name_or_path:
        return shipped
    raise ConfigError("space", name_or_path, "a YAML file or a shipped space: " + ", ".join(shipped_spaces()))


def load_space(name_or_path: str | None = None, overrides: dict[str, Any] | None = None,
               paths_relative_to_file: bool = True, plugins: Sequence[str] = ()) -> SearchSpec:
    """Load and check a space file; ``overrides`` are dotted keys (``train.optim.epochs``);
    ``plugins`` are added to the file's (``--plugin``; relative to the working directory).

    A relative ``train.data.data_dir`` in the file is relative to the file's folder (so a
    space finds its data from any working directory; the shipped ones point at the repository's
    ``.data``); one given in ``overrides`` is relative to the working directory.
    """
    from speq_search.space.parse import parse_space

    path = resolve_space_path(name_or_path)
    raw = load_yaml(path, "space")
    if not isinstance(raw, dict):
        raise ConfigError("space", str(path), "a mapping with train, params, objectives, search")
    raw.setdefault("name", path.stem)
    data = (raw.get("train") or {}).get("data") if isinstance(raw.get("train"), dict) else None
    if paths_relative_to_file and isinstance(data, dict) and isinstance(data.get("data_dir"), str):
        folder = Path(data["data_dir"]).expanduser()
        if not folder.is_absolute():
            data["data_dir"] = str((path.resolve().parent / folder).resolve())
    if paths_relative_to_file and raw.get("plugins"):
        raw["plugins"] = resolve_relative(raw["plugins"], path.resolve().parent)
    if plugins:
        given = raw.get("plugins") or []
        raw["plugins"] = [*([given] if isinstance(given, str) else given), *check_plugins(plugins, "--plugin")]
    return parse_space(raw, overrides)


def apply_override(raw: dict, dotted: str, value: Any) -> None:
    """``--set``: set ``raw[a][b][c] = value`` for ``a.b.c`` (``train.epochs`` is ``train.optim.epochs``);
    the checks that follow name bad keys."""
    parts = dotted.split(".")
    if parts[0] not in TOP_KEYS or (len(parts) == 1 and parts[0] in ("train", "params", "search")):
        # The key is what is wrong, not the value: name the key, and the one meant where it is a train field.
        from speq_search.config import FIELD_SECTIONS

        meant = f"train.{dotted}" if parts[0] in {s.split(".")[0] for s in FIELD_SECTIONS.values()} or \
            parts[0] in ALIASES or parts[0] in FIELD_SECTIONS else ""
        raise ConfigError("--set", dotted, "a key train.<section>.<field>, params.<name>.<key>, search.<field> or name"
                          + (f" (did you mean {meant}?)" if meant else ""))
    if parts[0] == "train" and len(parts) == 2 and parts[1] in ALIASES:
        parts = ["train", *ALIASES[parts[1]].split(".")]
    set_dotted(raw, ".".join(parts), value, create=True, field=f"--set {dotted}")


def dump_space(spec: SearchSpec, path: str | Path) -> None:
    """Write the resolved space (the run folder's ``space.yaml``)."""
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
