"""Check a space given as a dict (a parsed YAML file) and build its :class:`SearchSpec`.

Every value enters here once: the fixed ``train`` settings build a TrainConfig; each choice
and range bound of a searched parameter is checked as the field it sets (a model change must
also build); trials later take values from those choices and ranges unchecked.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Any

from speq_search import schema
from speq_search.config import FIELD_SECTIONS, OneShotConfig, TrainConfig, check_choice, check_number, get_dotted
from speq_search.errors import ConfigError, one_of
from speq_search.plugins import check_plugins, load_plugins
from speq_search.samplers import check_sampler, grid_space, sampler_setting
from speq_search.space.files import TOP_KEYS, apply_override
from speq_search.space.model import (
    MODES,
    PARAM_TYPES,
    SCHEDULERS,
    Constraint,
    Objective,
    Param,
    SearchSettings,
    SearchSpec,
)
from speq_search.space.names import ALIASES, SHORT_NAME, GroupBits, config_changes, field_of, fields_of, is_config_name


def parse_space(raw: dict, overrides: dict[str, Any] | None = None) -> SearchSpec:
    """Check a space given as a dict (see :mod:`speq_search.space` for the format); ``overrides``
    are ``--set`` keys (``train.optim.epochs``)."""
    raw = copy.deepcopy(raw)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(key, raw[key], "a top-level key among " + ", ".join(sorted(TOP_KEYS)))
    raw.setdefault("train", {})
    raw.setdefault("search", {})
    for dotted, value in (overrides or {}).items():
        apply_override(raw, dotted, value)

    train = _parse_train(raw)
    params_raw = raw.get("params") or {}
    if not isinstance(params_raw, dict):
        raise ConfigError("params", params_raw, "a mapping {name: {type: choice|int|uniform|loguniform, ...}}")
    params = tuple(_parse_param(str(name), entry, train) for name, entry in params_raw.items())
    per_layer = raw.get("per_layer") or {}
    params += _per_layer_params(per_layer, train)
    if not params:
        raise ConfigError("params", raw.get("params"), "at least one searched parameter (or a per_layer section)")
    fields = [f if "@" not in p.name else p.name for p in params for f in fields_of(p.name, train.model.name)]
    if len(set(fields)) != len(fields):
        raise ConfigError("params", [p.name for p in params], "each config field searched once (bits sets both "
                          "w_bits and a_bits)")
    _check_bits_change_the_model(params, train)

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
        size = math.prod(len(values) for values in grid_space(params).values())  # raises for continuous parameters
        # Every point, or the first num_samples of them when the space or --num-samples asks for fewer.
        given = (raw["search"] or {}).get("num_samples") is not None
        search = dataclasses.replace(search, num_samples=min(size, search.num_samples) if given else size)
    constraints_raw = raw.get("constraints") or []
    if not isinstance(constraints_raw, list):
        raise ConfigError("constraints", constraints_raw, "a list of 'METRIC <= NUMBER' budgets")
    constraints = tuple(_parse_constraint(i, c, train) for i, c in enumerate(constraints_raw))
    proxy_points = _parse_proxy_warm_start(raw.get("warm_start"), params, search)
    warm_start = () if proxy_points else _parse_warm_start(raw.get("warm_start"), params, search)
    name = check_run_name(raw.get("name") or "space", "name")
    oneshot = _parse_oneshot(raw.get("oneshot"), params, search)
    spec = SearchSpec(name, str(raw.get("description", "")), train, params, objectives, search, per_layer,
                      constraints, warm_start, oneshot, proxy_points)
    check_sampler(spec)  # an Optuna class with its keywords: built once, asked for one point
    return spec


def _parse_oneshot(entry: Any, params: tuple[Param, ...], search: SearchSettings) -> OneShotConfig | None:
    """A space's ``oneshot`` section: the settings of a one-shot search over its per-layer choices."""
    if entry is None:
        return None
    if entry is True:
        entry = {}
    if not isinstance(entry, dict):
        raise ConfigError("oneshot", entry, "a mapping of one-shot settings (supernet_epochs, paths, teacher, "
                          "finetune_top, ...), or true for the defaults")
    known = {f.name for f in dataclasses.fields(OneShotConfig)}
    for key in entry:
        if key not in known:
            raise ConfigError(f"oneshot.{key}", entry[key], one_of(key, known))
    oneshot = OneShotConfig(**entry)
    others = [p.name for p in params if "@" not in p.name]
    if not any("@" in p.name for p in params) or others:
        raise ConfigError("oneshot", others or entry, "a space whose searched parameters are the per-layer bits of a "
                          "per_layer section only (the supernet serves every per-layer assignment; other parameters "
                          "need a per-trial search)")
    if oneshot.finetune_top > search.num_samples:
        raise ConfigError("oneshot.finetune_top", oneshot.finetune_top, f"at most search.num_samples "
                          f"({search.num_samples}), the assignments evaluated on the supernet")
    return oneshot


