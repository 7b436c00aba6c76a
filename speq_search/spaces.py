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
(``optim.lr``); the name used in the file is the column name in ``trials.csv``. Some names set
more than one field or turn a value into a list: ``bits`` (uniform precision: weights and
activations), ``depth`` (ResNet blocks per stage), ``hidden`` (MLP hidden sizes, ``"256-128"``),
``channels`` (cnn-small stage widths, ``"32-64-128"``), ``expansion`` (MobileNetV2).

Optional parts for per-layer and constrained searches::

    per_layer:    # one weight and one activation bits dimension per group of layers
      granularity: block        # layer | block | stage (see per_layer_groups)
      w_bits: [2, 4, 8]
      a_bits: [2, 4, 8]
      sensitivity: true         # score each layer once (sensitivity.csv) and try a point seeded by it
    constraints:  # budgets; trials that break one are INFEASIBLE, never trained, never on the front
      - size_bytes <= 4096
    warm_start: uniform         # or a list of {param: value}: tried first (Optuna enqueue_trial)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from speq_search.errors import ConfigError, one_of
from speq_search.yamlio import load_yaml

if TYPE_CHECKING:
    from speq_search.config import TrainConfig



def _shipped_dir() -> Path:
    """The shipped spaces: inside the installed package (a wheel carries ``search_spaces/`` as
    ``speq_search/search_spaces``), else the source tree's ``search_spaces/``, where they are edited."""
    package = Path(__file__).resolve().parent
    installed = package / "search_spaces"
    return installed if installed.is_dir() else package.parent / "search_spaces"


SHIPPED_DIR = _shipped_dir()

# Short names for the fields a search usually varies.
ALIASES = {
    "w_bits": "quant.w_bits", "a_bits": "quant.a_bits", "first_last_bits": "quant.first_last_bits",
    "weight_quantizer": "quant.weight_quantizer",
    "method": "speq.method", "p_high": "speq.p_high", "high_bits": "speq.high_bits",
    "kd_weight": "speq.kd_weight", "ce_weight": "speq.ce_weight", "temperature": "speq.temperature",
    "kd_loss": "speq.kd_loss", "teacher_bn": "speq.teacher_bn", "kd_schedule": "speq.kd_schedule",
    "model": "model.name", "width": "model.width",
    "lr": "optim.lr", "epochs": "optim.epochs", "batch_size": "data.batch_size",
}
PARAM_TYPES = ("choice", "int", "uniform", "loguniform")
SAMPLERS = ("tpe", "nsga2", "random", "grid")
SCHEDULERS = ("fifo", "asha")
# Metrics a trial reports that may be objectives. test_acc is reported but never an objective:
# the sampler must not see the test split.
# Costs known before training: what constraints may bound (latency_ms/energy need train.cost_model).
COST_METRICS = ("avg_w_bits", "avg_a_bits", "avg_bits", "size_bytes", "bitops", "macs", "params", "latency_ms",
                "energy")
OBJECTIVE_METRICS = ("val_acc", "val_loss", *COST_METRICS, "step_time_s", "train_time_s")
MODES = ("max", "min")
ARCH_NAMES = ("depth", "hidden", "channels", "expansion")  # architecture dimensions besides width/model
GRANULARITIES = ("layer", "block", "stage")


def _int_list(value: Any) -> list[int]:
    """``"256-128"`` or ``256`` -> ``[256, 128]`` / ``[256]`` (choices must be scalars for Optuna)."""
    if isinstance(value, bool):
        raise ConfigError("value", value, "an integer or sizes joined by '-', e.g. 256-128")
    if isinstance(value, int):
        return [value]
    try:
        return [int(v) for v in str(value).split("-")]
    except ValueError:
        raise ConfigError("value", value, "an integer or sizes joined by '-', e.g. 256-128") from None


def assignments(name: str, value: Any) -> dict[str, Any]:
    """The dotted TrainConfig fields (and values) that setting parameter ``name`` to ``value`` means."""
    if name == "bits":
        return {"quant.w_bits": value, "quant.a_bits": value}
    if name == "depth":
        return {"model.kwargs.blocks": [value] * 3}
    if name in ("hidden", "channels"):
        return {f"model.kwargs.{name}": _int_list(value)}
    if name == "expansion":
        return {"model.kwargs.expansion": value}
    if "@" in name:  # w_bits@layer1.0: one group of the per-layer search
        kind, _, group = name.partition("@")
        return {f"quant.group_bits[{group}].{kind}": value}
    return {ALIASES.get(name, name): value}


