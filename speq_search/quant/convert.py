"""Turn a float model into a quantized one: swap layers, assign bits, calibrate clips."""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Mapping

import torch
from torch import nn

from speq_search.errors import ConfigError
from speq_search.quant.modules import QUANT_LAYERS, ActQuantizer, QuantConv2d, QuantLinear
from speq_search.quant.primitives import check_bits

_OVERRIDE_KEYS = ("w_bits", "a_bits")


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every Conv2d and Linear, in registration order.

    Registration order defines "first" and "last" layer; every model in the registry
    registers its stem first and its classifier last.
    """
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _check_overrides(overrides: Mapping[str, Mapping[str, int]] | None, names: list[str]) -> dict:
    out: dict[str, dict[str, int]] = {}
    for pattern, bits in (overrides or {}).items():
        if not isinstance(bits, Mapping) or not bits or set(bits) - set(_OVERRIDE_KEYS):
            raise ConfigError(f"overrides.{pattern}", bits, "a mapping with w_bits and/or a_bits")
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError("overrides", pattern, "a name pattern matching a layer of the model: " + ", ".join(names))
        out[pattern] = {k: check_bits(v, f"overrides.{pattern}.{k}") for k, v in bits.items()}
    return out


def quantize_model(
    model: nn.Module,
    w_bits: int = 4,
    a_bits: int = 4,
    overrides: Mapping[str, Mapping[str, int]] | None = None,
    first_last_bits: int | None = 8,
    group_bits: Mapping[str, Mapping[str, int]] | None = None,
    input_bits: int = 8,
    weight_quantizer: str = "lsq",
    per_channel: bool = True,
) -> nn.Module:
    """Replace every ``nn.Conv2d``/``nn.Linear`` of ``model`` by its quantized twin, in place.

    Args:
        w_bits, a_bits: target bits for weights and for each layer's input activation.
        overrides: ``{name pattern: {"w_bits": b, "a_bits": b}}``, matched with
            :func:`fnmatch.fnmatchcase` against module names; later patterns win and
            every pattern wins over the first/last rule. This is how mixed precision is set.
        first_last_bits: weight bits of the first and the last layer (``None``: no rule).
        group_bits: ``{layer name or module prefix: {"w_bits": b, "a_bits": b}}``, the per-layer
            search's bits: applied to a layer whose name equals the key or starts with ``key.``,
            before the first/last and input rules (which win), and ignored where no layer matches
            (an architecture search may drop a block). Longer keys win over shorter ones.
        input_bits: bits of the first layer's input (the image), quantized signed; 32 leaves
            it unquantized.
        weight_quantizer: ``"lsq"`` (learned clip) or ``"sawb"`` (statistics-based clip).
        per_channel: one weight clip per output channel (else one per layer).

    Layers listed in ``model.signed_input_layers`` (and the first layer) get a signed
    activation quantizer. Returns ``model``.
    """
    check_bits(w_bits, "w_bits")
    check_bits(a_bits, "a_bits")
    check_bits(input_bits, "input_bits")
    if first_last_bits is not None:
        check_bits(first_last_bits, "first_last_bits")
    layers = [(n, m) for n, m in quantizable_layers(model) if not isinstance(m, QUANT_LAYERS)]
    if not layers:
        raise ConfigError("model", type(model).__name__, "a model with at least one nn.Conv2d or nn.Linear")
    names = [n for n, _ in layers]
    checked = _check_overrides(overrides, names)
    signed = set(getattr(model, "signed_input_layers", ())) | {names[0]}
    for i, (name, layer) in enumerate(layers):
        bits = {"w_bits": w_bits, "a_bits": a_bits}
        for group in sorted(group_bits or {}, key=len):
            if name == group or name.startswith(group + "."):
                bits.update(group_bits[group])
        if i == 0:
            bits["a_bits"] = input_bits
        if first_last_bits is not None and i in (0, len(layers) - 1):
            bits["w_bits"] = first_last_bits
        for pattern, values in checked.items():
            if fnmatch.fnmatchcase(name, pattern):
                bits.update(values)
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        qlayer = cls.from_float(
            layer, bits["w_bits"], bits["a_bits"], signed_input=name in signed,
            weight_quantizer=weight_quantizer, per_channel=per_channel,
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
