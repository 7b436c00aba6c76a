"""Quantizer modules and the quantized layers that hold them.

Every quantizer keeps its precision in a plain ``bits`` attribute that can be changed between
(or during) forward passes; by default the learned clip does not depend on it, so switching
precision only changes the number of levels. This is what makes SPEQ's stochastic teacher
cheap. With ``per_bit_scales`` a learned clip is kept per bit-width and the current one is
picked by an index buffer (data, as the precision is). A quantizer is a grid
(:mod:`speq_search.quant.grids`) and a way to find its clip: PACT's learned clip for
activations, a registered scaling for weights (:mod:`speq_search.quant.scaling`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.config import check_bits
from speq_search.quant.grids import MIDPOINT, SIGNED, UNSIGNED, Grid, fake_quantize, quantize
from speq_search.quant.kernels import compiled_fake_quantize
from speq_search.quant.primitives import PER_BIT, mse_optimal_clip, per_bit_clip, per_bit_index
from speq_search.quant.scaling import weight_scaling

# Subsample for clip calibration: enough for a stable percentile-like estimate, cheap on CPU.
_CALIBRATION_SAMPLES = 65536


class _Quantizer(nn.Module):
    """What both quantizers share: a grid, and ``bits``, an int to read and set, kept in step
    with the tensor buffers that are all a compiled forward reads: ``levels`` (the grid's
    steps, ``0`` at 32 bits) and, with per-bit scales, ``bit_index`` (which clip is in use)."""

    _bits_field = "bits"  # the config field named in errors

    grid: Grid
    levels: torch.Tensor
    bit_index: torch.Tensor

    def __init__(self, device: torch.device | None = None, per_bit_scales: bool = False) -> None:
        super().__init__()
        self.register_buffer("levels", torch.zeros((), device=device), persistent=False)
        self.per_bit_scales = per_bit_scales
        if per_bit_scales:
            self.register_buffer("bit_index", torch.zeros(1, dtype=torch.long, device=device), persistent=False)
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
        self._levels = self.grid.levels(value)  # what an eager forward reads
        with torch.no_grad():
            self.levels.fill_(self._levels)
            if self.per_bit_scales:
                self.bit_index.fill_(per_bit_index(value))
            self._set_buffers(value)

    def _set_buffers(self, bits: int) -> None:
        pass

    def _fake_quantize(self, x: torch.Tensor, clip: torch.Tensor, grad_numel: int) -> torch.Tensor:
        """The grid's one fake-quantizer, on the path the compile mode asks for (speq_search.compiling)."""
        if torch.compiler.is_compiling():  # a compiled model: levels as data, one graph for every precision
            return fake_quantize(self.grid, x, clip, self.levels, grad_numel)
        if self.compiled_kernels:
            return compiled_fake_quantize(self.grid, x, clip, self.levels, grad_numel)
        return fake_quantize(self.grid, x, clip, self._levels, grad_numel)  # eager: only the ops its bits need