def fields_of(name: str) -> tuple[str, ...]:
    """The dotted TrainConfig fields a parameter name sets."""
    return tuple(assignments(name, 1))


def field_of(name: str) -> str:
    """The (first) dotted TrainConfig field a parameter name stands for."""
    return fields_of(name)[0]


def per_layer_groups(train: TrainConfig, granularity: str) -> dict[str, dict[str, bool]]:
    """``{group: {"w_bits": searchable, "a_bits": searchable}}`` of ``train``'s model.

    A group is a layer's name (``layer``), its first two name parts (``block``: ``layer1.0``,
    ``features.4``) or its first part (``stage``: ``layer1``, ``features``). Its weight bits are
    searchable unless every layer in it is the first or last one under ``first_last_bits``; its
    activation bits unless it holds only the first layer (whose input is the image, at
    ``input_bits``). Order: the model's.
    """
    from speq_search.models import create_model
    from speq_search.quant import quantizable_layers

    cfg = train.model
    model = create_model(cfg.name, width=cfg.width, **cfg.kwargs)
    names = [n for n, _ in quantizable_layers(model)]
    depth = {"layer": None, "block": 2, "stage": 1}[granularity]
    groups: dict[str, dict[str, bool]] = {}
    for i, name in enumerate(names):
        group = ".".join(name.split(".")[:depth]) if depth else name
        g = groups.setdefault(group, {"w_bits": False, "a_bits": False})
        fixed_w = train.quant.first_last_bits is not None and i in (0, len(names) - 1)
        g["w_bits"] |= not fixed_w
        g["a_bits"] |= i != 0
    return groups


