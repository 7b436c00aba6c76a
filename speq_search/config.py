"""Configuration: one frozen dataclass per concern, validated on construction.

A :class:`TrainConfig` round-trips through a nested dict (and YAML): every run folder holds
the resolved ``config.yaml`` it was made from, so ``--config RUN/config.yaml`` repeats it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from speq_search.compiling import COMPILE_MODES
from speq_search.errors import ConfigError, one_of
from speq_search.quant.modules import WEIGHT_QUANTIZERS
from speq_search.quant.primitives import check_bits
from speq_search.speq import KD_LOSSES, KD_SCHEDULES, TEACHER_BN_MODES
from speq_search.yamlio import load_yaml

METHODS = ("fp", "qat", "kd-kl", "speq", "kd-fp")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")


def _number(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False, integer: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        lo_txt = f"> {lo}" if lo_open else f">= {lo}"
        raise ConfigError(name, value, f"{kind} {lo_txt} and <= {hi}")


def _integer(obj: Any, attr: str, name: str, lo: float, hi: float) -> None:
    """Validate an integer field; an integral float (``epochs: 1.0``) is taken and stored as an int."""
    value = getattr(obj, attr)
    _number(name, value, lo, hi, integer=True)
    object.__setattr__(obj, attr, int(value))


def _bits_mapping(name: str, value: Any) -> None:
    """``{layer name or pattern: {w_bits: b, a_bits: b}}``."""
    if not isinstance(value, dict):
        raise ConfigError(name, value, "a mapping {layer name or pattern: {w_bits: B, a_bits: B}}")
    for key, bits in value.items():
        if not isinstance(key, str) or not isinstance(bits, dict) or not bits or set(bits) - {"w_bits", "a_bits"}:
            raise ConfigError(f"{name}.{key}", bits, "a mapping with w_bits and/or a_bits")
        for kind, b in bits.items():
            check_bits(b, f"{name}.{key}.{kind}")


def _choice(name: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ConfigError(name, value, " | ".join(options))


@dataclass(frozen=True)
class DataConfig:
    """Which data, how much of it, in which batches."""

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    train_size: int | None = None
    val_fraction: float = 0.1
    batch_size: int = 64

    def __post_init__(self) -> None:
        _integer(self, "batch_size", "data.batch_size", 2, 65536)
        _number("data.val_fraction", self.val_fraction, 0.0, 0.9, lo_open=True)
        if self.train_size is not None:
            _integer(self, "train_size", "data.train_size", 2, 10**9)
        if self.data_dir is not None and not isinstance(self.data_dir, str):
            raise ConfigError("data.data_dir", self.data_dir, "a folder path (a string)")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture: a registry name, a width multiplier, builder keywords (depth...)."""

    name: str = "cnn-small"
    width: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _number("model.width", self.width, 0.0, 16.0, lo_open=True)
        if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
            raise ConfigError("model.kwargs", self.kwargs, "a mapping of builder keywords, e.g. {blocks: [2, 2, 2]}")
        from speq_search.models import list_models

        _choice("model.name", self.name, tuple(list_models()))


@dataclass(frozen=True)
class QuantConfig:
    """Target precision; ``overrides`` maps layer-name patterns to per-layer bits."""

    w_bits: int = 2
    a_bits: int = 2
    first_last_bits: int | None = 8
    input_bits: int = 8
    weight_quantizer: str = "lsq"
    per_channel: bool = True
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per-layer search: {layer name or module prefix: {w_bits, a_bits}}; the first/last rule still applies.
    group_bits: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _bits_mapping("quant.group_bits", self.group_bits)
        _bits_mapping("quant.overrides", self.overrides)
        check_bits(self.w_bits, "quant.w_bits")
        check_bits(self.a_bits, "quant.a_bits")
        check_bits(self.input_bits, "quant.input_bits")
        if self.first_last_bits is not None:
            check_bits(self.first_last_bits, "quant.first_last_bits")
        _choice("quant.weight_quantizer", self.weight_quantizer, WEIGHT_QUANTIZERS)