class ActQuantizer(_Quantizer):
    """Activation quantizer with a learned clip (PACT), applied to a layer's input.

    ``signed=False`` (the default, inputs after a ReLU) clips to ``[0, clip]`` (the grid
    :data:`~speq_search.quant.grids.UNSIGNED`); ``signed=True`` clips to ``[-clip, clip]``
    (:data:`~speq_search.quant.grids.SIGNED`) and is used where the input can be negative (the
    first layer's normalised image, the input of a block after a linear bottleneck). The clip's
    gradient is scaled as in LSQ by ``1 / sqrt(N * Qp)``, ``N`` the values per sample.

    ``bits`` is a plain int to read and set; a compiled forward reads only the ``levels``
    buffer it keeps in step (a 0-d tensor, ``0`` at 32 bits), so a compiled model serves every
    precision without recompiling. ``per_bit_scales``: one learned clip per bit-width from 2
    to 8 (``clip`` has shape ``(7,)``; 32 bits clip with the 8-bit one), picked by the
    ``bit_index`` buffer. ``bits`` given to the constructor comes from a
    :class:`~speq_search.config.QuantConfig` (:func:`~speq_search.quant.quantize_model`
    checks keywords given by hand); set afterwards by hand, it is checked.
    """

    _bits_field = "a_bits"

    def __init__(self, bits: int, signed: bool = False, init_clip: float = 6.0, per_bit_scales: bool = False) -> None:
        super().__init__(per_bit_scales=per_bit_scales)
        self.signed = signed
        self.grid = SIGNED if signed else UNSIGNED
        self.clip = nn.Parameter(torch.full((len(PER_BIT),) if per_bit_scales else (), float(init_clip)))
        self.set_checked_bits(bits)  # at 32 bits the clip stays and the rounding goes
        self.calibrating = False

    def current_clip(self) -> torch.Tensor:
        """The clip in use at the current bits (0-d)."""
        return per_bit_clip(self.clip, self.bit_index) if self.per_bit_scales else self.clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.calibrating:
            self._calibrate(x)
        # LSQ's gradient scale of the clip, 1 / sqrt(N * Qp), with N the values per sample.
        return self._fake_quantize(x, self.current_clip(), x[0].numel() if self.training else 0)

    def _quantize_at(self, x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
        return self.grid.dequantize(self.grid.quantize(x, clip, self.grid.levels(bits)))

    @torch.no_grad()
    def _calibrate(self, x: torch.Tensor) -> None:
        flat = x.detach().flatten()
        if not self.signed:
            flat = flat.clamp_min(0)
        if flat.numel() > _CALIBRATION_SAMPLES:
            # Evenly spaced subsample: deterministic, and no RNG stream is consumed.
            idx = torch.linspace(0, flat.numel() - 1, _CALIBRATION_SAMPLES, device=flat.device).long()
            idx.clamp_(max=flat.numel() - 1)  # above 2**24 values float32 can round the last index up
            flat = flat[idx]
        if self.per_bit_scales:  # each bit-width's clip at its own bits
            for i, bits in enumerate(PER_BIT):
                self.clip[i] = mse_optimal_clip(flat, self._quantize_at, bits).reshape(())
            return
        bits = min(self.bits, PER_BIT[-1])  # calibrate a 32-bit layer as if at 8 bits: a sane clip
        self.clip.copy_(mse_optimal_clip(flat, self._quantize_at, bits).reshape(()))

    def extra_repr(self) -> str:  # noqa: D102
        return f"bits={self.bits}, signed={self.signed}" + (", per_bit_scales=True" if self.per_bit_scales else "")


class WeightCodes(NamedTuple):
    """What a weight quantizer rounded a weight to: ``w_q = (codes - zero_point) * scale`` at ``bits``.

    ``codes`` holds integers in a float tensor (the weight itself at 32 bits, with scale 1);
    ``scale`` broadcasts against it (one value per output channel, or one).
    """

    codes: torch.Tensor
    scale: torch.Tensor | float
    zero_point: torch.Tensor | float
    bits: int


class WeightQuantizer(_Quantizer):
    """Symmetric uniform weight quantizer, per output channel by default: a scaling and the
    mid-point grid (:data:`~speq_search.quant.grids.MIDPOINT`).

    ``weight_quantizer`` names the scaling (a :class:`~speq_search.quant.scaling.WeightScaling`
    registered in :data:`~speq_search.quant.scaling.WEIGHT_QUANTIZERS`): ``"lsq"`` learns the
    clip (initialised to the MSE-optimal value, gradient scaled as in LSQ); ``"sawb"`` computes
    it from the weights' statistics at every forward. ``per_bit_scales``: a learned clip keeps
    one value per bit-width from 2 to 8. The values come checked from a
    :class:`~speq_search.config.QuantConfig` (see :func:`~speq_search.quant.quantize_model`).
    Like :class:`ActQuantizer`, ``bits`` is an int kept in step with tensor buffers, which are
    all a compiled forward reads. :meth:`quantize` returns the codes and scale the forward uses.
    """

    _bits_field = "w_bits"
    grid = MIDPOINT

    def __init__(self, weight: torch.Tensor, bits: int, weight_quantizer: str = "lsq", per_channel: bool = True,
                 per_bit_scales: bool = False) -> None:
        super().__init__(weight.device, per_bit_scales)
        self.weight_quantizer = weight_quantizer
        self.per_channel = per_channel
        self.reduce_dims = tuple(range(1, weight.dim())) if per_channel else None  # what one clip spans
        self.scaling = weight_scaling(weight_quantizer, "weight_quantizer")(self, weight, bits)
        self.set_checked_bits(bits)  # at 32 bits the weight is used unchanged

    def _set_buffers(self, bits: int) -> None:
        self.scaling.set_bits(self, bits)

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self._fake_quantize(w, self.scaling.clip(self, w), self.scaling.grad_numel(self, w))

    def quantize(self, w: torch.Tensor) -> WeightCodes:
        """The codes, scale and zero point of ``w`` at the current bits: what the forward computes
        its output from (``grid.dequantize`` of them), and what an export writes."""
        q = quantize(self.grid, w, self.scaling.clip(self, w), self._levels, self.scaling.grad_numel(self, w))
        return WeightCodes(q.codes, q.scale, q.zero_point, self._bits)

    def extra_repr(self) -> str:  # noqa: D102
        return (f"bits={self.bits}, weight_quantizer={self.weight_quantizer}, per_channel={self.per_channel}"
                + (", per_bit_scales=True" if self.per_bit_scales else ""))


class _QuantMixin:
    """What QuantConv2d and QuantLinear share: two quantizers and ``quantized_weight()``."""

    weight_quant: WeightQuantizer
    act_quant: ActQuantizer

    def _attach(self, w_bits: int, a_bits: int, signed_input: bool, weight_quantizer: str, per_channel: bool,
                per_bit_scales: bool) -> None:
        self.weight_quant = WeightQuantizer(self.weight, w_bits, weight_quantizer, per_channel, per_bit_scales)
        self.act_quant = ActQuantizer(a_bits, signed=signed_input, init_clip=3.0 if signed_input else 6.0,
                                      per_bit_scales=per_bit_scales)
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
        per_bit_scales: bool = False,
    ) -> QuantConv2d:
        """Wrap ``conv``, sharing its weight and bias parameters."""
        q = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            device=conv.weight.device, dtype=conv.weight.dtype,
        )
        q.weight = conv.weight
        q.bias = conv.bias
        q._attach(w_bits, a_bits, signed_input, weight_quantizer, per_channel, per_bit_scales)
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
        per_bit_scales: bool = False,
    ) -> QuantLinear:
        """Wrap ``linear``, sharing its weight and bias parameters."""
        q = cls(
            linear.in_features, linear.out_features, linear.bias is not None,
            device=linear.weight.device, dtype=linear.weight.dtype,
        )
        q.weight = linear.weight
        q.bias = linear.bias
        q._attach(w_bits, a_bits, signed_input, weight_quantizer, per_channel, per_bit_scales)
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.linear(self.act_quant(x), self.quantized_weight(), self.bias)


QUANT_LAYERS = (QuantConv2d, QuantLinear)