@dataclass(frozen=True)
class Constraint:
    """A budget ``metric <= bound`` (or ``>=``) on a cost known before training."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """<= 0 when met; otherwise how far off, relative to the bound (Optuna's convention)."""
        gap = value - self.bound if self.op == "<=" else self.bound - value
        return gap / abs(self.bound) if self.bound else gap

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:.12g}"  # exact enough to parse back to the same bound


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
    per_layer: dict = field(default_factory=dict)  # the per_layer section as written (its params are expanded)
    constraints: tuple[Constraint, ...] = ()
    warm_start: tuple[dict, ...] = ()  # points tried first

    def to_dict(self) -> dict:
        """The resolved space, as written to ``RUN_DIR/space.yaml``."""
        out = {
            "name": self.name, "description": self.description, "train": self.train.to_dict(),
            "params": {p.name: _param_dict(p) for p in self.params if "@" not in p.name},
            "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "search": dataclasses.asdict(self.search),
        }
        if self.per_layer:
            out["per_layer"] = copy.deepcopy(self.per_layer)
        if self.constraints:
            out["constraints"] = [str(c) for c in self.constraints]
        if self.warm_start:
            out["warm_start"] = [dict(p) for p in self.warm_start]
        return out

    def trial_config(self, values: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: the fixed settings plus the sampled values."""
        return self.train.replace(**_changes(self.train, values))

    def violations(self, costs: dict[str, Any]) -> dict[str, float]:
        """``{constraint: violation}``, <= 0 where ``costs`` meet it (a missing metric counts as broken)."""
        return {str(c): c.violation(float(costs[c.metric])) if c.metric in costs else float("inf")
                for c in self.constraints}


def _changes(train: TrainConfig, values: dict[str, Any]) -> dict[str, Any]:
    """Dotted changes of a trial; per-layer values are gathered into one ``quant.group_bits``."""
    changes: dict[str, Any] = {}
    group_bits = copy.deepcopy(train.quant.group_bits)
    for name, value in values.items():
        for dotted, v in assignments(name, value).items():
            if dotted.startswith("quant.group_bits["):
                group, _, kind = dotted[len("quant.group_bits["):].partition("].")
                group_bits.setdefault(group, {})[kind] = v
            else:
                changes[dotted] = v
    if group_bits != train.quant.group_bits:
        changes["quant.group_bits"] = group_bits
    return changes


def _param_dict(p: Param) -> dict:
    if p.type == "choice":
        return {"type": "choice", "values": list(p.values)}
    return {"type": p.type, "low": p.low, "high": p.high}


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
    """Load and validate a space file; ``overrides`` are dotted keys (``train.optim.epochs``);
    ``plugins`` are added to the file's (``--plugin``; relative to the working directory).

    A relative ``train.data.data_dir`` in the file is relative to the file's folder (so a
    space finds its data from any working directory; the shipped ones point at the repository's
    ``.data``); one given in ``overrides`` is relative to the working directory.
    """
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
        from speq_search.plugins import resolve_relative

        raw["plugins"] = resolve_relative(raw["plugins"], path.resolve().parent)
    if plugins:
        from speq_search.plugins import check_plugins

        given = raw.get("plugins") or []
        raw["plugins"] = [*([given] if isinstance(given, str) else given), *check_plugins(plugins, "--plugin")]
    return parse_space(raw, overrides)


def parse_space(raw: dict, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Validate a space given as a dict (see the module docstring for the format)."""
    raw = copy.deepcopy(raw)
    known = {"name", "description", "train", "params", "objectives", "search", "per_layer", "constraints", "warm_start",
             "plugins"}
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
    if raw.get("plugins") is not None:  # a space's plugins travel with its train config, to every trial
        from speq_search.plugins import check_plugins

        given = check_plugins(train_raw.get("plugins"), "train.plugins")  # both resolved, so a file named twice is one
        added = check_plugins(raw.pop("plugins"), "plugins")
        train_raw = dict(train_raw, plugins=[*given, *[p for p in added if p not in given]])
        raw["train"] = train_raw
    try:
        from speq_search.config import TrainConfig  # torch: only where a space is parsed

        train = TrainConfig.from_dict(train_raw).replace(progress=False)
    except ConfigError as err:
        accepted = err.accepted
        near = re.search(r"\(did you mean ([\w.]+)\?\)", accepted)
        if near and "." not in err.field:  # a top-level near miss: name it as a space names it
            short = {dotted: name for name, dotted in ALIASES.items()}.get(near.group(1), near.group(1))
            accepted = accepted.replace(near.group(0), f"(did you mean train.{short}?)")
        raise ConfigError(f"train.{err.field}", err.value, accepted) from None

    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise ConfigError("params", params_raw, "a mapping {name: {type: choice|int|uniform|loguniform, ...}}")
    params = tuple(_parse_param(str(name), spec, train) for name, spec in params_raw.items())
    per_layer = raw.get("per_layer") or {}
    params += _per_layer_params(per_layer, train)
    if not params:
        raise ConfigError("params", raw.get("params"), "at least one searched parameter (or a per_layer section)")
    fields = [f for p in params for f in fields_of(p.name)]
    if len(set(fields)) != len(fields):
        raise ConfigError("params", [p.name for p in params], "each config field searched once (bits sets both "
                          "w_bits and a_bits)")

    objectives_raw = raw.get("objectives") or []
    if not isinstance(objectives_raw, list):
        raise ConfigError("objectives", objectives_raw, "a list of two or three {metric, mode}")
    objectives = tuple(_parse_objective(i, o, train) for i, o in enumerate(objectives_raw))
    if not 2 <= len(objectives) <= 3:
        raise ConfigError("objectives", raw.get("objectives"), "a list of two or three {metric, mode}")
    if len({o.metric for o in objectives}) != len(objectives):
        raise ConfigError("objectives", [o.metric for o in objectives], "distinct metrics")

    search = _parse_search(raw["search"] or {})
    if search.sampler == "grid":
        size = math.prod(len(p.grid_values()) for p in params)  # raises for continuous parameters
        # Every point, or the first num_samples of them when the space or --num-samples asks for fewer.
        given = (raw["search"] or {}).get("num_samples") is not None
        search = dataclasses.replace(search, num_samples=min(size, search.num_samples) if given else size)
    constraints_raw = raw.get("constraints") or []
    if not isinstance(constraints_raw, list):
        raise ConfigError("constraints", constraints_raw, "a list of 'METRIC <= NUMBER' budgets")
    constraints = tuple(_parse_constraint(i, c, train) for i, c in enumerate(constraints_raw))
    warm_start = _parse_warm_start(raw.get("warm_start"), params, search)
    name = check_run_name(raw.get("name") or "space", "name")
    return SearchSpec(name, str(raw.get("description", "")), train, params, objectives, search, raw, per_layer,
                      constraints, warm_start)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_run_name(name: Any, field: str = "name") -> str:
    """A space or run name, which becomes a folder name: letters, digits and ``._+-``, no path parts."""
    text = str(name)
    if isinstance(name, bool) or not _NAME.fullmatch(text) or ".." in text:
        raise ConfigError(field, name, "a name of letters, digits and . _ + - (starting with a letter or digit, no "
                          "'/' or '..', at most 128 characters)")
    return text