def _parse_train(raw: dict) -> TrainConfig:
    """The fixed settings: a TrainConfig whose errors are named as the space names them
    (``train.optim.epochs``; a near miss suggested by its short name, ``train.epochs``).
    The space's own ``plugins`` join ``train.plugins`` (they travel to every trial) and are
    loaded, so the model names they register are known."""
    train_raw = raw["train"] or {}
    if not isinstance(train_raw, dict):
        raise ConfigError("train", train_raw, "a mapping of TrainConfig sections (data, model, quant, speq, optim)")
    if raw.get("plugins") is not None:
        given = check_plugins(train_raw.get("plugins"), "train.plugins")  # both resolved, so a file named twice is one
        added = check_plugins(raw.pop("plugins"), "plugins")
        load_plugins(added, "plugins")  # a failing one named as the key that lists it
        train_raw = dict(train_raw, plugins=[*given, *[p for p in added if p not in given]])
        raw["train"] = train_raw
    suggestions = {name: f"train.{SHORT_NAME.get(dotted, dotted)}" for name, dotted in FIELD_SECTIONS.items()}
    try:
        train = TrainConfig.from_dict(train_raw, suggestions).replace(progress=False)
        load_plugins(train.plugins, "train.plugins")
        from speq_search.models import check_model_name
        from speq_search.quant.scaling import check_weight_quantizer

        check_model_name(train.model.name)  # the registry, not a build: a space is checked without a model
        check_weight_quantizer(train.quant.weight_quantizer)  # the registry (plain Python, no torch)
        if train.cost_model is not None:
            from speq_search.costs import load_cost_table

            load_cost_table(train.cost_model)
    except ConfigError as err:  # named as the space names it (once: a field may already be train.plugins)
        field = err.field if err.field.startswith("train.") else f"train.{err.field}"
        raise ConfigError(field, err.value, err.accepted) from None
    return train


def _build(train: TrainConfig):
    """The model of ``train`` with default data shapes: the layers a per-layer search groups, and
    whether a searched architecture value builds."""
    from speq_search.models import build_model

    return build_model(train.model)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_run_name(name: Any, field: str = "name") -> str:
    """A space or run name, which becomes a folder name: letters, digits and ``._+-``, no path parts."""
    text = str(name)
    if isinstance(name, bool) or not _NAME.fullmatch(text) or ".." in text:
        raise ConfigError(field, name, "a name of letters, digits and . _ + - (starting with a letter or digit, no "
                          "'/' or '..', at most 128 characters)")
    return text


def per_layer_groups(train: TrainConfig, granularity: str) -> dict[str, dict[str, bool]]:
    """The groups of ``train``'s model at ``granularity`` (see :func:`speq_search.quant.layer_groups`)."""
    from speq_search.quant import layer_groups

    return layer_groups(_build(train), granularity, train.quant.first_last_bits)


