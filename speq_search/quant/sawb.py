"""SAWB weight scaling: the clip from the weights' statistics (``quant.weight_quantizer: sawb``)."""

from __future__ import annotations

import torch

from speq_search.quant.scaling import WeightScaling

# SAWB (Choi et al., 2018): clip = c1 * sqrt(E[w^2]) + c2 * E[|w|], fitted per bit-width.
_SAWB_COEFFICIENTS = {2: (3.212, -2.178), 3: (7.509, -6.892), 4: (12.68, -12.80), 5: (17.74, -18.64)}


def sawb_coefficients(bits: int) -> tuple[float, float]:
    """SAWB's ``(c1, c2)`` at ``bits``; ``(0, 0)`` where SAWB publishes none (6 bits and up)."""
    return _SAWB_COEFFICIENTS.get(bits, (0.0, 0.0))


def sawb_clip_from(w: torch.Tensor, coefficients: torch.Tensor, dim: tuple[int, ...] | None) -> torch.Tensor:
    """SAWB's clip of ``w`` with ``(c1, c2)`` as a tensor (:func:`sawb_coefficients`), reduced over
    ``dim`` (``None``: the whole tensor); the largest magnitude where ``c1`` is 0 (from 6 bits,
    where clipping hardly matters). A mask, not a branch on the bits."""
    dims = dim if dim is not None else tuple(range(w.dim()))
    absw = w.detach().abs()
    top = absw.amax(dim=dims, keepdim=True)
    c1, c2 = coefficients[0], coefficients[1]
    fitted = c1 * absw.pow(2).mean(dim=dims, keepdim=True).sqrt() + c2 * absw.mean(dim=dims, keepdim=True)
    return torch.where(c1 != 0, torch.maximum(fitted, top * 0.05), top).clamp_min(1e-8)


def sawb_clip(w: torch.Tensor, bits: int, dim: tuple[int, ...] | None) -> torch.Tensor:
    """:func:`sawb_clip_from` at ``bits``."""
    return sawb_clip_from(w, torch.tensor(sawb_coefficients(bits), device=w.device), dim)


class SAWB(WeightScaling):
    """Clip from the weights' statistics (SAWB), recomputed at every forward; the largest magnitude from 6 bits.

    Nothing is learned, and nothing is kept per bit-width: the coefficients of the current
    bits are a buffer (``q.sawb_coefficients``), so a compiled forward serves every precision.
    """

    def __init__(self, q, weight: torch.Tensor, bits: int) -> None:  # noqa: D107
        q.register_parameter("clip", None)
        q.register_buffer("sawb_coefficients", torch.zeros(2, device=weight.device), persistent=False)

    def set_bits(self, q, bits: int) -> None:  # noqa: D102
        q.sawb_coefficients.copy_(torch.tensor(sawb_coefficients(bits)))

    def clip(self, q, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return sawb_clip_from(w, q.sawb_coefficients, q.reduce_dims)