def _per_layer_params(section: Any, train: TrainConfig) -> tuple[Param, ...]:
    if not section:
        return ()
    if not isinstance(section, dict):
        raise ConfigError("per_layer", section, "a mapping with granularity, w_bits and/or a_bits")
    for key in section:
        if key not in ("granularity", "w_bits", "a_bits", "sensitivity"):
            raise ConfigError(f"per_layer.{key}", section[key], "a key among granularity, w_bits, a_bits, sensitivity")
    if not isinstance(section.get("sensitivity", False), bool):
        raise ConfigError("per_layer.sensitivity", section["sensitivity"], "true or false")
    granularity = section.get("granularity", "layer")
    if granularity not in GRANULARITIES:
        raise ConfigError("per_layer.granularity", granularity, " | ".join(GRANULARITIES))
    if not section.get("w_bits") and not section.get("a_bits"):
        raise ConfigError("per_layer", section, "w_bits and/or a_bits: lists of bit-widths to choose from")
    for kind in ("w_bits", "a_bits"):
        values = section.get(kind)
        if values is None:
            continue
        if not isinstance(values, list) or not values:
            raise ConfigError(f"per_layer.{kind}", values, "a non-empty list of bit-widths (2-8 or 32)")
        for i, v in enumerate(values):
            _check_value(train, "quant." + kind, v, f"per_layer.{kind}[{i}]")
    params = []
    for group, searchable in per_layer_groups(train, granularity).items():
        for kind in ("w_bits", "a_bits"):
            if section.get(kind) and searchable[kind]:
                params.append(Param(f"{kind}@{group}", "choice", values=tuple(section[kind])))
    return tuple(params)


def parse_bound(text: Any, field: str, ops: tuple[str, ...] = ("<=", ">=")) -> tuple[str, str, float]:
    """``"METRIC <= NUMBER"`` as ``(metric, op, bound)``: a space's constraints, ``export --budget``;
    anything else is a one-line error naming ``field``."""
    match = re.fullmatch(r"\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", text) if isinstance(text, str) else None
    if not match or match.group(2) not in ops:
        raise ConfigError(field, text, " or ".join(f"'METRIC {op} NUMBER'" for op in ops) + ", e.g. 'size_bytes <= 4096'")
    metric, op, bound = match.groups()
    try:
        return metric, op, float(bound)
    except ValueError:
        raise ConfigError(f"{field}.bound", bound, "a number") from None


def _parse_constraint(i: int, spec: Any, train: TrainConfig) -> Constraint:
    where = f"constraints[{i}]"
    metric, op, bound = parse_bound(spec, where)
    if metric not in COST_METRICS:
        raise ConfigError(f"{where}.metric", metric, "a cost known before training: " + ", ".join(COST_METRICS))
    _check_table_metric(metric, train, where)
    return Constraint(metric, op, bound)


def _check_table_metric(metric: str, train: TrainConfig, where: str) -> None:
    """latency_ms / energy exist only when train.cost_model names a table reporting them."""
    if metric not in ("latency_ms", "energy"):
        return
    from speq_search.costs import load_cost_table

    if train.cost_model is None or load_cost_table(train.cost_model).metric != metric:
        raise ConfigError(where, metric, f"train.cost_model set to a table whose metric is {metric} (shipped: "
                          "int-accel, latency_ms)")


def _allowed(p: Param, value: Any) -> bool:
    if p.type == "choice":
        return value in p.values
    return isinstance(value, (int, float)) and not isinstance(value, bool) and p.low <= value <= p.high


_BITS_PARAM = re.compile(r"^(w_bits|a_bits|bits)(@.*)?$")


