from __future__ import annotations

import pytest
import torch
from torch import nn

from speq_search import QuantConv2d, QuantLinear, create_model, layer_bits, quantize_model
from speq_search.errors import ConfigError
from speq_search.quant import act_quantizers, calibrating


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
