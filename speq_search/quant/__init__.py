"""Fake quantization: grids, weight scalings, quantizer modules, quantized layers, model conversion.

Names load on first use (PEP 562), so that :mod:`speq_search.quant.scaling` (the registry of
weight quantizers, plain Python) can be read without importing torch.
"""

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "FULL_PRECISION": "speq_search.quant.primitives",
    "SUPPORTED_BITS": "speq_search.quant.primitives",
    "PER_BIT": "speq_search.quant.primitives",
    "fake_quantize_signed": "speq_search.quant.primitives",
    "fake_quantize_unsigned": "speq_search.quant.primitives",
    "fake_quantize_weight": "speq_search.quant.primitives",
    "round_ste": "speq_search.quant.grids",
    "Grid": "speq_search.quant.grids",
    "Quantized": "speq_search.quant.grids",
    "MIDPOINT": "speq_search.quant.grids",
    "SIGNED": "speq_search.quant.grids",
    "UNSIGNED": "speq_search.quant.grids",
    "fake_quantize": "speq_search.quant.grids",
    "quantize": "speq_search.quant.grids",
    "WEIGHT_QUANTIZERS": "speq_search.quant.scaling",
    "WeightScaling": "speq_search.quant.scaling",
    "register_weight_quantizer": "speq_search.quant.scaling",
    "ActQuantizer": "speq_search.quant.modules",
    "QuantConv2d": "speq_search.quant.modules",
    "QuantLinear": "speq_search.quant.modules",
    "WeightCodes": "speq_search.quant.modules",
    "WeightQuantizer": "speq_search.quant.modules",
    "GRANULARITIES": "speq_search.quant.convert",
    "act_quantizers": "speq_search.quant.convert",
    "calibrating": "speq_search.quant.convert",
    "in_group": "speq_search.quant.convert",
    "layer_bits": "speq_search.quant.convert",
    "layer_bits_of": "speq_search.quant.convert",
    "layer_groups": "speq_search.quant.convert",
    "quantizable_layers": "speq_search.quant.convert",
    "quantize_model": "speq_search.quant.convert",
    "set_layer_bits": "speq_search.quant.convert",
}

if TYPE_CHECKING:  # what static tools and IDEs see
    from speq_search.quant.convert import (
        GRANULARITIES,
        act_quantizers,
        calibrating,
        in_group,
        layer_bits,
        layer_bits_of,
        layer_groups,
        quantizable_layers,
        quantize_model,
        set_layer_bits,
    )
    from speq_search.quant.grids import MIDPOINT, SIGNED, UNSIGNED, Grid, Quantized, fake_quantize, quantize, round_ste
    from speq_search.quant.modules import ActQuantizer, QuantConv2d, QuantLinear, WeightCodes, WeightQuantizer
    from speq_search.quant.primitives import (
        FULL_PRECISION,
        PER_BIT,
        SUPPORTED_BITS,
        fake_quantize_signed,
        fake_quantize_unsigned,
        fake_quantize_weight,
    )
    from speq_search.quant.scaling import WEIGHT_QUANTIZERS, WeightScaling, register_weight_quantizer


def __getattr__(name: str):
    try:
        module = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'speq_search.quant' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "ActQuantizer",
    "FULL_PRECISION",
    "GRANULARITIES",
    "Grid",
    "MIDPOINT",
    "PER_BIT",
    "QuantConv2d",
    "QuantLinear",
    "Quantized",
    "SIGNED",
    "SUPPORTED_BITS",
    "UNSIGNED",
    "WEIGHT_QUANTIZERS",
    "WeightCodes",
    "WeightQuantizer",
    "WeightScaling",
    "act_quantizers",
    "calibrating",
    "fake_quantize",
    "fake_quantize_signed",
    "fake_quantize_unsigned",
    "fake_quantize_weight",
    "in_group",
    "layer_bits",
    "layer_bits_of",
    "layer_groups",
    "quantizable_layers",
    "quantize",
    "quantize_model",
    "register_weight_quantizer",
    "round_ste",
    "set_layer_bits",
]
