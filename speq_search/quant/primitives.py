"""Pure quantization functions: a straight-through round and fake-quantizers.

Bits are arguments, never module state, so a caller (the SPEQ teacher) can change them on
every forward. ``bits == 32`` means "no rounding"; for activations the clip still applies
(PACT's clip is part of the activation function the network was trained with).
"""

from __future__ import annotations

import torch

from speq_search.config import FULL_PRECISION, SUPPORTED_BITS, check_bits  # noqa: F401  (the bits live with the config)


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


def grad_scale(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``scale`` (LSQ's trick).

    Written so that the forward value is exactly ``x`` (``(x - x*s) + x*s`` can be off by a
    rounding, which would move every level of the quantizer by as much).
    """
    scaled = x * scale
    return x.detach() + (scaled - scaled.detach())


def fake_quantize_unsigned(x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT activation quantizer: clip to ``[0, clip]``, then ``2**bits`` uniform levels.

    Equals ``torch.fake_quantize_per_tensor_affine(x.clamp(0, c), c / (2**b - 1), 0, 0,
    2**b - 1)`` up to ties. The gradient reaches ``clip`` through the clamp (PACT) and
    through the step size (LSQ).
    """
    y = torch.minimum(torch.relu(x), clip)
    if bits >= FULL_PRECISION:
        return y
    step = clip / (2**bits - 1)
    return round_ste(y / step) * step


def fake_quantize_signed(x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric activation quantizer for inputs that can be negative (a normalised image).

    Clips to ``[-clip, clip]``; levels ``k * step`` for ``|k| <= 2**(bits-1) - 1`` (zero is
    exact). Equals torch's fake-quantize with zero point 0 and that integer range.
    """
    y = torch.maximum(torch.minimum(x, clip), -clip)
    if bits >= FULL_PRECISION:
        return y
    step = clip / (2 ** (bits - 1) - 1)
    return round_ste(y / step) * step


def fake_quantize_weight(w: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric uniform weight quantizer with ``2**bits`` levels spanning ``[-clip, clip]``.

    The levels are the mid-points ``(k + 0.5) * step``, ``k`` in ``[-2**(b-1), 2**(b-1) - 1]``,
    ``step = 2 * clip / (2**b - 1)``: symmetric and using every code, which at 2 bits gives
    four levels instead of the three of a zero-centred symmetric grid. ``clip`` broadcasts
    against ``w`` (one value per output channel by default). 32 bits returns ``w``.
    """
    if bits >= FULL_PRECISION:
        return w
    half = 2 ** (bits - 1)
    step = 2 * clip / (2**bits - 1)
    code = torch.clamp(round_ste(w / step - 0.5), -half, half - 1)
    return (code + 0.5) * step


# SAWB (Choi et al., 2018): clip = c1 * sqrt(E[w^2]) + c2 * E[|w|], fitted per bit-width.
_SAWB_COEFFICIENTS = {2: (3.212, -2.178), 3: (7.509, -6.892), 4: (12.68, -12.80), 5: (17.74, -18.64)}


def sawb_coefficients(bits: int) -> tuple[float, float]:
    """SAWB's ``(c1, c2)`` at ``bits``; ``(0, 0)`` where SAWB publishes none (6 bits and up)."""
    return _SAWB_COEFFICIENTS.get(bits, (0.0, 0.0))


def sawb_clip(w: torch.Tensor, bits: int, dim: tuple[int, ...] | None) -> torch.Tensor:
    """Statistics-based clip of SAWB, reduced over ``dim`` (``None``: the whole tensor).

    SAWB publishes coefficients up to 5 bits; from 6 bits on, clipping hardly matters and
    the clip is the largest magnitude.
    """
    dims = dim if dim is not None else tuple(range(w.dim()))
    absw = w.detach().abs()
    if bits in _SAWB_COEFFICIENTS:
        c1, c2 = _SAWB_COEFFICIENTS[bits]
        clip = c1 * absw.pow(2).mean(dim=dims, keepdim=True).sqrt() + c2 * absw.mean(dim=dims, keepdim=True)
        return torch.maximum(clip, absw.amax(dim=dims, keepdim=True) * 0.05).clamp_min(1e-8)
    return absw.amax(dim=dims, keepdim=True).clamp_min(1e-8)


def sawb_clip_from(w: torch.Tensor, coefficients: torch.Tensor, dim: tuple[int, ...] | None) -> torch.Tensor:
    """:func:`sawb_clip` with ``(c1, c2)`` as a tensor (:func:`sawb_coefficients`), not a branch on bits."""
    dims = dim if dim is not None else tuple(range(w.dim()))
    absw = w.detach().abs()
    top = absw.amax(dim=dims, keepdim=True)
    c1, c2 = coefficients[0], coefficients[1]
    fitted = c1 * absw.pow(2).mean(dim=dims, keepdim=True).sqrt() + c2 * absw.mean(dim=dims, keepdim=True)
    return torch.where(c1 != 0, torch.maximum(fitted, top * 0.05), top).clamp_min(1e-8)


def mse_optimal_clip(
    x: torch.Tensor,
    quantize,
    bits: int,
    dim: tuple[int, ...] | None = None,
    candidates: int = 50,
) -> torch.Tensor:
    """Clip value minimising the squared quantization error of ``x`` at ``bits``.

    Searches ``candidates`` fractions of the largest magnitude, reduced over ``dim``
    (``None``: one clip for the whole tensor). Used to initialise learned clips, so that
    quantization-aware training starts close to the full-precision network.
    """
    x = x.detach()
    dims = dim if dim is not None else tuple(range(x.dim()))
    top = x.abs().amax(dim=dims, keepdim=True).clamp_min(1e-8)
    best_err = None
    best_clip = top
    for frac in torch.linspace(1.0 / candidates, 1.0, candidates).tolist():
        clip = top * frac
        err = (quantize(x, clip, bits) - x).pow(2).mean(dim=dims, keepdim=True)
        if best_err is None:
            best_err, best_clip = err, clip
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_clip = torch.where(better, clip, best_clip)
    return best_clip
