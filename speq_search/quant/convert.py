"""Turn a float model into a quantized one: find and group its layers, swap them, assign bits, calibrate clips."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from speq_search.config import QuantConfig
from speq_search.errors import ConfigError
from speq_search.quant.modules import QUANT_LAYERS, ActQuantizer, QuantConv2d, QuantLinear
from speq_search.quant.scaling import check_weight_quantizer


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every Conv2d and Linear, in registration order.

    Registration order defines "first" and "last" layer; every model in the registry
    registers its stem first and its classifier last.
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _check_overrides(overrides: Mapping[str, Mapping[str, int]], names: list[str]) -> None:
    """Each pattern matches a layer of this model (the bits were checked with the config)."""
    for pattern in overrides:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError("overrides", pattern, "a name pattern matching a layer of the model: " + ", ".join(names))


def _check_groups(group_bits: Mapping[str, Mapping[str, int]], names: list[str], field: str) -> None:
    """Each group names a layer or a module prefix of this model: a misspelt group would otherwise
    train with no error and no effect."""
    for group in group_bits:
        if not any(in_group(n, group) for n in names):
            prefixes = sorted({".".join(n.split(".")[:k]) for n in names for k in range(1, n.count(".") + 1)})
            raise ConfigError(field, group, "a layer name or module prefix of the model: layers " + ", ".join(names)
                              + (f"; prefixes {', '.join(prefixes)}" if prefixes else ""))


def in_group(name: str, group: str) -> bool:
    """Layer ``name`` belongs to ``group`` (a layer name or a module prefix: ``layer1.0``)."""
    return name == group or name.startswith(group + ".")


GRANULARITIES = ("layer", "block", "stage")


def layer_groups(model: nn.Module, granularity: str, first_last_bits: int | None = 8) -> dict[str, dict[str, bool]]:
    """The groups of a per-layer search: ``{group: {"w_bits": searchable, "a_bits": searchable}}``.

    A group is a layer's name (``layer``), its first two name parts (``block``: ``layer1.0``,
    ``features.4``) or its first part (``stage``: ``layer1``, ``features``): the keys
    ``group_bits`` takes (see :func:`in_group`). Its weight bits are searchable unless every
    layer in it is the first or last one under ``first_last_bits``; its activation bits unless
    it holds only the first layer (whose input is the image, at ``input_bits``). Order: the model's.
    """
    names = [n for n, _ in quantizable_layers(model)]
    depth = {"layer": None, "block": 2, "stage": 1}[granularity]
    groups: dict[str, dict[str, bool]] = {}
    for i, name in enumerate(names):
        group = ".".join(name.split(".")[:depth]) if depth else name
        g = groups.setdefault(group, {"w_bits": False, "a_bits": False})
        fixed_w = first_last_bits is not None and i in (0, len(names) - 1)
        g["w_bits"] |= not fixed_w
        g["a_bits"] |= i != 0
    return groups


def layer_bits_of(names: list[str], quant: QuantConfig) -> dict[str, dict[str, int]]:
    """``{layer name: {"w_bits", "a_bits"}}`` that ``quant`` gives the layers ``names`` (a model's
    quantizable layers in registration order: :func:`quantizable_layers`).

    The one per-layer rule, in order (later wins): ``w_bits``/``a_bits``; ``group_bits`` (shorter
    keys first); the first layer's input at ``input_bits``; the first and last layers' weights at
    ``first_last_bits``; ``overrides``. :func:`quantize_model` builds with it and
    :func:`set_layer_bits` switches a quantized model to it in place (the one-shot supernet).
    """
    groups = sorted(quant.group_bits, key=len)
    out = {}
    for i, name in enumerate(names):
        bits = {"w_bits": quant.w_bits, "a_bits": quant.a_bits}
        for group in groups:
            if in_group(name, group):
                bits.update(quant.group_bits[group])
        if i == 0:
            bits["a_bits"] = quant.input_bits
        if quant.first_last_bits is not None and i in (0, len(names) - 1):
            bits["w_bits"] = quant.first_last_bits
        for pattern, values in quant.overrides.items():
            if fnmatch.fnmatchcase(name, pattern):
                bits.update(values)
        out[name] = bits
    return out


def set_layer_bits(model: nn.Module, bits: Mapping[str, Mapping[str, int]]) -> None:
    """Set every quantized layer's precision in place: ``bits[name]`` (``{"w_bits", "a_bits"}``,
    values already checked, e.g. from :func:`layer_bits_of`) for each layer of ``model``.

    No module is rebuilt and no weight copied: the quantizers' precision is data, so a compiled
    forward serves every assignment. A quantized layer missing from ``bits`` is a ``KeyError``.
    """
    for name, m in model.named_modules():
        if isinstance(m, QUANT_LAYERS):
            b = bits[name]
            m.weight_quant.set_checked_bits(b["w_bits"])
            m.act_quant.set_checked_bits(b["a_bits"])


def quantize_model(model: nn.Module, quant: QuantConfig | None = None, **settings) -> nn.Module:
    """Replace every ``nn.Conv2d``/``nn.Linear`` of ``model`` by its quantized twin, in place.

    ``quant`` (a :class:`~speq_search.config.QuantConfig`, checked when it was made) says how;
    or give its fields as keywords, checked here (``w_bits`` and ``a_bits`` default to 4):

    - ``w_bits``, ``a_bits``: target bits for weights and for each layer's input activation.
    - ``overrides``: ``{name pattern: {"w_bits": b, "a_bits": b}}``, matched with
      :func:`fnmatch.fnmatchcase` against module names; later patterns win and every pattern
      wins over the first/last rule. This is how mixed precision is set.
    - ``first_last_bits``: weight bits of the first and the last layer (``None``: no rule).
    - ``group_bits``: ``{layer name or module prefix: {"w_bits": b, "a_bits": b}}``, the per-layer
      search's bits: applied to a layer in the group (:func:`in_group`), before the first/last
      and input rules (which win); a group that matches no layer is an error naming the layers
      (a search that also varies the architecture leaves out, per trial, the groups its model
      lacks: :func:`speq_search.space.config_changes`). Longer keys win over shorter ones.
    - ``input_bits``: bits of the first layer's input (the image), quantized signed; 32 leaves
      it unquantized.
    - ``weight_quantizer``: a name registered in
      :data:`~speq_search.quant.scaling.WEIGHT_QUANTIZERS`: ``"lsq"`` (learned clip) or
      ``"sawb"`` (statistics-based clip); looked up here, where the quantizers are built.
    - ``per_channel``: one weight clip per output channel (else one per layer).
    - ``per_bit_scales``: one learned clip per bit-width (2 to 8) in every learned-clip quantizer,
      the current one picked as data (for a model whose bits change at every step).

    Layers listed in ``model.signed_input_layers`` (and the first layer) get a signed
    activation quantizer. Returns ``model``.
    """
    field = "quant.weight_quantizer"
    if quant is None:
        try:
            quant = QuantConfig(**{"w_bits": 4, "a_bits": 4, **settings})
        except ConfigError as err:  # named as the caller named it: the argument, not the config field
            raise ConfigError(err.field.removeprefix("quant."), err.value, err.accepted) from None
        except TypeError as err:
            raise ConfigError("quantize_model", sorted(settings), f"the fields of QuantConfig ({err})") from None
        field = "weight_quantizer"
    elif settings:
        raise TypeError("quantize_model takes a QuantConfig or its fields as keywords, not both")
    check_weight_quantizer(quant.weight_quantizer, field)  # the registry, where the quantizers are built
    layers = [(n, m) for n, m in quantizable_layers(model) if not isinstance(m, QUANT_LAYERS)]
    if not layers:
        raise ConfigError("model", type(model).__name__, "a model with at least one nn.Conv2d or nn.Linear")
    names = [n for n, _ in layers]
    _check_overrides(quant.overrides, names)
    _check_groups(quant.group_bits, names, field.replace("weight_quantizer", "group_bits"))
    signed = set(getattr(model, "signed_input_layers", ())) | {names[0]}
    for (name, layer), bits in zip(layers, layer_bits_of(names, quant).values()):
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        qlayer = cls.from_float(
            layer, bits["w_bits"], bits["a_bits"], signed_input=name in signed,
            weight_quantizer=quant.weight_quantizer, per_channel=quant.per_channel,
            per_bit_scales=quant.per_bit_scales,
        )
        set_submodule(model, name, qlayer)
    return model


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in ``model`` at the dotted ``name`` (replacing what is there)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def act_quantizers(model: nn.Module) -> Iterator[ActQuantizer]:
    """Every activation quantizer of ``model``, in registration order."""
    return (m for m in model.modules() if isinstance(m, ActQuantizer))


def layer_bits(model: nn.Module) -> dict[str, dict[str, int]]:
    """``{layer name: {"w_bits", "a_bits"}}`` of every quantized layer."""
    return {
        n: {"w_bits": m.weight_quant.bits, "a_bits": m.act_quant.bits}
        for n, m in model.named_modules()
        if isinstance(m, QUANT_LAYERS)
    }


@contextlib.contextmanager
def calibrating(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, each forward sets every activation clip to its MSE-optimal value.

    Run one or a few batches of training data through the model inside it; the layers are
    calibrated in order, each on the quantized output of those before it.
    """
    quantizers = list(act_quantizers(model))
    for q in quantizers:
        q.calibrating = True
    try:
        with torch.no_grad():
            yield model
    finally:
        for q in quantizers:
            q.calibrating = False
