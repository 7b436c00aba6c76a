"""The names a space file, ``--set`` and the ``train`` command use for config fields.

A searched parameter is a short name (``w_bits``, ``p_high``...), a dotted
:class:`~speq_search.config.TrainConfig` field (``optim.lr``), ``bits`` (weights and
activations at once), one group of a per-layer search (``w_bits@layer1.0``, a
:class:`GroupBits`), or an architecture dimension that the model declared when it was
registered (``depth`` for resnet20: see :func:`speq_search.models.register_model`).
:func:`assignments` says which fields a name sets; the ``train`` command's flags are the
:data:`NAMES` (``--w-bits`` for ``w_bits``).

Architecture dimensions are looked up in the model registry (which imports torch) when a value
is assigned or a dimension's fields are asked for; config names never are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from speq_search.config import METHODS, TrainConfig
from speq_search.errors import ConfigError
from speq_search.quant.scaling import WEIGHT_QUANTIZERS

if TYPE_CHECKING:
    from speq_search.models import Dim


@dataclass(frozen=True)
class Name:
    """A short name for a config field: in spaces (``params: {w_bits: ...}``, ``--set train.w_bits=4``)
    and as a ``train`` flag (``--w-bits 4``)."""

    field: str
    type: type
    help: str


NAMES: dict[str, Name] = {
    "dataset": Name("data.dataset", str, "data set name (see `speq-search datasets`)"),
    "data_dir": Name("data.data_dir", str, "folder holding the data set files (torchvision layout)"),
    "train_size": Name("data.train_size", int, "train on a stratified, seeded subset of N examples"),
    "batch_size": Name("data.batch_size", int, "training batch size"),
    "model": Name("model.name", str, "model name (see `speq-search models`)"),
    "width": Name("model.width", float, "width multiplier of the model"),
    "method": Name("speq.method", str, METHODS.choices()),
    "w_bits": Name("quant.w_bits", int, "weight bits: 2-8, or 32"),
    "a_bits": Name("quant.a_bits", int, "activation bits: 2-8, or 32"),
    "first_last_bits": Name("quant.first_last_bits", int, "weight bits of the first and last layer"),
    "weight_quantizer": Name("quant.weight_quantizer", str, " | ".join(f"{n} ({d})" for n, d in
                                                                       WEIGHT_QUANTIZERS.describe().items())),
    "p_high": Name("speq.p_high", float, "probability that a teacher layer takes --high-bits"),
    "high_bits": Name("speq.high_bits", int, "the teacher's high activation precision (32: no rounding)"),
    "kd_weight": Name("speq.kd_weight", float, "weight of the distillation loss (0: plain QAT)"),
    "ce_weight": Name("speq.ce_weight", float, "weight of the cross-entropy loss"),
    "temperature": Name("speq.temperature", float, "softmax temperature of the distillation loss"),
    "kd_loss": Name("speq.kd_loss", str, "cosine | cosine-logits | kl (default: the method's)"),
    "teacher_bn": Name("speq.teacher_bn", str, "BatchNorm in the teacher pass: batch | running statistics"),
    "kd_schedule": Name("speq.kd_schedule", str, "the distillation weight over training: constant | linear-decay | "
                        "cosine-decay"),
    "eval_draws": Name("speq.eval_draws", int, "seeded teacher draws per epoch for the teacher diagnostic (0: skip)"),
    "epochs": Name("optim.epochs", int, "epochs of quantized training"),
    "fp_epochs": Name("optim.fp_epochs", int, "epochs of the full-precision model (cached)"),
    "optimizer": Name("optim.optimizer", str, "sgd | adam"),
    "lr": Name("optim.lr", float, "learning rate of quantized training (cosine schedule)"),
    "fp_lr": Name("optim.fp_lr", float, "learning rate of the full-precision phase"),
    "seed": Name("seed", int, "seed of everything (the data split is fixed)"),
    "device": Name("device", str, "auto | cpu | cuda"),
    "compile": Name("compile", str, "torch.compile: auto (by device and run length) | on (whole model) | "
                    "kernels (fake-quant kernels only) | off"),
    "fp_checkpoint": Name("fp_checkpoint", str, "start from this full-precision checkpoint"),
    "fp_cache_dir": Name("fp_cache_dir", str, "where trained full-precision models are cached"),
    "cost_model": Name("cost_model", str, "latency/energy table: int-accel or a YAML file (reports latency_ms or "
                       "energy)"),
}
ALIASES = {name: n.field for name, n in NAMES.items() if n.field != name}  # short name -> dotted field
SHORT_NAME = {field: name for name, field in ALIASES.items()}  # dotted field -> short name
_TOP_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))
MODEL_KWARGS = "model.kwargs"  # what an architecture dimension sets one entry of


def flag_of(name: str) -> str:
    """The ``train`` command's flag of a short name: ``--w-bits`` for ``w_bits``."""
    return "--" + name.replace("_", "-")