@dataclass(frozen=True)
class SpeqConfig:
    """The training method and SPEQ's loss and teacher settings."""

    method: str = "speq"
    p_high: float = 0.5
    high_bits: int = 8
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    temperature: float = 1.0
    kd_loss: str | None = None  # None: the method's own (kl for kd-kl, cosine otherwise)
    teacher_bn: str = "batch"
    kd_schedule: str = "constant"  # the distillation weight over training: constant | linear-decay | cosine-decay
    eval_draws: int = 2  # seeded teacher draws per epoch for the teacher diagnostic (0: skip it)

    def __post_init__(self) -> None:
        _choice("speq.method", self.method, METHODS)
        _number("speq.p_high", self.p_high, 0.0, 1.0)
        check_bits(self.high_bits, "speq.high_bits")
        _number("speq.kd_weight", self.kd_weight, 0.0, 1000.0)
        _number("speq.ce_weight", self.ce_weight, 0.0, 1000.0)
        _number("speq.temperature", self.temperature, 0.0, 100.0, lo_open=True)
        if self.kd_loss is not None:
            _choice("speq.kd_loss", self.kd_loss, KD_LOSSES)
        _choice("speq.teacher_bn", self.teacher_bn, TEACHER_BN_MODES)
        _choice("speq.kd_schedule", self.kd_schedule, KD_SCHEDULES)
        _integer(self, "eval_draws", "speq.eval_draws", 0, 64)
        if self.ce_weight == 0 and (self.kd_weight == 0 or self.method in ("fp", "qat")):
            raise ConfigError("speq.ce_weight", 0, "a weight > 0 when there is no distillation term")
        if self.ce_weight == 0 and self.kd_schedule != "constant":
            raise ConfigError("speq.ce_weight", 0, f"a weight > 0 with kd_schedule {self.kd_schedule} (the loss decays to CE alone)")

    @property
    def resolved_kd_loss(self) -> str:
        """The distillation loss the method uses."""
        if self.method == "kd-kl":
            return "kl"
        return self.kd_loss or "cosine"

    @property
    def teacher(self) -> str | None:
        """``"self"`` (stochastic precision), ``"fp"`` (the full-precision model) or ``None``."""
        if self.method in ("fp", "qat") or self.kd_weight == 0:
            return None
        return "fp" if self.method == "kd-fp" else "self"


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule for the quantized phase (``epochs``) and the FP phase."""

    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 15
    fp_epochs: int = 30
    fp_lr: float = 0.05

    def __post_init__(self) -> None:
        _choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        _number("optim.lr", self.lr, 0.0, 10.0, lo_open=True)
        _number("optim.fp_lr", self.fp_lr, 0.0, 10.0, lo_open=True)
        _number("optim.momentum", self.momentum, 0.0, 1.0)
        _number("optim.weight_decay", self.weight_decay, 0.0, 1.0)
        _integer(self, "epochs", "optim.epochs", 1, 100000)
        _integer(self, "fp_epochs", "optim.fp_epochs", 0, 100000)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "quant": QuantConfig, "speq": SpeqConfig, "optim": OptimConfig}


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; ``fp_checkpoint`` skips the FP phase."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    speq: SpeqConfig = field(default_factory=SpeqConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    device: str = "auto"
    compile: str = "auto"  # torch.compile: auto | on | off | kernels (see speq_search.compiling)
    fp_checkpoint: str | None = None
    fp_cache_dir: str | None = None
    cost_model: str | None = None  # a latency/energy table: a shipped name (int-accel) or a YAML path
    progress: bool = True
    plugins: tuple[str, ...] = ()  # modules or .py files that register models and data sets (speq_search.plugins)

    def __post_init__(self) -> None:
        from speq_search.plugins import check_plugins

        object.__setattr__(self, "plugins", check_plugins(self.plugins))
        _integer(self, "seed", "seed", 0, 2**31 - 1)
        _choice("device", self.device, DEVICES)
        if isinstance(self.compile, bool):  # YAML 1.1 reads a bare on/off as true/false
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        _choice("compile", self.compile, COMPILE_MODES)
        if self.cost_model is not None:
            from speq_search.costs import load_cost_table

            load_cost_table(self.cost_model)  # a missing or malformed table fails here, naming the field

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML-safe)."""
        d = dataclasses.asdict(self)
        d["plugins"] = list(self.plugins)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a nested dict; unknown keys are errors that name them."""
        if not isinstance(d, dict):
            raise ConfigError("config", type(d).__name__, "a mapping of sections: " + ", ".join(_SECTIONS))
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - top
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(key, d[key], one_of(key, top, _FIELD_SECTIONS))
        if d.get("plugins"):
            from speq_search.plugins import load_plugins

            load_plugins(d["plugins"])  # before the sections: they check model and data set names
        kwargs: dict[str, Any] = {}
        for key, value in d.items():
            if key in _SECTIONS:
                kwargs[key] = _section(key, _SECTIONS[key], value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with dotted-key changes, e.g. ``replace(**{"quant.w_bits": 4})``."""
        d = self.to_dict()
        for dotted, value in changes.items():
            set_dotted(d, dotted, value)
        return TrainConfig.from_dict(d)

    def save(self, path: str | Path) -> None:
        """Write as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        """Read a YAML file written by :meth:`save` (or by hand)."""
        d = load_yaml(path, "config")
        if d is None:
            raise ConfigError("config", str(path), "a YAML mapping of config sections (the file is empty)")
        if isinstance(d, dict) and d.get("plugins"):
            from speq_search.plugins import resolve_relative

            d["plugins"] = resolve_relative(d["plugins"], Path(path).resolve().parent)
        return cls.from_dict(d)


def _section(name: str, cls: type, value: Any):
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(name, value, f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(cls))}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            raise ConfigError(f"{name}.{key}", value[key], one_of(key, known))
    try:
        return cls(**value)
    except TypeError as err:
        raise ConfigError(name, value, str(err)) from None


def _section_fields() -> dict[str, str]:
    """Every section's field as ``{field: "section.field"}`` (a top-level near miss such as
    ``epoch`` is suggested as ``optim.epochs``)."""
    out: dict[str, str] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            for g in dataclasses.fields(f.default_factory):
                out.setdefault(g.name, f"{f.name}.{g.name}")
    return out


def set_dotted(d: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``d["a"]["b"] = value`` for ``dotted = "a.b"``; unknown keys are errors."""
    parts = dotted.split(".")
    node = d
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            raise ConfigError(".".join(parts[: i + 1]), dotted, "a section of the config: " + ", ".join(
                k for k, v in node.items() if isinstance(v, dict)))
        node = node[part]
    last = parts[-1]
    if last not in node and not (len(parts) > 1 and parts[-2] in ("overrides", "kwargs")):
        raise ConfigError(dotted, value, one_of(last, node))
    node[last] = value


_FIELD_SECTIONS = _section_fields()
