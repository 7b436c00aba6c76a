"""The quantization grids, each defined once: a quantize/dequantize pair (torchao's shape).

``grid.quantize(x, clip, levels)`` returns the integer codes it rounded to and the scale and
zero point that map them back (a :class:`Quantized`); ``grid.dequantize`` computes
``(codes - zero_point) * scale``; the fake-quantizer is one after the other
(:func:`fake_quantize`). Three grids:

- :data:`UNSIGNED` (PACT, inputs after a ReLU): clip to ``[0, clip]``, codes ``0 .. levels``;
- :data:`SIGNED` (inputs that can be negative): clip to ``[-clip, clip]``, codes
  ``-levels .. levels`` (zero is exact);
- :data:`MIDPOINT` (weights): the mid-points ``(k + 1/2) * step``, ``k`` in
  ``[-2**(b-1), 2**(b-1) - 1]``, ``step = 2 * clip / (2**b - 1)``: symmetric and using every code
  (four levels at 2 bits where a zero-centred grid has three); zero point ``-1/2``.

The precision is ``levels``, the grid's number of steps (:meth:`Grid.levels`: ``2**b - 1``,
``2**(b-1) - 1`` for a signed input), ``0`` meaning full precision (no rounding: the clipped
input with scale 1). It is a Python number in an eager forward (whose cost is then what the
rounding grid needs), or a 0-d tensor: data, a mask rather than a branch, so that one compiled
graph serves every precision (:mod:`speq_search.quant.kernels`, a compiled model). Both run the
same code below, and autograd differentiates it: the codes round straight-through, the clip
gets PACT's gradient (through the clamp) and LSQ's (through the step), torch.minimum/maximum
give half the gradient to each side of a tie.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from speq_search.config import FULL_PRECISION


class _RoundSTE(torch.autograd.Function):
    """Round in the forward pass, identity in the backward pass (straight-through)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.round(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return grad


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round half to even, with a straight-through gradient."""
    return _RoundSTE.apply(x)


class _GradScale(torch.autograd.Function):
    """Identity in the forward pass; the gradient times ``scale`` in the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale) -> torch.Tensor:  # noqa: D102
        if isinstance(scale, torch.Tensor):
            ctx.save_for_backward(scale)
        else:
            ctx.scale = scale
        return x.clone()  # exactly x, with no arithmetic on it (nor in a compiled forward's loop)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        scale = ctx.saved_tensors[0] if ctx.saved_tensors else ctx.scale
        return grad * scale, None


