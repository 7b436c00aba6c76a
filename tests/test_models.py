from __future__ import annotations

import pytest
import torch

from speq_search import create_model, list_models
from speq_search.errors import ConfigError
from speq_search.quant import quantizable_layers


@pytest.mark.parametrize("name, in_ch, size", [
    ("mlp", 1, 8), ("cnn-small", 1, 8), ("cnn-small", 1, 28), ("resnet20", 3, 32), ("mobilenetv2", 3, 32),
])
def test_models_give_logits(name, in_ch, size):
    kwargs = {"input_size": size} if name == "mlp" else {}
    net = create_model(name, num_classes=7, in_channels=in_ch, width=0.5, **kwargs)
    assert net(torch.randn(2, in_ch, size, size)).shape == (2, 7)


def test_a_models_registration_gives_its_native_input():
    from speq_search.config import ModelConfig
    from speq_search.models import build_model

    assert create_model("resnet20").conv1.in_channels == 3 and create_model("cnn-small").features[0].in_channels == 1
    assert create_model("mobilenetv2", in_channels=1).conv1.in_channels == 1  # the data's shape wins
    mlp = build_model(ModelConfig(name="mlp"))  # no data shape: the registered 1 x 8 x 8
    assert mlp(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert build_model(ModelConfig(name="mlp"), input_size=28).features[1].in_features == 28 * 28


def test_width_scales_parameters():
    small = sum(p.numel() for p in create_model("cnn-small", width=0.5).parameters())
    big = sum(p.numel() for p in create_model("cnn-small", width=2.0).parameters())
    assert big > 8 * small


def test_resnet20_has_20_weighted_layers_without_projections():
    net = create_model("resnet20", in_channels=3)
    layers = [n for n, _ in quantizable_layers(net) if "shortcut" not in n]
    assert len(layers) == 20 and layers[0] == "conv1" and layers[-1] == "fc"


def test_resnet_depth_and_mobilenet_expansion():
    deeper = create_model("resnet20", in_channels=3, blocks=(5, 5, 5))
    assert len([n for n, _ in quantizable_layers(deeper) if "shortcut" not in n]) == 32
    slim = create_model("mobilenetv2", in_channels=3, expansion=2)
    assert slim.blocks[1].expand[0].out_channels == 32  # 16 channels x 2
    assert any(m.groups > 1 for m in slim.modules() if isinstance(m, torch.nn.Conv2d))


def test_mobilenet_marks_signed_inputs_after_linear_bottlenecks():
    net = create_model("mobilenetv2", in_channels=3, width=0.5)
    assert "blocks.1.expand.0" in net.signed_input_layers and "conv2" in net.signed_input_layers
    assert "blocks.0.depthwise" not in net.signed_input_layers


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ConfigError) as err:
        create_model("vgg")
    for name in list_models():
        assert name in str(err.value)


@pytest.mark.parametrize("kwargs, field", [({"width": 0}, "width"), ({"blocks": (3, 3)}, "blocks"), ({"depth": 3}, "model.resnet20")])
def test_bad_architecture_values(kwargs, field):
    with pytest.raises(ConfigError) as err:
        create_model("resnet20", **kwargs)
    assert err.value.field == field
