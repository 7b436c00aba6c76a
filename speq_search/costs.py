"""Costs of a (quantized) model: average bits, model size and BitOps.

Measured with forward hooks on one example input, so any architecture and any per-layer bit
assignment is counted the same way. A plain ``nn.Conv2d``/``nn.Linear`` counts as 32 bits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from speq_search.quant.modules import QUANT_LAYERS
from speq_search.quant.primitives import FULL_PRECISION


@dataclass(frozen=True)
class LayerCost:
    """One conv or linear layer, per example."""

    name: str
    kind: str  # "conv" | "linear"
    w_bits: int
    a_bits: int
    params: int  # weights only
    activations: int  # elements of the layer's (quantized) input
    macs: int
    scales: int  # stored weight scales (one per output channel, or one) plus the activation clip


@dataclass(frozen=True)
class Costs:
    """What every run reports besides accuracy (see README "Costs")."""

    avg_w_bits: float  # weighted by weight count
    avg_a_bits: float  # weighted by activation count
    avg_bits: float  # mean of the two: one axis for "how many bits"
    size_bytes: int  # weights at their bits + scales + other parameters at 32 bits
    bitops: int  # sum over layers of MACs * w_bits * a_bits
    macs: int
    params: int  # every parameter of the model, learned clips included

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def layer_costs(model: nn.Module, example: torch.Tensor) -> list[LayerCost]:
    """Per-layer shapes and bits, from one forward pass of ``example`` (batch of 1 used)."""
    records: list[LayerCost] = []
    hooks = []

    def hook(name: str):
        def fn(module: nn.Module, inputs, output):
            x = inputs[0]
            per_example_out = output[0].numel()
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1] * (module.in_channels // module.groups)
                macs, kind = per_example_out * k, "conv"
            else:
                macs, kind = per_example_out * module.in_features, "linear"
            quantized = isinstance(module, QUANT_LAYERS)
            w_bits = module.weight_quant.bits if quantized else FULL_PRECISION
            a_bits = module.act_quant.bits if quantized else FULL_PRECISION
            scales = 0
            if quantized:
                wq = module.weight_quant
                scales = (module.out_channels if isinstance(module, nn.Conv2d) else module.out_features) if (
                    wq.per_channel and w_bits < FULL_PRECISION) else int(w_bits < FULL_PRECISION)
                scales += 1  # the activation clip
            records.append(LayerCost(name, kind, w_bits, a_bits, module.weight.numel(), x[0].numel(), macs, scales))

        return fn

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return records


def model_costs(model: nn.Module, example: torch.Tensor) -> Costs:
    """Aggregate :func:`layer_costs` into the costs a run reports."""
    layers = layer_costs(model, example)
    weights = sum(lc.params for lc in layers)
    acts = sum(lc.activations for lc in layers)
    avg_w = sum(lc.params * lc.w_bits for lc in layers) / max(weights, 1)
    avg_a = sum(lc.activations * lc.a_bits for lc in layers) / max(acts, 1)
    layer_weight_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    clip_ids = {id(p) for n, p in model.named_parameters() if n.endswith(".clip")}
    other = sum(p.numel() for p in model.parameters() if id(p) not in layer_weight_ids and id(p) not in clip_ids)
    weight_bits = sum(lc.params * lc.w_bits for lc in layers)
    size = (weight_bits + 7) // 8 + 4 * sum(lc.scales for lc in layers) + 4 * other
    return Costs(
        avg_w_bits=round(avg_w, 4),
        avg_a_bits=round(avg_a, 4),
        avg_bits=round((avg_w + avg_a) / 2, 4),
        size_bytes=int(size),
        bitops=int(sum(lc.macs * lc.w_bits * lc.a_bits for lc in layers)),
        macs=int(sum(lc.macs for lc in layers)),
        params=int(sum(p.numel() for p in model.parameters())),
    )