def grad_scale(x: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` (LSQ's trick).

    The forward value is exactly ``x`` (``(x - x*s) + x*s`` can be off by a rounding, which
    would move every level of the quantizer by as much), and costs no arithmetic: written as
    ``x.detach() + (x*s - (x*s).detach())`` it put three scalar operations into every iteration
    of a compiled quantizer's loop.
    """
    return _GradScale.apply(x, scale)


class Quantized(NamedTuple):
    """What a grid rounded ``x`` to: ``x`` is approximately ``(codes - zero_point) * scale``."""

    codes: torch.Tensor  # integer values in a float tensor; at full precision the clipped input itself
    scale: torch.Tensor | float  # the step (broadcasts against codes); 1 at full precision
    zero_point: torch.Tensor | float  # 0, or -1/2 for the mid-point grid; 0 at full precision


def _rounds(levels):
    """Whether the grid rounds, and ``levels`` with 1 where it does not (a divisor, never 0).

    A tensor gives tensors (masks: no branch on the precision); a number gives Python values.
    """
    if isinstance(levels, torch.Tensor):
        on = levels > 0
        return on, torch.where(on, levels, torch.ones_like(levels))
    return levels > 0, levels


def _at_least_one(v):
    return torch.clamp(v, min=1) if isinstance(v, torch.Tensor) else max(v, 1)


class Grid:
    """A uniform integer grid: the range it clips to, its step, the codes it rounds to."""

    name = ""
    zero_point = 0.0  # x = (codes - zero_point) * scale

    def levels(self, bits: int) -> float:
        """The number of steps at ``bits``: what ``levels`` holds; ``0.0`` at 32 bits."""
        raise NotImplementedError

    def qmax(self, levels):
        """The largest positive code (LSQ's ``Qp``) at ``levels`` > 0."""
        return levels

    def clamp(self, x: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        """``x`` within the grid's range."""
        raise NotImplementedError

    def step(self, clip: torch.Tensor, levels):
        """The distance between two levels (the scale) at ``levels`` > 0."""
        return clip / levels

    def round(self, u: torch.Tensor, levels) -> torch.Tensor:
        """The codes of ``u = x / step`` (straight-through)."""
        return round_ste(u)

    def quantize(self, x: torch.Tensor, clip: torch.Tensor, levels) -> Quantized:
        """The codes, scale and zero point of ``x`` clipped at ``clip`` with ``levels`` steps."""
        y = self.clamp(x, clip)
        on, safe = _rounds(levels)
        if on is False:  # a Python 0 (an eager forward at 32 bits): nothing to round
            return Quantized(y, 1.0, 0.0)
        step = self.step(clip, safe)
        codes = self.round(y / step, safe)
        if on is True:
            return Quantized(codes, step, self.zero_point)
        zero_point = self.zero_point  # a tensor's 0 is data: the rounding is masked, not skipped
        if zero_point != 0:
            zero_point = torch.where(on, torch.full_like(safe, zero_point), torch.zeros_like(safe))
        return Quantized(torch.where(on, codes, y), torch.where(on, step, torch.ones_like(step)), zero_point)

    def dequantize(self, q: Quantized) -> torch.Tensor:
        """``(codes - zero_point) * scale``."""
        codes = q.codes if isinstance(q.zero_point, float) and q.zero_point == 0 else q.codes - q.zero_point
        return codes * q.scale

    def __repr__(self) -> str:
        return f"<grid {self.name}>"

    def __reduce__(self):  # the grids are module constants: a copy or a pickle is the same object
        return self.name


class _Unsigned(Grid):
    """PACT's grid for inputs after a ReLU: ``[0, clip]``, codes ``0 .. 2**b - 1``."""

    name = "UNSIGNED"

    def levels(self, bits: int) -> float:  # noqa: D102
        return 0.0 if bits >= FULL_PRECISION else float(2**bits - 1)

    def clamp(self, x, clip):  # noqa: D102
        return torch.minimum(torch.relu(x), clip)


class _Signed(Grid):
    """The symmetric grid of inputs that can be negative: ``[-clip, clip]``, codes ``|k| <= 2**(b-1) - 1``."""

    name = "SIGNED"

    def levels(self, bits: int) -> float:  # noqa: D102
        return 0.0 if bits >= FULL_PRECISION else float(2 ** (bits - 1) - 1)

    def clamp(self, x, clip):  # noqa: D102
        return torch.maximum(torch.minimum(x, clip), -clip)


class _Midpoint(Grid):
    """The weights' mid-point grid: levels ``(k + 1/2) * step`` spanning ``[-clip, clip]``."""

    name = "MIDPOINT"
    zero_point = -0.5

    def levels(self, bits: int) -> float:  # noqa: D102
        return 0.0 if bits >= FULL_PRECISION else float(2**bits - 1)

    def qmax(self, levels):  # noqa: D102
        return _at_least_one((levels - 1) / 2)  # 2**(b-1) - 1

    def clamp(self, x, clip):  # noqa: D102
        return x  # the codes are clamped, not the values

    def step(self, clip, levels):  # noqa: D102
        return 2 * clip / levels

    def round(self, u, levels):  # noqa: D102
        half = (levels + 1) / 2
        return torch.clamp(round_ste(u - 0.5), -half, half - 1)


UNSIGNED: Grid = _Unsigned()
SIGNED: Grid = _Signed()
MIDPOINT: Grid = _Midpoint()


def lsq_grad_scale(grid: Grid, clip: torch.Tensor, levels, numel: int) -> torch.Tensor:
    """``clip`` whose gradient is scaled by LSQ's ``1 / sqrt(numel * Qp)`` where the grid rounds."""
    on, safe = _rounds(levels)
    if on is False:
        return clip
    if on is True:
        return grad_scale(clip, 1.0 / math.sqrt(numel * grid.qmax(safe)))
    return grad_scale(clip, torch.where(on, torch.rsqrt(numel * grid.qmax(safe)), torch.ones_like(safe)))


def quantize(grid: Grid, x: torch.Tensor, clip: torch.Tensor, levels, grad_numel: int = 0) -> Quantized:
    """``grid.quantize``, the clip's gradient scaled as in LSQ when ``grad_numel`` > 0 (the values
    per clip: LSQ's ``N``)."""
    if grad_numel:
        clip = lsq_grad_scale(grid, clip, levels, grad_numel)
    if isinstance(levels, torch.Tensor):  # a compiled graph: the clip broadcast before its first use,
        clip = clip.expand_as(x)  # so its gradient is summed once, in the loop of x's (not once per use)
    return grid.quantize(x, clip, levels)


def fake_quantize(grid: Grid, x: torch.Tensor, clip: torch.Tensor, levels, grad_numel: int = 0) -> torch.Tensor:
    """``grid.dequantize(quantize(grid, x, clip, levels, grad_numel))``: the fake-quantizer."""
    return grid.dequantize(quantize(grid, x, clip, levels, grad_numel))
