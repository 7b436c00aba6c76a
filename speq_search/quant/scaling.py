"""Weight quantizers by name: the scaling part of a weight quantizer (how it finds its clip).

A :class:`~speq_search.quant.modules.WeightQuantizer` is a scaling and the weight grid
(:data:`~speq_search.quant.grids.MIDPOINT`), as Brevitas assembles a quantizer from a scaling
implementation and an integer grid. ``quant.weight_quantizer`` names the scaling, looked up
in :data:`WEIGHT_QUANTIZERS` where the model is quantized (and where a space is parsed).

A new weight quantizer is one file holding a :class:`WeightScaling` subclass, plus its
registration: one line below for the project's own (``"module:Class"``, so that listing the
names loads no torch: help texts and space parsing read this module), or
``register_weight_quantizer(name, description)`` on the class in a plugin.

This module is plain Python (no torch): a scaling's methods receive tensors, but the
registry and the base class do not need them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from speq_search.registry import Registry

if TYPE_CHECKING:
    import torch

    from speq_search.quant.modules import WeightQuantizer


class WeightScaling:
    """How a weight quantizer finds its clip, at the quantizer's current bits.

    One instance per quantizer. Its tensors are registered on the quantizer (``q.clip``, a
    buffer), so that their state-dict names are the quantizer's own (``weight_quant.clip``)
    whatever the scaling. The quantizer passes itself to every method: ``q.bits``,
    ``q.reduce_dims`` (the dimensions one clip spans; ``None``: the whole tensor),
    ``q.per_channel``, ``q.per_bit_scales`` and ``q.bit_index`` (a 1-element index tensor,
    with per-bit scales) are what a scaling reads.
    """

    def __init__(self, q: WeightQuantizer, weight: torch.Tensor, bits: int) -> None:
        """Register the scaling's parameters and buffers on ``q``, from the float ``weight``."""

    def set_bits(self, q: WeightQuantizer, bits: int) -> None:
        """Keep buffers that depend on the precision in step with ``bits`` (called under no_grad)."""

    def clip(self, q: WeightQuantizer, w: torch.Tensor) -> torch.Tensor:
        """The clip at the current precision, broadcasting against ``w`` (one value, or one per
        output channel). Selected as data, not by a Python branch on the bits: a compiled
        forward serves every precision."""
        raise NotImplementedError

    def grad_numel(self, q: WeightQuantizer, w: torch.Tensor) -> int:
        """LSQ's ``N`` for a learned clip (its gradient is scaled by ``1 / sqrt(N * Qp)``); 0: none."""
        return 0


WEIGHT_QUANTIZERS: Registry[Any] = Registry("weight quantizer", "quant.weight_quantizer")
"""Every weight quantizer (``quant.weight_quantizer``) by name: a WeightScaling subclass, or its
``"module:Class"`` path (loaded on first use)."""

WEIGHT_QUANTIZERS.register("lsq", "speq_search.quant.lsq:LSQ",
                           description="learned clip (LSQ), started at the MSE-optimal clip")
WEIGHT_QUANTIZERS.register("sawb", "speq_search.quant.sawb:SAWB",
                           description="clip from the weights' statistics (SAWB), the largest magnitude from 6 bits")


def register_weight_quantizer(name: str, description: str = ""):
    """Register a :class:`WeightScaling` subclass as weight quantizer ``name`` (a decorator);
    ``description`` defaults to the first line of its docstring."""
    return WEIGHT_QUANTIZERS.register(name, description=description)


def check_weight_quantizer(name: Any, field: str | None = None) -> str:
    """``name`` if a weight quantizer is registered under it, else an error naming
    ``quant.weight_quantizer`` (or ``field``) and listing the known ones."""
    return WEIGHT_QUANTIZERS.check(name, field)


def weight_scaling(name: Any, field: str | None = None) -> type[WeightScaling]:
    """The :class:`WeightScaling` class registered as ``name`` (an unknown name: the error of
    :func:`check_weight_quantizer`)."""
    obj = WEIGHT_QUANTIZERS.get(name, field).obj
    if isinstance(obj, str):
        module, _, attr = obj.partition(":")
        obj = getattr(importlib.import_module(module), attr)
    return obj
