"""The ``kernels`` compile mode: the one fake-quantizer of :mod:`speq_search.quant.grids` through ``torch.compile``.

:func:`compiled_fake_quantize` runs :func:`~speq_search.quant.grids.fake_quantize` compiled
(``dynamic=True``): inductor makes one loop of its forward, and AOTAutograd derives its
backward from the same code and makes one loop of that, while the model around it stays
eager. Nothing is written twice: the eager forward, this, and a compiled model (which traces
``fake_quantize`` into its own graph) run the same definition, and agree in values and
gradients up to float rounding.

The precision is data: ``levels`` is the 0-d buffer a quantizer keeps (``0``: full
precision), so one compiled graph serves every precision SPEQ draws. The compiled function
sees a flat activation, or a weight as ``(clips, values per clip)`` with a column of clips, so
that every layer's shape shares one graph (a parameter's shape would be a guard).
"""

from __future__ import annotations

import torch

from speq_search.quant.grids import Grid, fake_quantize

__all__ = ["compiled_fake_quantize"]

_RECOMPILE_LIMIT = 64  # graphs of the one function: 3 grids x clip shapes x grad modes x train/eval
_COMPILED: list = []


def _compiled():
    """``torch.compile(fake_quantize, dynamic=True)``, made on first use (once per process).

    Inductor's on-disk cache (see :mod:`speq_search.compiling`) lets a later process load it in
    about a second.
    """
    if not _COMPILED:
        # One compiled function serves every grid, clip shape and grad mode: each its own graph.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
        _COMPILED.append(torch.compile(fake_quantize, dynamic=True, fullgraph=True))
    return _COMPILED[0]


def compiled_fake_quantize(
    grid: Grid, x: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, grad_numel: int = 0
) -> torch.Tensor:
    """:func:`~speq_search.quant.grids.fake_quantize` compiled, ``levels`` a 0-d tensor.

    ``clip`` holds one value, or one per output channel (shape ``(C, 1, ...)``).
    """
    if clip.numel() == 1:
        return _compiled()(grid, x.reshape(-1), clip.reshape(()), levels, grad_numel).view_as(x)
    if clip.numel() != x.shape[0]:
        raise ValueError(f"a clip has one value or one per output channel, not {tuple(clip.shape)}")
    flat = _compiled()(grid, x.reshape(clip.numel(), -1), clip.reshape(-1, 1), levels, grad_numel)
    return flat.view_as(x)