def _parse_warm_start(spec: Any, params: tuple[Param, ...], search: SearchSettings) -> tuple[dict, ...]:
    if not spec:
        return ()
    if search.sampler == "grid":
        raise ConfigError("warm_start", spec, "a sampler other than grid (a grid tries every point anyway)")
    by_name = {p.name: p for p in params}
    if spec == "uniform":
        # Every bits parameter at 2, then 4, then 8 (where the space allows it); the rest is sampled.
        points = []
        for b in (2, 4, 8):
            point = {p.name: b for p in params if _BITS_PARAM.match(p.name) and _allowed(p, b)}
            if point:
                points.append(point)
        if not points:
            raise ConfigError("warm_start", spec, "a space with bits parameters that allow 2, 4 or 8")
        return tuple(points)
    if not isinstance(spec, list):
        raise ConfigError("warm_start", spec, "'uniform' or a list of {param: value}")
    for i, point in enumerate(spec):
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"warm_start[{i}]", point, "a mapping {param: value}")
        for name, value in point.items():
            if name not in by_name:
                raise ConfigError(f"warm_start[{i}].{name}", value, "a searched parameter: " + ", ".join(by_name))
            if not _allowed(by_name[name], value):
                raise ConfigError(f"warm_start[{i}].{name}", value, "a value the parameter's range or choices allow")
    return tuple(dict(p) for p in spec)


def _override(raw: dict, dotted: str, value: Any) -> None:
    """Set ``raw[a][b][c] = value`` for ``a.b.c``; the validation that follows names bad keys."""
    parts = dotted.split(".")
    if parts[0] not in ("train", "params", "objectives", "search", "name", "description", "per_layer", "constraints",
                        "warm_start", "plugins") or (
            len(parts) == 1 and parts[0] in ("train", "params", "search")):
        raise ConfigError(f"--set {dotted}", value, "train.<section>.<field>, params.<name>.<key>, search.<field>, name")
    if parts[0] == "train" and len(parts) == 2 and parts[1] in ALIASES:  # train.epochs -> train.optim.epochs
        parts = ["train", *ALIASES[parts[1]].split(".")]
    if len(parts) == 1 and parts[0] in ("constraints", "warm_start", "per_layer", "plugins"):
        raw[parts[0]] = value
        return
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
    if "@" in name:
        raise ConfigError(where, name, "a parameter name without '@' (per-layer bits come from the per_layer section)")
    target = name
    if name not in ("bits", *ARCH_NAMES):
        target = field_of(name)
        try:
            _check_field_exists(train, target)
        except ConfigError:
            raise ConfigError(where, name, "a config field (dotted, e.g. optim.lr) or a short name: "
                              + ", ".join(sorted([*ALIASES, "bits", *ARCH_NAMES]))) from None
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
    """``target`` (a parameter name or a dotted field) can take ``value``; model changes must build."""
    try:
        changes = _changes(train, {target: value})
        cfg = train.replace(**changes)
        if any(k.startswith("model.") for k in changes):
            from speq_search.models import create_model

            create_model(cfg.model.name, width=cfg.model.width, **cfg.model.kwargs)
    except ConfigError as err:
        raise ConfigError(where, value, err.accepted) from None


def _parse_objective(i: int, spec: Any, train: TrainConfig) -> Objective:
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
    _check_table_metric(spec["metric"], train, f"{where}.metric")
    return Objective(spec["metric"], spec["mode"])


def _parse_search(spec: dict) -> SearchSettings:
    if not isinstance(spec, dict):
        raise ConfigError("search", spec, "a mapping of search settings")
    known = {f.name: f for f in dataclasses.fields(SearchSettings)}
    for key in spec:
        if key not in known:
            raise ConfigError(f"search.{key}", spec[key], one_of(key, known))
    spec = dict(spec)
    for key in ("sampler", "scheduler"):  # names, not identifiers: TPE, NSGA2 and ASHA are how papers write them
        if isinstance(spec.get(key), str):
            spec[key] = spec[key].lower()
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
        if integer and isinstance(v, float):  # an integral float (num_samples: 8.0) is the integer it is
            s = dataclasses.replace(s, **{key: int(v)})
    return s


def dump_space(spec: SearchSpec, path: str | Path) -> None:
    """Write the resolved space (the run folder's ``space.yaml``)."""
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
