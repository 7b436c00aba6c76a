"""Fast fake-quantizers: precision passed as a tensor, for compiled training.

The reference functions of :mod:`speq_search.quant.primitives` take ``bits`` as a Python int
and are compositions of torch ops (clip, divide, round, multiply, each its own pass and
autograd node). A quantizer module runs one of three equivalent paths (same values; same
gradients, including torch's half gradient where a clip ties with its input):

- eager, uncompiled: the reference functions (fewest passes without a compiler);
- ``compiled_kernels``: :func:`fake_quantize_act` / :func:`fake_quantize_weight_lsq`, one
  :class:`torch.autograd.Function` per quantizer whose forward and backward are each one pure
  function of tensors run through ``torch.compile`` (one C++ or Triton loop each, any shape),
  while the model around them stays eager;
- inside a compiled model: :func:`act_fake_quant_traceable` /
  :func:`weight_fake_quant_traceable`, the reference composition with the precision as a
  tensor, which inductor fuses with the layers around it.

The precision is data, not a Python int: ``levels`` is a 0-d float tensor holding the largest
integer code (``2**b - 1`` unsigned, ``2**(b-1) - 1`` signed, ``2**b - 1`` for weights), and
``0`` means full precision (no rounding: a mask, not a branch). Changing it is an in-place
write, so one compiled graph serves every precision SPEQ draws.
"""

from __future__ import annotations

import torch

__all__ = [
    "act_fake_quant_traceable",
    "act_levels",
    "compiled_kernels",
    "fake_quantize_act",
    "fake_quantize_weight_lsq",
    "weight_fake_quant_traceable",
    "weight_levels",
]


def act_levels(bits: int, signed: bool) -> float:
    """The largest integer code of an activation quantizer; ``0.0`` at 32 bits."""
    if bits >= 32:
        return 0.0
    return float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)


def weight_levels(bits: int) -> float:
    """``2**bits - 1`` (the number of steps of the weight grid); ``0.0`` at 32 bits."""
    return 0.0 if bits >= 32 else float(2**bits - 1)


# ------------------------------------------------------------------ pure tensor kernels
def _act_forward(x: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, signed: bool) -> torch.Tensor:
    lo = -clip if signed else torch.zeros_like(clip)
    y = torch.minimum(torch.maximum(x, lo), clip)
    step = clip / levels
    return torch.where(levels > 0, torch.round(y / step) * step, y)


def _act_backward(
    grad: torch.Tensor, x: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, signed: bool, scale_numel: int
) -> tuple[torch.Tensor, torch.Tensor]:
    # d y / d x and d y / d clip of y = clamp(x, lo, clip), with torch.minimum/maximum's
    # convention of half the gradient to each side of a tie.
    half = torch.full_like(x, 0.5)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    if signed:
        m = torch.minimum(x, clip)
        dm_dx = torch.where(x < clip, one, torch.where(x == clip, half, zero))
        dm_dclip = 1.0 - dm_dx
        dy_dm = torch.where(m > -clip, one, torch.where(m == -clip, half, zero))
        dy_dx = dm_dx * dy_dm
        dy_dclip = dm_dclip * dy_dm - (1.0 - dy_dm)
        y = torch.maximum(m, -clip)
    else:
        r = torch.relu(x)
        dr_dx = (x > 0).to(x.dtype)
        dy_dr = torch.where(r < clip, one, torch.where(r == clip, half, zero))
        dy_dx = dr_dx * dy_dr
        dy_dclip = 1.0 - dy_dr
        y = torch.minimum(r, clip)
    step = clip / levels
    u = y / step
    # LSQ: the rounding error, per unit of clip; PACT: the clipped part.
    dq_dclip = torch.where(levels > 0, dy_dclip + (torch.round(u) - u) / levels, dy_dclip)
    grad_clip = (grad * dq_dclip).sum()
    if scale_numel > 0:  # LSQ's gradient scale 1 / sqrt(N * Qp), only where it quantizes
        grad_clip = grad_clip * torch.where(levels > 0, torch.rsqrt(scale_numel * levels), torch.ones_like(levels))
    return grad * dy_dx, grad_clip


