"""Quantizer modules and the quantized layers that hold them.

Every quantizer keeps its precision in a plain ``bits`` attribute that can be changed between
(or during) forward passes; the learned clip does not depend on it, so switching precision
only changes the number of levels. This is what makes SPEQ's stochastic teacher cheap.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.quant.primitives import (
    FULL_PRECISION,
    check_bits,
    fake_quantize_signed,
    fake_quantize_unsigned,
    fake_quantize_weight,
    grad_scale,
    mse_optimal_clip,
    sawb_clip,
)

WEIGHT_QUANTIZERS = ("lsq", "sawb")

# Subsample for clip calibration: enough for a stable percentile-like estimate, cheap on CPU.
_CALIBRATION_SAMPLES = 65536


class ActQuantizer(nn.Module):
    """Activation quantizer with a learned clip (PACT), applied to a layer's input.

    ``signed=False`` (the default, inputs after a ReLU) clips to ``[0, clip]``; ``signed=True``
    clips to ``[-clip, clip]`` and is used where the input can be negative (the first
    layer's normalised image, the input of a block after a linear bottleneck).
    """

    def __init__(self, bits: int, signed: bool = False, init_clip: float = 6.0) -> None:
        super().__init__()
        self.bits = check_bits(bits, "a_bits")
        self.signed = signed
        self.clip = nn.Parameter(torch.tensor(float(init_clip)))
        self.calibrating = False

    def _quantize(self, x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
        fn = fake_quantize_signed if self.signed else fake_quantize_unsigned
        return fn(x, clip, bits)

    @property
    def levels(self) -> int:
        """Largest integer code (``Qp`` in LSQ's notation) at the current precision."""
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.calibrating:
            self._calibrate(x)
        clip = self.clip
        if self.bits < FULL_PRECISION and self.training:
            clip = grad_scale(clip, 1.0 / math.sqrt(x[0].numel() * self.levels))
        return self._quantize(x, clip, self.bits)

    @torch.no_grad()
    def _calibrate(self, x: torch.Tensor) -> None:
        flat = x.detach().flatten()
        if not self.signed:
            flat = flat.clamp_min(0)
        if flat.numel() > _CALIBRATION_SAMPLES:
            # Evenly spaced subsample: deterministic, and no RNG stream is consumed.
            idx = torch.linspace(0, flat.numel() - 1, _CALIBRATION_SAMPLES, device=flat.device).long()
            flat = flat[idx]
        bits = min(self.bits, 8)  # calibrate a 32-bit layer as if at 8 bits: a sane clip
        clip = mse_optimal_clip(flat, self._quantize, bits)
        self.clip.copy_(clip.reshape(()))

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, signed={self.signed}"


class WeightQuantizer(nn.Module):
    """Symmetric uniform weight quantizer, per output channel by default.

    ``method="lsq"`` learns the clip (initialised to the MSE-optimal value, gradient scaled as
    in LSQ); ``method="sawb"`` computes it from the weights' statistics at every forward.
    """

    def __init__(self, weight: torch.Tensor, bits: int, method: str = "lsq", per_channel: bool = True) -> None:
        super().__init__()
        from speq_search.errors import ConfigError

        if method not in WEIGHT_QUANTIZERS:
            raise ConfigError("weight_quantizer", method, " | ".join(WEIGHT_QUANTIZERS))
        self.bits = check_bits(bits, "w_bits")
        self.method = method
        self.per_channel = per_channel
        self._dims = tuple(range(1, weight.dim())) if per_channel else None
        if method == "lsq":
            init_bits = min(self.bits, 8)
            clip = mse_optimal_clip(weight, fake_quantize_weight, init_bits, dim=self._dims)
            self.clip = nn.Parameter(clip.detach().clone())
        else:
            self.register_parameter("clip", None)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.bits >= FULL_PRECISION:
            return w
        if self.method == "sawb":
            clip = sawb_clip(w, self.bits, self._dims)
        else:
            per_clip = w[0].numel() if self.per_channel else w.numel()
            qp = max(2 ** (self.bits - 1) - 1, 1)
            clip = grad_scale(self.clip, 1.0 / math.sqrt(per_clip * qp)) if self.training else self.clip
        return fake_quantize_weight(w, clip, self.bits)

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, method={self.method}, per_channel={self.per_channel}"


class _QuantMixin:
    """What QuantConv2d and QuantLinear share: two quantizers and ``quantized_weight()``."""

    weight_quant: WeightQuantizer
    act_quant: ActQuantizer

    def _attach(self, w_bits: int, a_bits: int, signed_input: bool, weight_quantizer: str, per_channel: bool):
        self.weight_quant = WeightQuantizer(self.weight, w_bits, weight_quantizer, per_channel)
        self.act_quant = ActQuantizer(a_bits, signed=signed_input, init_clip=3.0 if signed_input else 6.0)
        self.act_quant.to(self.weight.device)

    def quantized_weight(self) -> torch.Tensor:
        """The weight as the layer uses it: fake-quantized at ``weight_quant.bits``."""
        return self.weight_quant(self.weight)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` whose input and weight are fake-quantized."""

    @classmethod
    def from_float(
        cls,
        conv: nn.Conv2d,
        w_bits: int,
        a_bits: int,
        signed_input: bool = False,
        weight_quantizer: str = "lsq",
        per_channel: bool = True,
    ) -> QuantConv2d:
        """Wrap ``conv``, sharing its weight and bias parameters."""
        q = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        q._attach(w_bits, a_bits, signed_input, weight_quantizer, per_channel)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._conv_forward(self.act_quant(x), self.quantized_weight(), self.bias)


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` whose input and weight are fake-quantized."""

    @classmethod
    def from_float(
        cls,
        linear: nn.Linear,
        w_bits: int,
        a_bits: int,
        signed_input: bool = False,
        weight_quantizer: str = "lsq",
        per_channel: bool = True,
    ) -> QuantLinear:
        """Wrap ``linear``, sharing its weight and bias parameters."""
        q = cls(
            linear.in_features, linear.out_features, linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype,
        )
        q.weight = linear.weight
        q.bias = linear.bias
        q._attach(w_bits, a_bits, signed_input, weight_quantizer, per_channel)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)


QUANT_LAYERS = (QuantConv2d, QuantLinear)