def _per_layer_params(section: Any, train: TrainConfig) -> tuple[Param, ...]:
    from speq_search.quant import GRANULARITIES

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
                params.append(Param(GroupBits(group, kind).param, "choice", values=tuple(section[kind])))
    return tuple(params)


_BITS_FIELDS = ("quant.w_bits", "quant.a_bits", "quant.first_last_bits", "quant.input_bits")


def _check_bits_change_the_model(params: tuple[Param, ...], train: TrainConfig) -> None:
    """A searched bit-width must change some layer of the model: one whose every layer it could set
    is pinned (the first and last layers' weights by ``first_last_bits``, the first layer's input by
    ``input_bits``, any layer by ``overrides``) would spend trials on one model. Checked by
    quantizing the space's model at each of the parameter's values (a space that also searches the
    model or its architecture is not checked: another architecture may have the layers)."""
    searched = {p.name: fields_of(p.name, train.model.name) for p in params if "@" not in p.name}
    if any(f.startswith("model.") for fields in searched.values() for f in fields):
        return
    bits = [p for p in params if "@" not in p.name and set(searched[p.name]) <= set(_BITS_FIELDS)]
    if not bits and not train.quant.group_bits:
        return
    import copy as _copy

    from speq_search.quant import layer_bits, quantize_model

    model = _build(train)
    try:  # the fixed settings' groups name layers of the model (each trial would fail otherwise)
        quantize_model(_copy.deepcopy(model), train.quant)
    except ConfigError as err:
        raise ConfigError(f"train.{err.field}", err.value, err.accepted) from None
    for p in bits:
        values = p.grid_values() if p.type in ("choice", "int") else [p.low, p.high]
        seen = {repr(layer_bits(quantize_model(_copy.deepcopy(model), train.replace(
            trusted=True, **config_changes(train, {p.name: v})).quant))) for v in values}
        if len(values) > 1 and len(seen) == 1:  # (one choice is a fixed value written as a parameter)
            layers = ", ".join(layer_bits(quantize_model(_copy.deepcopy(model), train.quant)))
            q = train.quant
            raise ConfigError(f"params.{p.name}", list(values), f"a parameter that changes the model: every layer "
                              f"whose bits it sets is pinned (quant.first_last_bits {q.first_last_bits} on the first "
                              f"and last layers' weights, quant.input_bits {q.input_bits} on the first layer's input"
                              + (", quant.overrides" if q.overrides else "") + f"; the layers of model {train.model.name}: "
                              f"{layers}); search a model with layers between the first and the last, or set "
                              "train.quant.first_last_bits: null")


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


def _parse_constraint(i: int, entry: Any, train: TrainConfig) -> Constraint:
    where = f"constraints[{i}]"
    metric, op, bound = parse_bound(entry, where)
    if metric not in schema.cost_metrics():
        raise ConfigError(f"{where}.metric", metric, "a cost known before training: " + ", ".join(schema.cost_metrics()))
    _check_table_metric(metric, train, where)
    return Constraint(metric, op, bound)


def _check_table_metric(metric: str, train: TrainConfig, where: str) -> None:
    """latency_ms / energy exist only when train.cost_model names a table reporting them."""
    if metric not in schema.table_metrics():
        return
    from speq_search.costs import load_cost_table

    if train.cost_model is None or load_cost_table(train.cost_model).metric != metric:
        raise ConfigError(where, metric, f"train.cost_model set to a table whose metric is {metric} (shipped: "
                          "int-accel, latency_ms)")


_BITS_PARAM = re.compile(r"^(w_bits|a_bits|bits)(@.*)?$")


