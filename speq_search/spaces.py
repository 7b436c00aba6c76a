"""Search space files: load, validate, override. No Ray here.

A space file (YAML) has five parts::

    name: default
    description: one line for `speq-search spaces`
    train:        # fixed training settings: a TrainConfig (sections data, model, quant, speq, optim)
      data: {dataset: digits}
      optim: {epochs: 6, fp_epochs: 30}
    params:       # searched: name -> {type: choice|int|uniform|loguniform, ...}
      w_bits: {type: choice, values: [2, 3, 4, 8]}
      p_high: {type: uniform, low: 0.2, high: 0.8}
    objectives:   # two or three {metric, mode}
      - {metric: val_acc, mode: max}
      - {metric: bitops, mode: min}
    search:       # sampler, budget, resources
      sampler: tpe
      num_samples: 16

A parameter's name is a short alias (``w_bits``, ``p_high``...) or a dotted TrainConfig field
(``optim.lr``); the name used in the file is the column name in ``trials.csv``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speq_search.config import TrainConfig
from speq_search.errors import ConfigError

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "search_spaces"

# Short names for the fields a search usually varies.
ALIASES = {
    "w_bits": "quant.w_bits", "a_bits": "quant.a_bits", "first_last_bits": "quant.first_last_bits",
    "weight_quantizer": "quant.weight_quantizer",
    "method": "speq.method", "p_high": "speq.p_high", "high_bits": "speq.high_bits",
    "kd_weight": "speq.kd_weight", "ce_weight": "speq.ce_weight", "temperature": "speq.temperature",
    "kd_loss": "speq.kd_loss", "teacher_bn": "speq.teacher_bn",
    "model": "model.name", "width": "model.width",
    "lr": "optim.lr", "epochs": "optim.epochs", "batch_size": "data.batch_size",
}
PARAM_TYPES = ("choice", "int", "uniform", "loguniform")
SAMPLERS = ("tpe", "nsga2", "random", "grid")
SCHEDULERS = ("fifo", "asha")
# Metrics a trial reports that may be objectives. test_acc is reported but never an objective:
# the sampler must not see the test split.
OBJECTIVE_METRICS = ("val_acc", "val_loss", "avg_w_bits", "avg_a_bits", "avg_bits", "size_bytes", "bitops",
                     "macs", "params", "step_time_s", "train_time_s")
MODES = ("max", "min")


def field_of(name: str) -> str:
    """The dotted TrainConfig field a parameter name stands for."""
    return ALIASES.get(name, name)


@dataclass(frozen=True)
class Param:
    """One searched parameter."""

    name: str
    type: str
    values: tuple = ()
    low: float | None = None
    high: float | None = None

    def grid_values(self) -> list:
        """The values a grid search takes (every choice; every integer of an int range)."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise ConfigError(f"params.{self.name}.type", self.type, "choice or int for sampler grid")


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: str


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = "tpe"
    num_samples: int = 16
    max_concurrent: int = 2
    seed: int = 0
    scheduler: str = "fifo"
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 3
    grace_period: int = 1  # asha: epochs before the first stop decision
    reduction_factor: int = 3  # asha


