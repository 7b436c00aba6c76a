"""LSQ weight scaling: a learned clip, started at the MSE-optimal clip (``quant.weight_quantizer: lsq``)."""

from __future__ import annotations

import torch
from torch import nn

from speq_search.quant.primitives import PER_BIT, fake_quantize_weight, mse_optimal_clip, per_bit_clip
from speq_search.quant.scaling import WeightScaling


class LSQ(WeightScaling):
    """Learned clip (LSQ, Esser et al. 2020), started at the MSE-optimal clip of the float weights.

    The clip is ``q.clip``: one value per output channel (or one) of the weight's shape; with
    ``per_bit_scales`` one such clip per bit-width from 2 to 8 (a leading dimension), each
    started at its own bit-width's MSE-optimal clip, and the forward picks the current one by
    ``q.bit_index`` (a gather). Its gradient is scaled by ``1 / sqrt(N * Qp)``, ``N`` the
    values per clip, ``Qp = 2**(b-1) - 1``.
    """

    def __init__(self, q, weight: torch.Tensor, bits: int) -> None:  # noqa: D107
        widths = PER_BIT if q.per_bit_scales else (min(bits, PER_BIT[-1]),)
        clips = [mse_optimal_clip(weight, fake_quantize_weight, b, dim=q.reduce_dims) for b in widths]
        clip = torch.stack(clips) if q.per_bit_scales else clips[0]
        q.clip = nn.Parameter(clip.detach().clone())

    def clip(self, q, w: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return per_bit_clip(q.clip, q.bit_index) if q.per_bit_scales else q.clip

    def grad_numel(self, q, w: torch.Tensor) -> int:  # noqa: D102
        if not q.training:
            return 0
        return w[0].numel() if q.per_channel else w.numel()
