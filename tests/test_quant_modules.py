from __future__ import annotations

import pytest
import torch
from torch import nn

from speq_search import QuantConv2d, QuantLinear, create_model, layer_bits, quantize_model
from speq_search.errors import ConfigError
from speq_search.quant import ActQuantizer, act_quantizers, calibrating


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 3))


def test_quantize_model_swaps_layers_and_shares_parameters():
    net = _net()
    weight = net[2].weight
    quantize_model(net, w_bits=4, a_bits=3)
    assert isinstance(net[0], QuantConv2d) and isinstance(net[2], QuantConv2d) and isinstance(net[5], QuantLinear)
    assert net[2].weight is weight
    assert layer_bits(net) == {
        "0": {"w_bits": 8, "a_bits": 8},  # first layer: 8-bit weights, 8-bit signed input
        "2": {"w_bits": 4, "a_bits": 3},
        "5": {"w_bits": 8, "a_bits": 3},  # last layer: 8-bit weights, target input bits
    }
    assert net[0].act_quant.signed and not net[2].act_quant.signed


def test_overrides_by_pattern_win_over_first_last_rule():
    net = create_model("resnet20", num_classes=10, in_channels=3, width=0.25)
    quantize_model(net, w_bits=2, a_bits=2, overrides={"layer3.*": {"w_bits": 4}, "fc": {"w_bits": 3, "a_bits": 6}})
    bits = layer_bits(net)
    assert bits["layer3.0.conv1"] == {"w_bits": 4, "a_bits": 2}
    assert bits["layer2.0.conv1"] == {"w_bits": 2, "a_bits": 2}
    assert bits["fc"] == {"w_bits": 3, "a_bits": 6}
    assert bits["conv1"] == {"w_bits": 8, "a_bits": 8}


def test_first_last_rule_can_be_switched_off():
    net = quantize_model(_net(), w_bits=3, a_bits=3, first_last_bits=None, input_bits=32)
    assert layer_bits(net)["0"] == {"w_bits": 3, "a_bits": 32}
    assert layer_bits(net)["5"]["w_bits"] == 3


@pytest.mark.parametrize("overrides, field", [
    ({"nope*": {"w_bits": 4}}, "overrides"),
    ({"2": {"w_bits": 9}}, "overrides.2.w_bits"),
    ({"2": {"bits": 4}}, "overrides.2"),
])
def test_bad_overrides_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        quantize_model(_net(), overrides=overrides)
    assert err.value.field == field


def test_change_of_bits_takes_effect_on_next_forward():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(16, 4), w_bits=4, a_bits=2)
    layer.act_quant.clip.data.fill_(2.0)
    x = torch.rand(8, 16) * 3
    y2 = layer(x)
    layer.act_quant.bits = 8
    y8 = layer(x)
    layer.act_quant.bits = 2
    assert not torch.allclose(y2, y8)
    assert torch.equal(layer(x), y2)
    w2 = layer.quantized_weight()
    layer.weight_quant.bits = 2
    assert len(torch.unique(layer.quantized_weight()[0])) <= 4
    assert not torch.equal(layer.quantized_weight(), w2)


def test_quantized_weight_levels_per_output_channel():
    conv = QuantConv2d.from_float(nn.Conv2d(3, 6, 3), w_bits=3, a_bits=4)
    qw = conv.quantized_weight()
    for c in range(6):
        assert len(torch.unique(qw[c])) <= 8


def test_sawb_weight_quantizer_has_no_learned_clip():
    conv = QuantConv2d.from_float(nn.Conv2d(3, 6, 3), w_bits=2, a_bits=4, weight_quantizer="sawb")
    assert conv.weight_quant.clip is None
    assert len(torch.unique(conv.quantized_weight()[0])) <= 4


def test_calibration_sets_activation_clips_from_data():
    net = quantize_model(_net(), w_bits=4, a_bits=2)
    before = [q.clip.item() for q in act_quantizers(net)]
    with calibrating(net):
        net(torch.randn(32, 1, 6, 6))
    after = [q.clip.item() for q in act_quantizers(net)]
    assert all(a != b for a, b in zip(after, before))
    assert all(a > 0 for a in after)


