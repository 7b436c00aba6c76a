"""Configuration: one frozen dataclass per concern, plain data that validates itself.

A :class:`TrainConfig` round-trips through a nested dict (and YAML): every run folder holds
the resolved ``config.yaml`` it was made from, so ``--config RUN/config.yaml`` repeats it.

This module is a leaf: it imports neither torch nor the quantizers, the method, the model
registry or a cost table. The choices a field accepts live here, and the modules that use
them import them from here. A value is checked once, where it enters (a file, the command
line, a Python call): constructing a section checks every field; :meth:`TrainConfig.replace`
checks the fields it changes; a search's trial configs are built from values its space
already checked (``trusted``). The model's name, the weight quantizer's name, a cost table and
plugins are looked up where the model, the quantizers or the table are built
(``speq_search.models.build_model``, ``speq_search.quant.quantize_model``, ``speq_search.costs``).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from speq_search.errors import ConfigError, one_of
from speq_search.plugins import check_plugins, resolve_relative
from speq_search.registry import Registry
from speq_search.yamlio import load_yaml

FULL_PRECISION = 32  # "no rounding"
SUPPORTED_BITS = (2, 3, 4, 5, 6, 7, 8, FULL_PRECISION)
KD_LOSSES = ("cosine", "cosine-logits", "kl")
TEACHER_BN_MODES = ("batch", "running")  # how BatchNorm normalises in the teacher pass
KD_SCHEDULES = ("constant", "linear-decay", "cosine-decay")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
COMPILE_MODES = ("auto", "on", "off", "kernels")  # see speq_search.compiling


def check_bits(bits: Any, field: str = "bits") -> int:
    """Return ``bits`` if supported (2 to 8, or 32), else raise a :class:`ConfigError` naming ``field``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS:
        raise ConfigError(field, bits, "an integer from 2 to 8, or 32 (full precision)")
    return bits


