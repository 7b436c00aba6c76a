"""Pure quantization functions with the precision as ``bits``: the grids of
:mod:`speq_search.quant.grids` called as ``fake_quantize_*(x, clip, bits)``, and the MSE-optimal clip.

Bits are arguments, never module state, so a caller (the SPEQ teacher) can change them on
every forward. ``bits == 32`` means "no rounding"; for activations the clip still applies
(PACT's clip is part of the activation function the network was trained with).
"""

from __future__ import annotations

import torch

from speq_search.config import FULL_PRECISION, SUPPORTED_BITS, check_bits  # noqa: F401  (the bits live with the config)
from speq_search.quant.grids import MIDPOINT, SIGNED, UNSIGNED, grad_scale, round_ste  # noqa: F401

PER_BIT = tuple(b for b in SUPPORTED_BITS if b < FULL_PRECISION)
"""The bit-widths that keep a clip of their own with ``quant.per_bit_scales`` (2 to 8)."""


def per_bit_index(bits: int) -> int:
    """The position of ``bits``' clip in a per-bit-width clip; 32 bits use the 8-bit one."""
    return PER_BIT.index(min(bits, PER_BIT[-1]))


def per_bit_clip(clips: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The clip at ``index`` (a 1-element long tensor) of per-bit-width ``clips`` (bit-widths along
    dimension 0): a gather, not a Python branch, so a compiled forward serves every precision,
    and only the clip in use gets a gradient."""
    return clips.index_select(0, index).squeeze(0)


def fake_quantize_unsigned(x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """PACT activation quantizer: clip to ``[0, clip]``, then ``2**bits`` uniform levels.

    Equals ``torch.fake_quantize_per_tensor_affine(x.clamp(0, c), c / (2**b - 1), 0, 0,
    2**b - 1)`` up to ties. The gradient reaches ``clip`` through the clamp (PACT) and
    through the step size (LSQ). The grid :data:`~speq_search.quant.grids.UNSIGNED`.
    """
    return UNSIGNED.dequantize(UNSIGNED.quantize(x, clip, UNSIGNED.levels(bits)))


def fake_quantize_signed(x: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric activation quantizer for inputs that can be negative (a normalised image).

    Clips to ``[-clip, clip]``; levels ``k * step`` for ``|k| <= 2**(bits-1) - 1`` (zero is
    exact). Equals torch's fake-quantize with zero point 0 and that integer range. The grid
    :data:`~speq_search.quant.grids.SIGNED`.
    """
    return SIGNED.dequantize(SIGNED.quantize(x, clip, SIGNED.levels(bits)))


def fake_quantize_weight(w: torch.Tensor, clip: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric uniform weight quantizer with ``2**bits`` levels spanning ``[-clip, clip]``.

    The levels are the mid-points ``(k + 0.5) * step``, ``k`` in ``[-2**(b-1), 2**(b-1) - 1]``,
    ``step = 2 * clip / (2**b - 1)`` (the grid :data:`~speq_search.quant.grids.MIDPOINT`).
    ``clip`` broadcasts against ``w`` (one value per output channel by default). 32 bits
    returns ``w``'s values.
    """
    return MIDPOINT.dequantize(MIDPOINT.quantize(w, clip, MIDPOINT.levels(bits)))


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