# ---------------------------------------------------------------- weight quantizers: a registry and a grid
def test_unknown_weight_quantizer_is_refused_where_the_model_is_quantized():
    from speq_search.config import QuantConfig

    cfg = QuantConfig(weight_quantizer="lsqq")  # config is data: the name is looked up by whoever builds
    with pytest.raises(ConfigError) as err:
        quantize_model(_net(), cfg)
    assert err.value.field == "quant.weight_quantizer" and "lsq | sawb" in err.value.accepted
    assert "did you mean lsq" in err.value.accepted
    with pytest.raises(ConfigError) as err:
        quantize_model(_net(), weight_quantizer="bogus")  # keywords: named as the caller named it
    assert err.value.field == "weight_quantizer"


def test_train_with_an_unknown_weight_quantizer_exits_2_before_writing(tmp_path, capsys):
    from speq_search.cli import main

    assert main(["train", "--weight-quantizer", "bogus", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error: quant.weight_quantizer:" in err and "lsq | sawb" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("where, space, field", [
    ("train", {"train": {"quant": {"weight_quantizer": "bogus"}}}, "train.quant.weight_quantizer"),
    ("params", {"params": {"weight_quantizer": {"type": "choice", "values": ["lsq", "bogus"]}}},
     "params.weight_quantizer.values[1]"),
])
def test_a_space_names_an_unknown_weight_quantizer_when_parsed(where, space, field):
    from speq_search.space import parse_space

    raw = {"train": {}, "params": {"w_bits": {"type": "choice", "values": [2, 4]}},
           "objectives": [{"metric": "val_acc", "mode": "max"}], **space}
    with pytest.raises(ConfigError) as err:
        parse_space(raw)
    assert err.value.field == field and "lsq | sawb" in err.value.accepted


def test_the_registry_of_weight_quantizers_loads_no_torch():
    import subprocess
    import sys

    code = ("import sys; from speq_search.quant.scaling import WEIGHT_QUANTIZERS as W; "
            "print(W.choices(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["lsq", "|", "sawb", "False"]


def test_a_new_weight_quantizer_is_one_class_and_its_registration():
    from speq_search.quant import WeightScaling, register_weight_quantizer
    from speq_search.quant.primitives import fake_quantize_weight
    from speq_search.quant.scaling import WEIGHT_QUANTIZERS

    @register_weight_quantizer("absmax-test")
    class AbsMax(WeightScaling):
        """The largest magnitude per output channel."""

        def clip(self, q, w):
            return w.detach().abs().amax(dim=q.reduce_dims, keepdim=True)

    try:
        net = quantize_model(_net(), w_bits=3, a_bits=4, weight_quantizer="absmax-test")
        layer = net[2]
        w = layer.weight
        expected = fake_quantize_weight(w, w.abs().amax(dim=(1, 2, 3), keepdim=True), 3)
        assert torch.equal(layer.quantized_weight(), expected)
        q = layer.weight_quant.quantize(w)
        assert torch.equal((q.codes - q.zero_point) * q.scale, expected)
        assert WEIGHT_QUANTIZERS.describe()["absmax-test"] == "The largest magnitude per output channel."
    finally:
        WEIGHT_QUANTIZERS.unregister("absmax-test")


@pytest.mark.parametrize("weight_quantizer", ["lsq", "sawb"])
@pytest.mark.parametrize("per_channel", [True, False])
@pytest.mark.parametrize("bits", [2, 3, 5, 8])
def test_quantize_returns_the_codes_and_scale_the_forward_used(weight_quantizer, per_channel, bits):
    torch.manual_seed(0)
    conv = QuantConv2d.from_float(nn.Conv2d(3, 6, 3), w_bits=bits, a_bits=4, weight_quantizer=weight_quantizer,
                                  per_channel=per_channel)
    q = conv.weight_quant.quantize(conv.weight)
    assert q.bits == bits and q.zero_point == -0.5  # the mid-point grid: w = (k + 1/2) * step
    assert torch.equal(q.codes, q.codes.round()) and q.codes.min() >= -(2 ** (bits - 1))
    assert q.codes.max() <= 2 ** (bits - 1) - 1
    assert q.scale.shape == ((6, 1, 1, 1) if per_channel else (1, 1, 1, 1))
    assert torch.equal((q.codes - q.zero_point) * q.scale, conv.quantized_weight())


# ---------------------------------------------------------------- per-bit-width scales
def test_without_per_bit_scales_the_state_dict_is_as_before():
    net = quantize_model(_net(), w_bits=4, a_bits=3)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "0.weight": (4, 1, 3, 3), "0.bias": (4,), "0.weight_quant.clip": (4, 1, 1, 1), "0.act_quant.clip": (),
        "2.weight": (4, 4, 3, 3), "2.bias": (4,), "2.weight_quant.clip": (4, 1, 1, 1), "2.act_quant.clip": (),
        "5.weight": (3, 16), "5.bias": (3,), "5.weight_quant.clip": (3, 1), "5.act_quant.clip": (),
    }
    sawb = quantize_model(_net(), w_bits=4, a_bits=3, weight_quantizer="sawb")
    assert "2.weight_quant.clip" not in sawb.state_dict() and "2.act_quant.clip" in sawb.state_dict()