def _weight_forward(w: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    half = (levels + 1) / 2
    step = 2 * clip / levels
    code = torch.clamp(torch.round(w / step - 0.5), -half, half - 1)
    return torch.where(levels > 0, (code + 0.5) * step, w)


def _weight_backward(
    grad: torch.Tensor, w: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, scale_numel: int, clip_grad: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    # w: (clips, values per clip); clip: (clips, 1).
    half = (levels + 1) / 2
    step = 2 * clip / levels
    v = w / step
    r = torch.round(v - 0.5)
    inside = (r >= -half) & (r <= half - 1)
    quantized = levels > 0
    grad_w = torch.where(quantized & ~inside, torch.zeros_like(grad), grad)
    if not clip_grad:
        return grad_w, None
    code = torch.clamp(r, -half, half - 1)
    dq_dstep = code + 0.5 - torch.where(inside, v, torch.zeros_like(v))
    per_elem = torch.where(quantized, grad * dq_dstep * (2 / levels), torch.zeros_like(grad))
    grad_clip = per_elem.sum(dim=1, keepdim=True)
    if scale_numel > 0:  # LSQ: 1 / sqrt(N * Qp), Qp = 2**(b-1) - 1 (at least 1)
        grad_clip = grad_clip * torch.rsqrt(scale_numel * torch.clamp((levels - 1) / 2, min=1))
    return grad_w, grad_clip


_EAGER = {
    "act_forward": _act_forward,
    "act_backward": _act_backward,
    "weight_forward": _weight_forward,
    "weight_backward": _weight_backward,
}
_COMPILED: dict[str, object] = {}


def compiled_kernels() -> dict[str, object]:
    """The four kernels through ``torch.compile``, made on first use (once per process).

    ``dynamic=True``: one compiled loop serves every shape. Inductor's on-disk cache (see
    :mod:`speq_search.compiling`) lets a later process load them in about a second.
    """
    if not _COMPILED:
        _COMPILED.update({name: torch.compile(fn, dynamic=True, fullgraph=True) for name, fn in _EAGER.items()})
    return _COMPILED


def _kernel(name: str, compiled: bool):
    # Inside a compiled model the eager kernel is traced into the model's own graph.
    if compiled and not torch.compiler.is_compiling():
        return compiled_kernels()[name]
    return _EAGER[name]


# ------------------------------------------ compositions for a compiled model (levels as data)
def act_fake_quant_traceable(
    x: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, signed: bool, scale_numel: int = 0
) -> torch.Tensor:
    """The reference activation quantizer written with ``levels`` as a tensor, for ``torch.compile``.

    Autograd differentiates it as it does the reference (same values and gradients); inductor
    fuses it with the layers around it. ``levels == 0`` selects the clipped input.
    """
    quantized = levels > 0
    safe = torch.where(quantized, levels, torch.ones_like(levels))  # no inf/NaN in the unused branch
    if scale_numel > 0:
        clip = _scaled_grad(clip, torch.where(quantized, torch.rsqrt(scale_numel * safe), torch.ones_like(safe)))
    y = torch.maximum(torch.minimum(x, clip), -clip) if signed else torch.minimum(torch.relu(x), clip)
    step = clip / safe
    return torch.where(quantized, _round_ste(y / step) * step, y)


def weight_fake_quant_traceable(
    w: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, scale_numel: int = 0
) -> torch.Tensor:
    """The reference weight quantizer with ``levels`` (``2**b - 1``) as a tensor, for ``torch.compile``."""
    quantized = levels > 0
    safe = torch.where(quantized, levels, torch.ones_like(levels))
    if scale_numel > 0:
        clip = _scaled_grad(clip, torch.rsqrt(scale_numel * torch.clamp((safe - 1) / 2, min=1)))
    half = (safe + 1) / 2
    step = 2 * clip / safe
    code = torch.clamp(_round_ste(w / step - 0.5), -half, half - 1)
    return torch.where(quantized, (code + 0.5) * step, w)


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def _scaled_grad(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    scaled = x * scale  # the value stays exactly x (see primitives.grad_scale)
    return x.detach() + (scaled - scaled.detach())


# ------------------------------------------------------------------ autograd functions
class _ActFakeQuant(torch.autograd.Function):
    # Kernels see flat, detached tensors: one compiled loop serves every layer's shape.
    @staticmethod
    def forward(ctx, x, clip, levels, signed, scale_numel, compiled):  # noqa: D102
        flat = x.detach().reshape(-1)
        ctx.save_for_backward(x, clip, levels)
        ctx.signed, ctx.scale_numel, ctx.compiled = signed, scale_numel, compiled
        return _kernel("act_forward", compiled)(flat, clip.detach(), levels, signed).view_as(x)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        x, clip, levels = ctx.saved_tensors
        grad_x, grad_clip = _kernel("act_backward", ctx.compiled)(
            grad.reshape(-1), x.detach().reshape(-1), clip.detach(), levels, ctx.signed, ctx.scale_numel)
        return grad_x.view_as(x), grad_clip, None, None, None, None


class _WeightFakeQuant(torch.autograd.Function):
    # Kernels see (clips, values per clip) matrices: one compiled loop per kind of clip.
    @staticmethod
    def forward(ctx, w, clip, levels, scale_numel, compiled):  # noqa: D102
        ctx.save_for_backward(w, clip, levels)
        ctx.scale_numel, ctx.compiled = scale_numel, compiled
        w2, clip2 = _as_matrix(w.detach(), clip.detach())
        return _kernel("weight_forward", compiled)(w2, clip2, levels).view_as(w)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        w, clip, levels = ctx.saved_tensors
        w2, clip2 = _as_matrix(w.detach(), clip.detach())
        grad_w, grad_clip = _kernel("weight_backward", ctx.compiled)(
            grad.reshape(w2.shape), w2, clip2, levels, ctx.scale_numel, ctx.needs_input_grad[1])
        return grad_w.view_as(w), None if grad_clip is None else grad_clip.view_as(clip), None, None, None


def _as_matrix(w: torch.Tensor, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` as ``(number of clips, values per clip)`` and ``clip`` as a column."""
    if clip.numel() not in (1, w.shape[0]):
        raise ValueError(f"a weight clip has one value or one per output channel, not {tuple(clip.shape)}")
    return w.reshape(clip.numel(), -1), clip.reshape(-1, 1)


def fake_quantize_act(
    x: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, signed: bool, scale_numel: int = 0,
    compiled: bool = False,
) -> torch.Tensor:
    """PACT activation fake-quantizer in one autograd node.

    Equals :func:`~speq_search.quant.primitives.fake_quantize_unsigned` (``signed=True``:
    ``fake_quantize_signed``) at ``levels`` codes (see :func:`act_levels`; ``0``: full
    precision). ``clip`` is 0-d. ``scale_numel > 0`` multiplies the clip's gradient by LSQ's
    ``1 / sqrt(scale_numel * levels)`` where the quantizer rounds. ``compiled``: run the
    :func:`compiled_kernels`.
    """
    return _ActFakeQuant.apply(x, clip, levels, signed, scale_numel, compiled)


def fake_quantize_weight_lsq(
    w: torch.Tensor, clip: torch.Tensor, levels: torch.Tensor, scale_numel: int = 0, compiled: bool = False
) -> torch.Tensor:
    """:func:`~speq_search.quant.primitives.fake_quantize_weight` in one autograd node.

    ``levels`` is ``2**b - 1`` (``0``: full precision, ``w`` unchanged). ``clip`` holds one
    value, or one per output channel (shape ``(C, 1, ...)``). ``scale_numel > 0`` multiplies
    the clip's gradient by ``1 / sqrt(scale_numel * Qp)``. ``compiled``: run the
    :func:`compiled_kernels`.
    """
    return _WeightFakeQuant.apply(w, clip, levels, scale_numel, compiled)