def check_number(field: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
                 integer: bool = False) -> Any:
    """Return ``value`` if a number in range (an integral float as an int when ``integer``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        lo_txt = f"> {lo}" if lo_open else f">= {lo}"
        raise ConfigError(field, value, f"{kind} {lo_txt} and <= {hi}")
    return int(value) if integer else value


def check_choice(field: str, value: Any, options: tuple[str, ...]) -> Any:
    """Return ``value`` if one of ``options``."""
    if value not in options:
        raise ConfigError(field, value, " | ".join(options))
    return value


@dataclass(frozen=True)
class Method:
    """What a training method is made of: its teacher, whether it quantizes, its distillation loss.

    ``teacher`` is ``None`` (no distillation term), ``"self"`` (SPEQ's stochastic-precision
    pass of the student itself) or ``"fp"`` (the full-precision model). ``kd_loss`` is the
    distillation loss when ``speq.kd_loss`` is unset; ``fixed_kd_loss`` makes it the method's
    whatever ``speq.kd_loss`` says (``kd-kl`` is KD with KL divergence by definition).
    """

    teacher: str | None
    quantized: bool = True
    kd_loss: str = "cosine"
    fixed_kd_loss: bool = False

    def __post_init__(self) -> None:
        if self.teacher not in (None, "self", "fp"):
            raise ConfigError("method teacher", self.teacher, "None, 'self' or 'fp'")
        check_choice("method kd_loss", self.kd_loss, KD_LOSSES)


METHODS: Registry[Method] = Registry("method", "speq.method")
"""Every training method by name (``speq.method``): what the training step and the help texts read."""
METHODS.register("fp", Method(teacher=None, quantized=False),
                 description="no quantization, trained as long as the others")
METHODS.register("qat", Method(teacher=None), description="plain quantization-aware training (no distillation term)")
METHODS.register("kd-kl", Method(teacher="self", kd_loss="kl", fixed_kd_loss=True),
                 description="stochastic-precision teacher, KL divergence")
METHODS.register("speq", Method(teacher="self"), description="stochastic-precision teacher, cosine (SPEQ)")
METHODS.register("kd-fp", Method(teacher="fp"), description="the full-precision model as teacher, cosine")


def _bits_mapping(name: str, value: Any) -> dict:
    """``{layer name or pattern: {w_bits: b, a_bits: b}}``."""
    if not isinstance(value, dict):
        raise ConfigError(name, value, "a mapping {layer name or pattern: {w_bits: B, a_bits: B}}")
    for key, bits in value.items():
        if not isinstance(key, str) or not isinstance(bits, dict) or not bits or set(bits) - {"w_bits", "a_bits"}:
            raise ConfigError(f"{name}.{key}", bits, "a mapping with w_bits and/or a_bits")
        for kind, b in bits.items():
            check_bits(b, f"{name}.{key}.{kind}")
    return value


def _optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else check(v)


def _flag(name: str) -> Callable[[Any], Any]:
    def check(v):
        if not isinstance(v, bool):
            raise ConfigError(name, v, "true or false")
        return v
    return check


def _path(name: str) -> Callable[[Any], Any]:
    def check(v):
        if v is not None and not isinstance(v, str):
            raise ConfigError(name, v, "a path (a string)")
        return v
    return check


class _Section:
    """What every config dataclass shares: per-field checks, checks across fields, ``evolve``.

    ``_checks`` maps a field to the function that checks (and normalises) its value;
    ``_check_relations`` checks what no single field can.
    """

    _checks: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def __post_init__(self) -> None:
        for name, check in self._checks.items():
            object.__setattr__(self, name, check(getattr(self, name)))
        self._check_relations()

    def _check_relations(self) -> None:
        pass

    def evolve(self, changes: dict[str, Any], trusted: bool = False, prefix: str = ""):
        """A copy with ``changes``: only the changed fields are checked (none when ``trusted``:
        the values were checked where they entered), then the checks across fields."""
        known = {f.name for f in dataclasses.fields(self)}
        new = copy.copy(self)
        for key, value in changes.items():
            if key not in known:
                raise ConfigError(prefix + key, value, one_of(key, known))
            check = self._checks.get(key)
            object.__setattr__(new, key, value if trusted or check is None else check(value))
        new._check_relations()
        return new


@dataclass(frozen=True)
class DataConfig(_Section):
    """Which data, how much of it, in which batches."""

    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    train_size: int | None = None
    val_fraction: float = 0.1
    batch_size: int = 64

    _checks: ClassVar = {
        "batch_size": lambda v: check_number("data.batch_size", v, 2, 65536, integer=True),
        "val_fraction": lambda v: check_number("data.val_fraction", v, 0.0, 0.9, lo_open=True),
        "train_size": _optional(lambda v: check_number("data.train_size", v, 2, 10**9, integer=True)),
        "data_dir": _path("data.data_dir"),
    }


@dataclass(frozen=True)
class ModelConfig(_Section):
    """Architecture: a registry name, a width multiplier, builder keywords (depth...).

    The name is looked up where the model is built (:func:`speq_search.models.build_model`)."""

    name: str = "cnn-small"
    width: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    _checks: ClassVar = {
        "width": lambda v: check_number("model.width", v, 0.0, 16.0, lo_open=True),
        "kwargs": lambda v: v if isinstance(v, dict) and all(isinstance(k, str) for k in v) else _bad_kwargs(v),
    }


def _bad_kwargs(value: Any):
    raise ConfigError("model.kwargs", value, "a mapping of builder keywords, e.g. {blocks: [2, 2, 2]}")


@dataclass(frozen=True)
class QuantConfig(_Section):
    """Target precision; ``overrides`` maps layer-name patterns to per-layer bits.

    ``weight_quantizer`` is a name registered in ``speq_search.quant.scaling`` (looked up where
    the model is quantized, not here). ``per_bit_scales``: learned clips keep one value per
    bit-width (2 to 8), for a model whose bits change from step to step."""

    w_bits: int = 2
    a_bits: int = 2
    first_last_bits: int | None = 8
    input_bits: int = 8
    weight_quantizer: str = "lsq"
    per_channel: bool = True
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)
    # Per-layer search: {layer name or module prefix: {w_bits, a_bits}}; the first/last rule still applies.
    group_bits: dict[str, dict[str, int]] = field(default_factory=dict)
    per_bit_scales: bool = False

    _checks: ClassVar = {
        "group_bits": lambda v: _bits_mapping("quant.group_bits", v),
        "overrides": lambda v: _bits_mapping("quant.overrides", v),
        "w_bits": lambda v: check_bits(v, "quant.w_bits"),
        "a_bits": lambda v: check_bits(v, "quant.a_bits"),
        "input_bits": lambda v: check_bits(v, "quant.input_bits"),
        "first_last_bits": _optional(lambda v: check_bits(v, "quant.first_last_bits")),
        "per_bit_scales": _flag("quant.per_bit_scales"),
    }


@dataclass(frozen=True)
class SpeqConfig(_Section):
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

    _checks: ClassVar = {
        "method": lambda v: METHODS.check(v),
        "p_high": lambda v: check_number("speq.p_high", v, 0.0, 1.0),
        "high_bits": lambda v: check_bits(v, "speq.high_bits"),
        "kd_weight": lambda v: check_number("speq.kd_weight", v, 0.0, 1000.0),
        "ce_weight": lambda v: check_number("speq.ce_weight", v, 0.0, 1000.0),
        "temperature": lambda v: check_number("speq.temperature", v, 0.0, 100.0, lo_open=True),
        "kd_loss": _optional(lambda v: check_choice("speq.kd_loss", v, KD_LOSSES)),
        "teacher_bn": lambda v: check_choice("speq.teacher_bn", v, TEACHER_BN_MODES),
        "kd_schedule": lambda v: check_choice("speq.kd_schedule", v, KD_SCHEDULES),
        "eval_draws": lambda v: check_number("speq.eval_draws", v, 0, 64, integer=True),
    }

    def _check_relations(self) -> None:
        if self.ce_weight == 0 and (self.kd_weight == 0 or self.method_info.teacher is None):
            raise ConfigError("speq.ce_weight", 0, "a weight > 0 when there is no distillation term")
        if self.ce_weight == 0 and self.kd_schedule != "constant":
            raise ConfigError("speq.ce_weight", 0, f"a weight > 0 with kd_schedule {self.kd_schedule} (the loss decays to CE alone)")

    @property
    def method_info(self) -> Method:
        """The registered :class:`Method` of ``method``."""
        return METHODS.get(self.method).obj

    @property
    def resolved_kd_loss(self) -> str:
        """The distillation loss the method uses: its own when fixed, else ``kd_loss``, else its default."""
        m = self.method_info
        return m.kd_loss if m.fixed_kd_loss else self.kd_loss or m.kd_loss

    @property
    def teacher(self) -> str | None:
        """``"self"`` (stochastic precision), ``"fp"`` (the full-precision model) or ``None``
        (a method without a teacher, or ``kd_weight`` 0)."""
        return None if self.kd_weight == 0 else self.method_info.teacher

    @property
    def quantized(self) -> bool:
        """Whether the method trains a quantized network (every method but ``fp``)."""
        return self.method_info.quantized


@dataclass(frozen=True)
class OptimConfig(_Section):
    """Optimiser and schedule for the quantized phase (``epochs``) and the FP phase."""

    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    epochs: int = 15
    fp_epochs: int = 30
    fp_lr: float = 0.05

    _checks: ClassVar = {
        "optimizer": lambda v: check_choice("optim.optimizer", v, OPTIMIZERS),
        "lr": lambda v: check_number("optim.lr", v, 0.0, 10.0, lo_open=True),
        "fp_lr": lambda v: check_number("optim.fp_lr", v, 0.0, 10.0, lo_open=True),
        "momentum": lambda v: check_number("optim.momentum", v, 0.0, 1.0),
        "weight_decay": lambda v: check_number("optim.weight_decay", v, 0.0, 1.0),
        "epochs": lambda v: check_number("optim.epochs", v, 1, 100000, integer=True),
        "fp_epochs": lambda v: check_number("optim.fp_epochs", v, 0, 100000, integer=True),
    }


ONESHOT_TEACHERS = ("inplace", "stochastic", "none")  # see OneShotConfig.teacher
ONESHOT_BN = ("recalibrate", "batch")  # see OneShotConfig.bn


@dataclass(frozen=True)
class OneShotConfig(_Section):
    """A one-shot search (a space's ``oneshot:`` section): one supernet trained so that every
    per-layer assignment of the space works, assignments searched by evaluating it, the best fine-tuned.

    - ``supernet_epochs``: epochs of supernet training;
    - ``paths``: random assignments per step besides the highest and the lowest (the sandwich rule);
    - ``teacher``: what the lower paths learn from besides the labels: ``inplace`` (SPEQ's cosine
      distillation from the highest-precision pass of the same weights), ``stochastic`` (SPEQ's
      stochastic teacher of each path: its activations raised to ``speq.high_bits`` with probability
      ``speq.p_high``) or ``none`` (cross-entropy only); ``kd_weight`` weighs it;
    - ``bn``: BatchNorm at an evaluated assignment: ``recalibrate`` (running statistics estimated
      anew on ``calibration_batches`` training batches at that assignment) or ``batch`` (each batch's
      own statistics);
    - ``lr``: the supernet's learning rate (None: ``optim.lr``);
    - ``finetune_top``: how many assignments of the evaluated front are fine-tuned (K), for
      ``finetune_epochs`` epochs at ``finetune_lr`` (None: a tenth of ``optim.lr``);
    - ``supernet``: a trained supernet to search instead of training one (``supernet.pt`` of an
      earlier one-shot run of the same model, data and per-layer choices).
    """

    supernet_epochs: int = 15
    paths: int = 2
    teacher: str = "inplace"
    kd_weight: float = 1.0
    bn: str = "recalibrate"
    calibration_batches: int = 8
    lr: float | None = None
    finetune_top: int = 6
    finetune_epochs: int = 3
    finetune_lr: float | None = None
    supernet: str | None = None

    _checks: ClassVar = {
        "supernet": _path("oneshot.supernet"),
        "supernet_epochs": lambda v: check_number("oneshot.supernet_epochs", v, 1, 100000, integer=True),
        "paths": lambda v: check_number("oneshot.paths", v, 0, 64, integer=True),
        "teacher": lambda v: check_choice("oneshot.teacher", v, ONESHOT_TEACHERS),
        "kd_weight": lambda v: check_number("oneshot.kd_weight", v, 0.0, 1000.0),
        "bn": lambda v: check_choice("oneshot.bn", v, ONESHOT_BN),
        "calibration_batches": lambda v: check_number("oneshot.calibration_batches", v, 1, 100000, integer=True),
        "lr": _optional(lambda v: check_number("oneshot.lr", v, 0.0, 10.0, lo_open=True)),
        "finetune_top": lambda v: check_number("oneshot.finetune_top", v, 1, 100000, integer=True),
        "finetune_epochs": lambda v: check_number("oneshot.finetune_epochs", v, 1, 100000, integer=True),
        "finetune_lr": _optional(lambda v: check_number("oneshot.finetune_lr", v, 0.0, 10.0, lo_open=True)),
    }

    def supernet_lr(self, optim: OptimConfig) -> float:
        """The supernet's learning rate."""
        return self.lr if self.lr is not None else optim.lr

    def finetune_learning_rate(self, optim: OptimConfig) -> float:
        """The fine-tuning learning rate."""
        return self.finetune_lr if self.finetune_lr is not None else optim.lr / 10

    def to_dict(self) -> dict[str, Any]:
        """As written in a space file."""
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "quant": QuantConfig, "speq": SpeqConfig, "optim": OptimConfig}