@dataclass(frozen=True)
class SearchSpec:
    """A validated search space file."""

    name: str
    description: str
    train: TrainConfig
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    search: SearchSettings
    raw: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        """The resolved space, as written to ``RUN_DIR/space.yaml``."""
        return {
            "name": self.name, "description": self.description, "train": self.train.to_dict(),
            "params": {p.name: _param_dict(p) for p in self.params},
            "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "search": dataclasses.asdict(self.search),
        }

    def trial_config(self, values: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: the fixed settings plus the sampled values."""
        return self.train.replace(**{field_of(k): v for k, v in values.items()})


def _param_dict(p: Param) -> dict:
    if p.type == "choice":
        return {"type": "choice", "values": list(p.values)}
    return {"type": p.type, "low": p.low, "high": p.high}


def shipped_spaces() -> dict[str, str]:
    """``{name: description}`` of the spaces in ``search_spaces/``."""
    out = {}
    for path in sorted(SHIPPED_DIR.glob("*.yaml")):
        try:
            out[path.stem] = (yaml.safe_load(path.read_text()) or {}).get("description", "")
        except yaml.YAMLError:
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


def load_space(name_or_path: str | None = None, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Load and validate a space file; ``overrides`` are dotted keys (``train.optim.epochs``)."""
    path = resolve_space_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError("space", str(path), f"a readable YAML file ({type(err).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError("space", str(path), "a mapping with train, params, objectives, search")
    raw.setdefault("name", path.stem)
    return parse_space(raw, overrides)


def parse_space(raw: dict, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Validate a space given as a dict (see the module docstring for the format)."""
    raw = copy.deepcopy(raw)
    known = {"name", "description", "train", "params", "objectives", "search"}
    for key in raw:
        if key not in known:
            raise ConfigError(key, raw[key], "a top-level key among " + ", ".join(sorted(known)))
    raw.setdefault("train", {})
    raw.setdefault("search", {})
    for dotted, value in (overrides or {}).items():
        _override(raw, dotted, value)

    train_raw = raw["train"] or {}
    if not isinstance(train_raw, dict):
        raise ConfigError("train", train_raw, "a mapping of TrainConfig sections (data, model, quant, speq, optim)")
    try:
        train = TrainConfig.from_dict(train_raw).replace(progress=False)
    except ConfigError as err:
        raise ConfigError(f"train.{err.field}", err.value, err.accepted) from None

    params = tuple(_parse_param(name, spec, train) for name, spec in (raw.get("params") or {}).items())
    if not params:
        raise ConfigError("params", raw.get("params"), "at least one searched parameter")
    fields = [field_of(p.name) for p in params]
    if len(set(fields)) != len(fields):
        raise ConfigError("params", [p.name for p in params], "each config field searched once")

    objectives = tuple(_parse_objective(i, o) for i, o in enumerate(raw.get("objectives") or []))
    if not 2 <= len(objectives) <= 3:
        raise ConfigError("objectives", raw.get("objectives"), "a list of two or three {metric, mode}")
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError("objectives", [o.metric for o in objectives], "distinct metrics")

    search = _parse_search(raw["search"] or {})
    if search.sampler == "grid":
        for p in params:
            p.grid_values()  # raises for continuous parameters
    name = str(raw.get("name") or "space")
    return SearchSpec(name, str(raw.get("description", "")), train, params, objectives, search, raw)


def _override(raw: dict, dotted: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``a.b.c``; the validation that follows names bad keys."""
    parts = dotted.split(".")
    if parts[0] not in ("train", "params", "objectives", "search", "name", "description") or (
            len(parts) == 1 and parts[0] in ("train", "params", "search")):
        raise ConfigError(f"--set {dotted}", value, "train.<section>.<field>, params.<name>.<key>, search.<field>, name")
    if parts[0] == "train" and len(parts) == 2 and parts[1] in ALIASES:  # train.epochs -> train.optim.epochs
        parts = ["train", *ALIASES[parts[1]].split(".")]
    node = raw
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"--set {dotted}", value, f"a key below a mapping ({'.'.join(parts[:i + 1])} is not one)")
        node = node[part]
    node[parts[-1]] = value


def _parse_param(name: str, spec: Any, train: TrainConfig) -> Param:
    where = f"params.{name}"
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(where, spec, "a mapping with type: " + " | ".join(PARAM_TYPES))
    ptype = spec["type"]
    if ptype not in PARAM_TYPES:
        raise ConfigError(f"{where}.type", ptype, " | ".join(PARAM_TYPES))
    allowed = {"type", "values"} if ptype == "choice" else {"type", "low", "high"}
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", spec[key], "keys " + ", ".join(sorted(allowed)) + f" for type {ptype}")
    target = field_of(name)
    try:
        _check_field_exists(train, target)
    except ConfigError:
        raise ConfigError(where, name, "a config field (dotted, e.g. optim.lr) or a short name: "
                          + ", ".join(sorted(ALIASES))) from None
    if ptype == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values", values, "a non-empty list")
        for i, v in enumerate(values):
            _check_value(train, target, v, f"{where}.values[{i}]")
        return Param(name, ptype, values=tuple(values))
    low, high = spec.get("low"), spec.get("high")
    for key, v in (("low", low), ("high", high)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{where}.{key}", v, "a finite number")
    if ptype == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise ConfigError(f"{where}.low", low, "integers for type int")
    if not low < high:
        raise ConfigError(f"{where}.high", high, f"a number > low ({low})")
    if ptype == "loguniform" and low <= 0:
        raise ConfigError(f"{where}.low", low, "a number > 0 for loguniform")
    cast = int if ptype == "int" else float
    _check_value(train, target, cast(low), f"{where}.low")
    _check_value(train, target, cast(high), f"{where}.high")
    return Param(name, ptype, low=cast(low), high=cast(high))


def _field_value(train: TrainConfig, dotted: str) -> Any:
    node: Any = train.to_dict()
    for part in dotted.split("."):
        node = node[part]
    return node


def _check_field_exists(train: TrainConfig, dotted: str) -> None:
    try:
        _field_value(train, dotted)
    except (KeyError, TypeError):
        raise ConfigError(dotted, None, "a config field") from None


def _check_value(train: TrainConfig, target: str, value: Any, where: str) -> None:
    try:
        train.replace(**{target: value})
    except ConfigError as err:
        raise ConfigError(where, value, err.accepted) from None


def _parse_objective(i: int, spec: Any) -> Objective:
    where = f"objectives[{i}]"
    if not isinstance(spec, dict) or set(spec) != {"metric", "mode"}:
        raise ConfigError(where, spec, "a mapping {metric: ..., mode: max|min}")
    if spec["metric"] == "test_acc":
        raise ConfigError(f"{where}.metric", "test_acc", "a validation or cost metric (the test split is never told "
                          "to the sampler): " + ", ".join(OBJECTIVE_METRICS))
    if spec["metric"] not in OBJECTIVE_METRICS:
        raise ConfigError(f"{where}.metric", spec["metric"], " | ".join(OBJECTIVE_METRICS))
    if spec["mode"] not in MODES:
        raise ConfigError(f"{where}.mode", spec["mode"], "max | min")
    return Objective(spec["metric"], spec["mode"])


def _parse_search(spec: dict) -> SearchSettings:
    if not isinstance(spec, dict):
        raise ConfigError("search", spec, "a mapping of search settings")
    known = {f.name: f for f in dataclasses.fields(SearchSettings)}
    for key in spec:
        if key not in known:
            raise ConfigError(f"search.{key}", spec[key], "a key among " + ", ".join(known))
    s = SearchSettings(**spec)
    if s.sampler not in SAMPLERS:
        raise ConfigError("search.sampler", s.sampler, " | ".join(SAMPLERS))
    if s.scheduler not in SCHEDULERS:
        raise ConfigError("search.scheduler", s.scheduler, " | ".join(SCHEDULERS))
    for key, lo, hi, integer in (("num_samples", 1, 100000, True), ("max_concurrent", 1, 1024, True),
                                 ("seed", 0, 2**31 - 1, True), ("cpus_per_trial", 0.01, 1024, False),
                                 ("gpus_per_trial", 0, 64, False), ("max_failures", 0, 100000, True),
                                 ("grace_period", 1, 100000, True), ("reduction_factor", 2, 100, True)):
        v = getattr(s, key)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
        if ok and integer:
            ok = float(v).is_integer()
        if not ok:
            raise ConfigError(f"search.{key}", v, f"{'an integer' if integer else 'a number'} from {lo} to {hi}")
    return s


def dump_space(spec: SearchSpec, path: str | Path) -> None:
    """Write the resolved space (the run folder's ``space.yaml``)."""
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
