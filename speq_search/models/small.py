"""Small models for 8x8 digits and 28x28 MNIST-like images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from speq_search.models._registry import Dim, register_model, scaled


class MLP(nn.Module):
    """Flatten, hidden layers (Linear, BatchNorm, ReLU), then a linear classifier."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, h, bias=False), nn.BatchNorm1d(h), nn.ReLU(inplace=True)]
            prev = h
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.features(x))


@register_model("mlp", "multi-layer perceptron; hidden=(256, 128) x width; input_size sets the image side",
                in_channels=1, input_size=8, dims={"hidden": Dim("hidden", "sizes", description="hidden layer sizes")})
def mlp(num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
        hidden: Sequence[int] = (256, 128), input_size: int = 8) -> nn.Module:
    """Multi-layer perceptron over flattened images."""
    return MLP(in_channels * input_size * input_size, [scaled(h, width) for h in hidden], num_classes)


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (2x2 max-pool after the first two), global pool, linear."""

    def __init__(self, in_channels: int, channels: Sequence[int], num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, c in enumerate(channels):
            layers += [nn.Conv2d(prev, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = c
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


@register_model("cnn-small", "3-stage CNN (32-64-128 x width) sized for 8x8 digits and 28x28 MNIST",
                in_channels=1, input_size=8, dims={"channels": Dim("channels", "sizes", description="stage widths")})
def cnn_small(num_classes: int = 10, in_channels: int = 1, width: float = 1.0,
              channels: Sequence[int] = (32, 64, 128)) -> nn.Module:
    """Small three-stage CNN."""
    return SmallCNN(in_channels, [scaled(c, width) for c in channels], num_classes)
