"""Quantizer modules and the quantized layers that hold them.

Every quantizer keeps its precision in a plain ``bits`` attribute that can be changed between
(or during) forward passes; the learned clip does not depend on it, so switching precision
only changes the number of levels. This is what makes SPEQ's stochastic teacher cheap. The
forward passes run the fused kernels of :mod:`speq_search.quant.kernels`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.config import check_bits
from speq_search.quant.kernels import (
    act_fake_quant_traceable,
    act_levels,
    fake_quantize_act,
    fake_quantize_weight_lsq,
    weight_fake_quant_traceable,
    weight_levels,
)
from speq_search.quant.primitives import (
    FULL_PRECISION,
    fake_quantize_signed,
    fake_quantize_unsigned,
    fake_quantize_weight,
    grad_scale,
    mse_optimal_clip,
    sawb_clip,
    sawb_clip_from,
    sawb_coefficients,
)

# Subsample for clip calibration: enough for a stable percentile-like estimate, cheap on CPU.
_CALIBRATION_SAMPLES = 65536


class _Quantizer(nn.Module):
    """What both quantizers share: ``bits``, an int to read and set, kept in step with the tensor
    buffers that are all the forward pass reads (see :mod:`speq_search.quant.kernels`)."""

    _bits_field = "bits"  # the config field named in errors

    levels: torch.Tensor

    def __init__(self, device: torch.device | None = None) -> None:
        super().__init__()
        self.register_buffer("levels", torch.zeros((), device=device), persistent=False)
        self.compiled_kernels = False  # see speq_search.compiling

    @property
    def bits(self) -> int:
        """The precision: 2 to 8, or 32 (no rounding); a value set by hand is checked."""
        return self._bits

    @bits.setter
    def bits(self, value: int) -> None:
        self.set_checked_bits(check_bits(value, self._bits_field))

    def set_checked_bits(self, value: int) -> None:
        """Set ``bits`` to a value already checked (a QuantConfig's, a SpeqConfig's teacher draw):
        what quantize_model and the teacher pass do, at every step for the teacher."""
        self._bits = value
        with torch.no_grad():
            self._set_buffers(value)

    def _set_buffers(self, bits: int) -> None:
        raise NotImplementedError


class ActQuantizer(_Quantizer):
    """Activation quantizer with a learned clip (PACT), applied to a layer's input.

    ``signed=False`` (the default, inputs after a ReLU) clips to ``[0, clip]``; ``signed=True``
    clips to ``[-clip, clip]`` and is used where the input can be negative (the first
    layer's normalised image, the input of a block after a linear bottleneck).

    ``bits`` is a plain int to read and set; the forward pass reads only the ``levels`` buffer
    it keeps in step (a 0-d tensor, ``0`` at 32 bits), so a compiled model serves every
    precision without recompiling. ``bits`` given to the constructor comes from a
    :class:`~speq_search.config.QuantConfig` (:func:`~speq_search.quant.quantize_model`
    checks keywords given by hand); set afterwards by hand, it is checked.
    """

    _bits_field = "a_bits"

    def __init__(self, bits: int, signed: bool = False, init_clip: float = 6.0) -> None:
        super().__init__()
        self.signed = signed
        self.clip = nn.Parameter(torch.tensor(float(init_clip)))
        self.set_checked_bits(bits)  # at 32 bits the clip stays and the rounding goes
        self.calibrating = False

    def _set_buffers(self, bits: int) -> None:
        self.levels.fill_(act_levels(bits, self.signed))

    def _quantize(self, x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
        fn = fake_quantize_signed if self.signed else fake_quantize_unsigned
        return fn(x, clip, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.calibrating:
            self._calibrate(x)
        # LSQ's gradient scale of the clip, 1 / sqrt(N * Qp), with N the values per sample.
        scale_numel = x[0].numel() if self.training else 0
        if torch.compiler.is_compiling():  # a compiled model: levels as data, one graph for every precision
            return act_fake_quant_traceable(x, self.clip, self.levels, self.signed, scale_numel)
        if self.compiled_kernels:
            return fake_quantize_act(x, self.clip, self.levels, self.signed, scale_numel, compiled=True)
        # Plain eager: the reference composition (fewest passes without a compiler).
        clip = self.clip
        if self._bits < FULL_PRECISION and scale_numel:
            clip = grad_scale(clip, 1.0 / math.sqrt(scale_numel * act_levels(self._bits, self.signed)))
        return self._quantize(x, clip, self._bits)

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


class WeightQuantizer(_Quantizer):
    """Symmetric uniform weight quantizer, per output channel by default.

    ``weight_quantizer="lsq"`` learns the clip (initialised to the MSE-optimal value, gradient
    scaled as in LSQ); ``"sawb"`` computes it from the weights' statistics at every forward.
    The values come checked from a :class:`~speq_search.config.QuantConfig` (see
    :func:`~speq_search.quant.quantize_model`).
    Like :class:`ActQuantizer`, ``bits`` is an int kept in step with tensor buffers
    (``levels``, and SAWB's coefficients), which are all the forward pass reads.
    """

    sawb_coefficients: torch.Tensor
    _bits_field = "w_bits"

    def __init__(self, weight: torch.Tensor, bits: int, weight_quantizer: str = "lsq", per_channel: bool = True) -> None:
        super().__init__(weight.device)
        self.weight_quantizer = weight_quantizer
        self.per_channel = per_channel
        self._dims = tuple(range(1, weight.dim())) if per_channel else None
        self.register_buffer("sawb_coefficients", torch.zeros(2, device=weight.device), persistent=False)
        self.set_checked_bits(bits)  # at 32 bits the weight is used unchanged
        if weight_quantizer == "lsq":
            init_bits = min(self.bits, 8)
            clip = mse_optimal_clip(weight, fake_quantize_weight, init_bits, dim=self._dims)
            self.clip = nn.Parameter(clip.detach().clone())
        else:
            self.register_parameter("clip", None)

    def _set_buffers(self, bits: int) -> None:
        self.levels.fill_(weight_levels(bits))
        self.sawb_coefficients.copy_(torch.tensor(sawb_coefficients(bits)))

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        compiling = torch.compiler.is_compiling()
        if not compiling and not self.compiled_kernels and self._bits >= FULL_PRECISION:
            return w
        if self.weight_quantizer == "sawb":
            clip = sawb_clip_from(w, self.sawb_coefficients, self._dims) if compiling else \
                sawb_clip(w, self._bits, self._dims)
            scale_numel = 0
        else:
            clip = self.clip
            scale_numel = (w[0].numel() if self.per_channel else w.numel()) if self.training else 0
        if compiling:  # levels as data (see ActQuantizer.forward)
            return weight_fake_quant_traceable(w, clip, self.levels, scale_numel)
        if self.compiled_kernels:
            return fake_quantize_weight_lsq(w, clip, self.levels, scale_numel, compiled=True)
        if scale_numel:
            clip = grad_scale(clip, 1.0 / math.sqrt(scale_numel * max(2 ** (self._bits - 1) - 1, 1)))
        return fake_quantize_weight(w, clip, self._bits)

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, weight_quantizer={self.weight_quantizer}, per_channel={self.per_channel}"


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