def _section(name: str, cls: type, value: Any):
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(name, value, f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(cls))}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in value:
        if key not in known:
            raise ConfigError(f"{name}.{key}", value[key], one_of(key, known))
    return cls(**value)


def _compile_mode(value: Any) -> str:
    if isinstance(value, bool):  # YAML 1.1 reads a bare on/off as true/false
        value = "on" if value else "off"
    return check_choice("compile", value, COMPILE_MODES)


@dataclass(frozen=True)
class TrainConfig(_Section):
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
    init_checkpoint: str | None = None  # start the quantized phase from this quantized model (a supernet's weights)
    cost_model: str | None = None  # a latency/energy table: a shipped name (int-accel) or a YAML path
    progress: bool = True
    plugins: tuple[str, ...] = ()  # modules or .py files that register models and data sets (speq_search.plugins)

    _checks: ClassVar = {
        "plugins": check_plugins,
        "seed": lambda v: check_number("seed", v, 0, 2**31 - 1, integer=True),
        "device": lambda v: check_choice("device", v, DEVICES),
        "compile": _compile_mode,
        "fp_checkpoint": _path("fp_checkpoint"),
        "init_checkpoint": _path("init_checkpoint"),
        "fp_cache_dir": _path("fp_cache_dir"),
        "cost_model": _path("cost_model"),
        **{name: functools.partial(_section, name, cls) for name, cls in _SECTIONS.items()},
    }

    @property
    def quantized(self) -> bool:
        """Whether this run trains a quantized network (every method but ``fp``)."""
        return self.speq.quantized

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict (YAML-safe)."""
        d = dataclasses.asdict(self)
        d["plugins"] = list(self.plugins)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], suggestions: dict[str, str] | None = None) -> TrainConfig:
        """Build from a nested dict; unknown keys are errors that name them (a near miss of a
        section's field is suggested as ``suggestions[field]``, default ``section.field``)."""
        if not isinstance(d, dict):
            raise ConfigError("config", type(d).__name__, "a mapping of sections: " + ", ".join(_SECTIONS))
        top = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - top
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(key, d[key], one_of(key, top, suggestions or FIELD_SECTIONS))
        return cls(**d)

    def replace(self, *, trusted: bool = False, **changes: Any) -> TrainConfig:
        """A copy with dotted-key changes, e.g. ``replace(**{"quant.w_bits": 4})``; a key below a
        mapping field (``model.kwargs.blocks``, ``quant.overrides.fc``) sets one entry of it.

        Only the changed fields are checked; ``trusted=True`` checks none (values a search space
        already checked) but still the checks across fields."""
        top: dict[str, Any] = {}
        sections: dict[str, dict[str, Any]] = {}
        for dotted, value in changes.items():
            head, _, rest = dotted.partition(".")
            if not rest:
                top[head] = value
                continue
            if head not in _SECTIONS:
                raise ConfigError(head, dotted, "a section of the config: " + ", ".join(_SECTIONS))
            name, _, below = rest.partition(".")
            section = sections.setdefault(head, {})
            if below:  # an entry of a mapping field
                current = section.get(name, getattr(getattr(self, head), name, None))
                if not isinstance(current, dict):
                    raise ConfigError(f"{head}.{name}", dotted, "a mapping field (kwargs, overrides, group_bits)")
                value = set_dotted(copy.deepcopy(current), below, value, create=True)
            section[name] = value
        for head, section_changes in sections.items():
            top[head] = getattr(self, head).evolve(section_changes, trusted, prefix=head + ".")
        return self.evolve(top, trusted)

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
            d["plugins"] = resolve_relative(d["plugins"], Path(path).resolve().parent)
        return cls.from_dict(d)


def _section_fields() -> dict[str, str]:
    """Every section's field as ``{field: "section.field"}`` (a top-level near miss such as
    ``epoch`` is suggested as ``optim.epochs``)."""
    return {g.name: f"{name}.{g.name}" for name, cls in reversed(_SECTIONS.items()) for g in dataclasses.fields(cls)}


def get_dotted(node: Any, dotted: str) -> Any:
    """``node.a.b`` (attributes or mapping keys) for ``dotted = "a.b"``; ``KeyError`` if absent."""
    for part in dotted.split("."):
        if isinstance(node, dict):
            node = node[part]
        elif dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
            node = getattr(node, part)
        else:
            raise KeyError(dotted)
    return node


def set_dotted(d: dict[str, Any], dotted: str, value: Any, create: bool = False,
               field: str | None = None) -> dict[str, Any]:
    """Set ``d["a"]["b"] = value`` for ``dotted = "a.b"`` and return ``d``; missing mappings on the
    way are made when ``create``, else errors (named ``field``, default the key)."""
    parts = dotted.split(".")
    node = d
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None and create:
            node[part] = {}
        if not isinstance(node.get(part), dict):
            raise ConfigError(field or ".".join(parts[: i + 1]), value,
                              f"a key below a mapping ({'.'.join(parts[: i + 1])} is not one)")
        node = node[part]
    node[parts[-1]] = value
    return d


FIELD_SECTIONS = _section_fields()
