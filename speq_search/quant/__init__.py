"""Fake quantization: primitives, quantizer modules, quantized layers, model conversion."""

from speq_search.quant.convert import (
    GRANULARITIES,
    act_quantizers,
    calibrating,
    in_group,
    layer_bits,
    layer_groups,
    quantizable_layers,
    quantize_model,
)
from speq_search.quant.modules import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer
from speq_search.quant.primitives import (
    FULL_PRECISION,
    SUPPORTED_BITS,
    fake_quantize_signed,
    fake_quantize_unsigned,
    fake_quantize_weight,
    round_ste,
)

__all__ = [
    "FULL_PRECISION",
    "GRANULARITIES",
    "SUPPORTED_BITS",
    "ActQuantizer",
    "QuantConv2d",
    "QuantLinear",
    "WeightQuantizer",
    "act_quantizers",
    "calibrating",
    "fake_quantize_signed",
    "fake_quantize_unsigned",
    "fake_quantize_weight",
    "in_group",
    "layer_bits",
    "layer_groups",
    "quantizable_layers",
    "quantize_model",
    "round_ste",
]
