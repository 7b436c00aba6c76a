from __future__ import annotations

import pytest
import torch

from speq_search.errors import ConfigError
from speq_search.quant.primitives import (
    check_bits,
    fake_quantize_signed,
    fake_quantize_unsigned,
    fake_quantize_weight,
    mse_optimal_clip,
    round_ste,
)
from speq_search.quant.sawb import sawb_clip


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_unsigned_matches_torch_fake_quantize(bits):
    x = torch.randn(4096) * 3
    clip = torch.tensor(2.5)
    ours = fake_quantize_unsigned(x, clip, bits)
    scale = float(clip) / (2**bits - 1)
    ref = torch.fake_quantize_per_tensor_affine(x.clamp(0, 2.5), scale, 0, 0, 2**bits - 1)
    # "up to ties": torch multiplies by 1/scale where we divide by scale
    assert (ours - ref).abs().max() <= scale * 1.0001
    assert (ours != ref).float().mean() < 0.01


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_signed_matches_torch_fake_quantize(bits):
    x = torch.randn(4096) * 2
    qmax = 2 ** (bits - 1) - 1
    ours = fake_quantize_signed(x, torch.tensor(1.5), bits)
    ref = torch.fake_quantize_per_tensor_affine(x.clamp(-1.5, 1.5), 1.5 / qmax, 0, -qmax, qmax)
    assert (ours != ref).float().mean() < 0.01
    assert (ours - ref).abs().max() <= 1.5 / qmax * 1.0001
    assert ours.min() < 0  # a signed quantizer is never clipped at zero


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_unsigned_output_lies_on_levels(bits):
    x = torch.linspace(-1, 5, 1001)
    y = fake_quantize_unsigned(x, torch.tensor(3.0), bits)
    levels = torch.arange(2**bits) * 3.0 / (2**bits - 1)
    assert torch.isclose(y[:, None], levels[None, :], atol=1e-5).any(dim=1).all()
    assert len(torch.unique(y)) == 2**bits


def test_32_bits_clips_but_does_not_round():
    x = torch.linspace(-2, 6, 999)
    y = fake_quantize_unsigned(x, torch.tensor(4.0), 32)
    assert torch.equal(y, x.clamp(0, 4.0))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_weight_quantizer_uses_at_most_2_pow_bits_values_per_channel(bits):
    w = torch.randn(8, 50)
    clip = w.abs().amax(dim=1, keepdim=True) * 0.7
    q = fake_quantize_weight(w, clip, bits)
    for row, c in zip(q, clip):
        assert len(torch.unique(row)) <= 2**bits
        assert row.abs().max() <= c + 1e-6  # symmetric, within [-clip, clip]
    if bits == 2:  # the four mid-points: +-clip/3 and +-clip
        grid = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
        ratios = q / clip
        assert torch.isclose(ratios[..., None], grid, atol=1e-5).any(dim=-1).all()


def test_round_ste_gradient_passes_straight_through():
    x = torch.tensor([0.2, 0.7, 1.4, -2.6], requires_grad=True)
    round_ste(x).sum().backward()
    assert torch.equal(x.grad, torch.ones(4))


def test_activation_gradients_straight_through_inside_and_to_clip_outside():
    x = torch.tensor([-1.0, 0.3, 0.9, 5.0], requires_grad=True)
    clip = torch.tensor(2.0, requires_grad=True)
    fake_quantize_unsigned(x, clip, 2).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]  # STE inside the clip, zero outside
    assert clip.grad is not None and clip.grad.item() != 0.0  # PACT/LSQ gradient reaches the clip


def test_weight_gradient_straight_through_within_range():
    w = torch.tensor([[-0.5, 0.1, 0.4, 3.0]], requires_grad=True)
    fake_quantize_weight(w, torch.tensor([[1.0]]), 2).sum().backward()
    assert w.grad.tolist() == [[1.0, 1.0, 1.0, 0.0]]


@pytest.mark.parametrize("bad", [0, 1, 9, 16, 33, -2, 2.5, True, "4"])
def test_unsupported_bits_are_refused(bad):
    with pytest.raises(ConfigError, match="w_bits"):
        check_bits(bad, "w_bits")


def test_mse_optimal_clip_beats_max_at_low_bits():
    x = torch.randn(20000)
    best = mse_optimal_clip(x, fake_quantize_signed, 2)
    top = x.abs().max()
    err = lambda c: (fake_quantize_signed(x, c, 2) - x).pow(2).mean()  # noqa: E731
    assert best < top
    assert err(best) < err(top)


def test_sawb_clip_per_channel_shape_and_scale():
    w = torch.randn(6, 3, 3, 3)
    clip = sawb_clip(w, 2, (1, 2, 3))
    assert clip.shape == (6, 1, 1, 1)
    expected = 3.212 * w[0].pow(2).mean().sqrt() - 2.178 * w[0].abs().mean()
    assert torch.isclose(clip[0, 0, 0, 0], expected, rtol=1e-5)