def _parse_proxy_warm_start(entry: Any, params: tuple[Param, ...], search: SearchSettings) -> int:
    """``warm_start: sensitivity`` (or ``{sensitivity: COUNT}``): how many points of the proxy front
    (:mod:`speq_search.proxy`) are tried first; 0 for any other warm start. Default: a quarter of
    ``search.num_samples``, from 2 to 8."""
    if entry == "sensitivity":
        count = min(8, max(2, search.num_samples // 4))
    elif isinstance(entry, dict) and set(entry) == {"sensitivity"}:
        count = check_number("warm_start.sensitivity", entry["sensitivity"], 1, 1000, integer=True)
    else:
        return 0
    if search.sampler == "grid":
        raise ConfigError("warm_start", entry, "a sampler other than grid (a grid tries every point anyway)")
    if not any("@" in p.name for p in params):
        raise ConfigError("warm_start", entry, "a space with a per_layer section (the proxy front assigns per-layer "
                          "bits), or uniform, or a list of {param: value}")
    return int(count)


def _parse_warm_start(entry: Any, params: tuple[Param, ...], search: SearchSettings) -> tuple[dict, ...]:
    if not entry:
        return ()
    if search.sampler == "grid":
        raise ConfigError("warm_start", entry, "a sampler other than grid (a grid tries every point anyway)")
    by_name = {p.name: p for p in params}
    if entry == "uniform":
        # Every bits parameter at 2, then 4, then 8 (where the space allows it); the rest is sampled.
        points = []
        for b in (2, 4, 8):
            point = {p.name: b for p in params if _BITS_PARAM.match(p.name) and p.allows(b)}
            if point:
                points.append(point)
        if not points:
            raise ConfigError("warm_start", entry, "a space with bits parameters that allow 2, 4 or 8")
        return tuple(points)
    if not isinstance(entry, list):
        raise ConfigError("warm_start", entry, "'uniform', 'sensitivity', {sensitivity: COUNT} or a list of "
                          "{param: value}")
    for i, point in enumerate(entry):
        if not isinstance(point, dict) or not point:
            raise ConfigError(f"warm_start[{i}]", point, "a mapping {param: value}")
        for name, value in point.items():
            if name not in by_name:
                raise ConfigError(f"warm_start[{i}].{name}", value, "a searched parameter: " + ", ".join(by_name))
            if not by_name[name].allows(value):
                raise ConfigError(f"warm_start[{i}].{name}", value, "a value the parameter's range or choices allow")
    return tuple(dict(p) for p in entry)


def _parse_param(name: str, entry: Any, train: TrainConfig) -> Param:
    where = f"params.{name}"
    if not isinstance(entry, dict) or "type" not in entry:
        raise ConfigError(where, entry, "a mapping with type: " + " | ".join(PARAM_TYPES))
    ptype = entry["type"]
    if ptype not in PARAM_TYPES:
        raise ConfigError(f"{where}.type", ptype, " | ".join(PARAM_TYPES))
    allowed = {"type", "values"} if ptype == "choice" else {"type", "low", "high"}
    for key in entry:
        if key not in allowed:
            raise ConfigError(f"{where}.{key}", entry[key], "keys " + ", ".join(sorted(allowed)) + f" for type {ptype}")
    if "@" in name:
        raise ConfigError(where, name, "a parameter name without '@' (per-layer bits come from the per_layer section)")
    _check_name(name, train, where)
    if ptype == "choice":
        values = entry.get("values")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.values", values, "a non-empty list")
        for i, v in enumerate(values):
            _check_value(train, name, v, f"{where}.values[{i}]")
        return Param(name, ptype, values=tuple(values))
    low, high = entry.get("low"), entry.get("high")
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
    _check_value(train, name, cast(low), f"{where}.low")
    _check_value(train, name, cast(high), f"{where}.high")
    return Param(name, ptype, low=cast(low), high=cast(high))


def _check_name(name: str, train: TrainConfig, where: str) -> None:
    """A config field or short name, or an architecture dimension some registered model declares
    (whether the space's model declares it is checked with its values, which may change the model)."""
    from speq_search.models import declared_dims

    if name == "bits":
        return
    dims = declared_dims()
    if _is_field(train, name) if is_config_name(name) else name in dims:
        return
    listed = ", ".join(f"{dim} ({', '.join(models)})" for dim, models in dims.items())
    raise ConfigError(where, name, "a config field (dotted, e.g. optim.lr), a short name: " + ", ".join(
        sorted([*ALIASES, "bits"])) + f", or an architecture dimension a model declares: {listed}")


def _is_field(train: TrainConfig, name: str) -> bool:
    try:
        get_dotted(train, field_of(name))
    except KeyError:
        return False
    return True


def _check_value(train: TrainConfig, name: str, value: Any, where: str) -> None:
    """Parameter (or dotted field) ``name`` can take ``value``: the field it sets is checked, and a
    model change must build. A range is checked at its two bounds (every field's accepted
    values are an interval)."""
    try:
        changes = config_changes(train, {name: value})
        cfg = train.replace(**changes)
        if any(k.startswith("model.") for k in changes):
            _build(cfg)
        if "quant.weight_quantizer" in changes:
            from speq_search.quant.scaling import check_weight_quantizer

            check_weight_quantizer(cfg.quant.weight_quantizer)
    except ConfigError as err:
        raise ConfigError(where, value, err.accepted) from None


def _parse_objective(i: int, entry: Any, train: TrainConfig) -> Objective:
    where = f"objectives[{i}]"
    if not isinstance(entry, dict) or set(entry) != {"metric", "mode"}:
        raise ConfigError(where, entry, "a mapping {metric: ..., mode: max|min}")
    allowed = schema.objective_metrics()
    if entry["metric"] == "test_acc":
        raise ConfigError(f"{where}.metric", "test_acc", "a validation or cost metric (the test split is never told "
                          "to the sampler): " + ", ".join(allowed))
    if entry["metric"] not in allowed:
        raise ConfigError(f"{where}.metric", entry["metric"], " | ".join(allowed))
    if entry["mode"] not in MODES:
        raise ConfigError(f"{where}.mode", entry["mode"], "max | min")
    _check_table_metric(entry["metric"], train, f"{where}.metric")
    return Objective(entry["metric"], entry["mode"])


def _parse_search(entry: dict) -> SearchSettings:
    if not isinstance(entry, dict):
        raise ConfigError("search", entry, "a mapping of search settings")
    known = {f.name: f for f in dataclasses.fields(SearchSettings)}
    for key in entry:
        if key not in known:
            raise ConfigError(f"search.{key}", entry[key], one_of(key, known))
    entry = dict(entry)
    if isinstance(entry.get("scheduler"), str):  # a name, not an identifier: ASHA is how papers write it
        entry["scheduler"] = entry["scheduler"].lower()
    s = SearchSettings(**entry)
    changes = {"sampler": sampler_setting(s.sampler),
               "scheduler": check_choice("search.scheduler", s.scheduler, SCHEDULERS)}
    for key, lo, hi, integer in (("num_samples", 1, 100000, True), ("max_concurrent", 1, 1024, True),
                                 ("seed", 0, 2**31 - 1, True), ("cpus_per_trial", 0.01, 1024, False),
                                 ("gpus_per_trial", 0, 64, False), ("max_failures", 0, 100000, True),
                                 ("grace_period", 1, 100000, True), ("reduction_factor", 2, 100, True),
                                 ("repeats", 1, 100, True)):
        # an integral float (num_samples: 8.0) is the integer it is
        changes[key] = check_number(f"search.{key}", getattr(s, key), lo, hi, integer=integer)
    if changes["repeats"] > 1 and changes["scheduler"] == "asha":
        # ASHA stops a trial on one seed's early epochs; a repeated trial's objective is the seeds' mean.
        raise ConfigError("search.repeats", s.repeats, "1 with scheduler asha (repeats need scheduler fifo)")
    if s.max_retries is not None:
        changes["max_retries"] = check_number("search.max_retries", s.max_retries, 0, 100, integer=True)
    return dataclasses.replace(s, **changes)