class GroupBits(NamedTuple):
    """One group's bits in a per-layer search: an entry of ``quant.group_bits``."""

    group: str  # a layer name or module prefix (layer1.0): see speq_search.quant.layer_groups
    kind: str  # "w_bits" | "a_bits"

    @property
    def param(self) -> str:
        """Its parameter name (a trials.csv column): ``w_bits@layer1.0``."""
        return f"{self.kind}@{self.group}"


def is_config_name(name: str) -> bool:
    """``name`` sets config fields by itself: ``bits``, a group's bits, a short name or a dotted or
    top-level TrainConfig field; any other name is an architecture dimension of the model."""
    return name == "bits" or "@" in name or "." in name or name in ALIASES or name in _TOP_FIELDS


def model_dim(model: str, name: str, value: Any = None) -> Dim:
    """The :class:`~speq_search.models.Dim` that ``model`` declares as ``name``; one it does not
    declare is an error naming the ones it does."""
    from speq_search.models import model_dims

    dims = model_dims(model)
    if name not in dims:
        declared = ", ".join(sorted(dims)) or "none"
        raise ConfigError(name, value, f"an architecture dimension model {model} declares ({declared}); {name} is not "
                          "one")
    return dims[name]


def assignments(name: str, value: Any, model: str | None = None) -> dict[str | GroupBits, Any]:
    """What setting parameter ``name`` to ``value`` means: dotted TrainConfig fields and values,
    or one :class:`GroupBits` of a per-layer search. An architecture dimension is resolved
    against ``model`` (a registry name), which it then needs."""
    if name == "bits":
        return {"quant.w_bits": value, "quant.a_bits": value}
    if "@" in name:  # w_bits@layer1.0: one group of the per-layer search
        kind, _, group = name.partition("@")
        return {GroupBits(group, kind): value}
    if is_config_name(name):
        return {ALIASES.get(name, name): value}
    if model is None:
        raise ConfigError(name, value, "a config field or short name (an architecture dimension needs its model)")
    dim = model_dim(model, name, value)
    return {f"{MODEL_KWARGS}.{dim.kwarg}": dim.builder_value(value)}


def fields_of(name: str, model: str | None = None) -> tuple[str, ...]:
    """The dotted TrainConfig fields a parameter name sets (``quant.group_bits`` for a group's bits).

    An architecture dimension sets ``model.kwargs.<keyword>`` of ``model``; without a model,
    the keyword of every registered model that declares it (looked up in the model registry,
    which imports torch), and a name that is neither a config name nor a dimension (a column of
    a foreign experiment) is returned as it is."""
    if is_config_name(name) or model is not None:
        return tuple("quant.group_bits" if isinstance(k, GroupBits) else k for k in assignments(name, 1, model))
    from speq_search.models import declared_dims

    models = declared_dims().get(name, ())
    return tuple(dict.fromkeys(f"{MODEL_KWARGS}.{model_dim(m, name).kwarg}" for m in models)) or (name,)


def field_of(name: str, model: str | None = None) -> str:
    """The (first) dotted TrainConfig field a parameter name stands for."""
    return fields_of(name, model)[0]


def config_changes(train: TrainConfig, values: dict[str, Any]) -> dict[str, Any]:
    """The dotted changes (for :meth:`TrainConfig.replace`) of setting parameters to ``values``;
    per-layer values are gathered into one ``quant.group_bits``; architecture dimensions are
    the model's (``values``' own ``model`` when they search it)."""
    changes: dict[str, Any] = {}
    group_bits = {group: dict(bits) for group, bits in train.quant.group_bits.items()}
    model = values.get("model", values.get("model.name", train.model.name))
    for name, value in values.items():
        for target, v in assignments(name, value, model).items():
            if isinstance(target, GroupBits):
                group_bits.setdefault(target.group, {})[target.kind] = v
            else:
                changes[target] = v
    if group_bits != train.quant.group_bits:
        if any(k.startswith("model.") for k in changes):  # another architecture: only the groups it has
            group_bits = _groups_of_model(train.replace(trusted=True, **changes), group_bits)
        changes["quant.group_bits"] = group_bits
    return changes


def _groups_of_model(cfg: TrainConfig, group_bits: dict) -> dict:
    """The entries of ``group_bits`` that name a layer or module prefix of ``cfg``'s model: a
    per-layer search's groups come from the space's model, and a shallower trial lacks some."""
    from speq_search.models import build_model
    from speq_search.quant import in_group, quantizable_layers

    names = [n for n, _ in quantizable_layers(build_model(cfg.model))]
    return {g: bits for g, bits in group_bits.items() if any(in_group(n, g) for n in names)}