def test_per_bit_scales_keep_a_clip_per_bit_width_initialised_for_it():
    from speq_search.quant.primitives import PER_BIT, fake_quantize_weight, mse_optimal_clip

    torch.manual_seed(0)
    net = quantize_model(_net(), w_bits=4, a_bits=3, per_bit_scales=True)
    wq, aq = net[2].weight_quant, net[2].act_quant
    assert wq.clip.shape == (7, 4, 1, 1, 1) and aq.clip.shape == (7,) and PER_BIT == (2, 3, 4, 5, 6, 7, 8)
    for i, bits in enumerate(PER_BIT):  # each started at its own bit-width's MSE-optimal clip
        expected = mse_optimal_clip(net[2].weight, fake_quantize_weight, bits, dim=(1, 2, 3))
        assert torch.equal(wq.clip[i], expected)
    assert len(set(wq.clip[:, 0].flatten().tolist())) > 1  # the bit-widths' clips differ
    with calibrating(net):
        net(torch.randn(32, 1, 6, 6))
    assert len(set(aq.clip.tolist())) > 1 and all(c > 0 for c in aq.clip.tolist())


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_switching_bits_with_per_bit_scales_uses_that_bit_widths_clip(bits):
    from speq_search.quant.primitives import PER_BIT, fake_quantize_unsigned, fake_quantize_weight

    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(16, 4), w_bits=4, a_bits=4, per_bit_scales=True)
    layer.act_quant.clip.data = torch.linspace(1.0, 4.0, 7)
    layer.weight_quant.bits = bits
    layer.act_quant.bits = bits
    i = PER_BIT.index(bits)
    assert torch.equal(layer.quantized_weight(), fake_quantize_weight(layer.weight, layer.weight_quant.clip[i], bits))
    x = torch.rand(8, 16) * 5
    assert torch.equal(layer.act_quant(x), fake_quantize_unsigned(x, layer.act_quant.clip[i], bits))
    q = layer.weight_quant.quantize(layer.weight)
    assert torch.equal(q.scale, 2 * layer.weight_quant.clip[i] / (2**bits - 1))  # the step of that clip
    layer.act_quant.bits = 32  # clip only, with the 8-bit clip
    assert torch.equal(layer.act_quant(x), x.clamp(0, float(layer.act_quant.clip[-1].detach())))


def test_gradients_reach_only_the_active_bit_widths_clip():
    torch.manual_seed(0)
    layer = QuantLinear.from_float(nn.Linear(16, 4), w_bits=3, a_bits=3, per_bit_scales=True)
    layer.act_quant.clip.data.fill_(1.0)  # some inputs are clipped: PACT's gradient is not zero
    for bits, active in ((3, 1), (6, 4)):
        layer.weight_quant.bits = layer.act_quant.bits = bits
        layer.zero_grad()
        layer(torch.rand(8, 16) * 3).pow(2).sum().backward()
        for clip in (layer.weight_quant.clip, layer.act_quant.clip):
            per_bit = clip.grad.reshape(7, -1).abs().sum(dim=1)
            assert per_bit[active] > 0
            assert torch.all(per_bit[torch.arange(7) != active] == 0)


def test_per_bit_scales_is_a_checked_config_flag():
    from speq_search.config import QuantConfig, TrainConfig

    with pytest.raises(ConfigError, match="quant.per_bit_scales"):
        QuantConfig(per_bit_scales="yes")
    cfg = TrainConfig().replace(**{"quant.per_bit_scales": True})
    assert TrainConfig.from_dict(cfg.to_dict()).quant.per_bit_scales is True


def test_calibration_subsamples_a_tensor_of_more_than_2_pow_24_values():
    # A mobilenetv2 layer on 256 32x32 images: the last index of a float32 linspace rounded past the end.
    q = ActQuantizer(4)
    q.calibrating = True
    with torch.no_grad():
        q(torch.rand(18_874_368) * 3)
    assert 0 < q.clip.item() <= 3
