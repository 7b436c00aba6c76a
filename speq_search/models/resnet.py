"""ResNet-20 for CIFAR (He et al., 2016, section 4.2), with width and depth multipliers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.models._registry import Dim, register_model, scaled

STAGE_CHANNELS = (16, 32, 64)  # ResNet-20's three stages, before the width multiplier


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a shortcut (a 1x1 conv-BN projection when shapes change)."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of basic blocks (strides 1, 2, 2), global pool, linear."""

    def __init__(self, in_channels: int, stage_channels: Sequence[int], blocks: Sequence[int], num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stage_channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stage_channels[0])
        stages = []
        prev = stage_channels[0]
        for i, (c, n) in enumerate(zip(stage_channels, blocks)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(prev, c, 2 if (i > 0 and j == 0) else 1))
                prev = c
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(prev, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register_model("resnet20", "CIFAR ResNet-20 (16-32-64 x width); blocks=(3, 3, 3) sets the depth", in_channels=3,
                input_size=32, dims={"depth": Dim("blocks", "per_stage", stages=len(STAGE_CHANNELS),
                                                  description="basic blocks in each stage")})
def resnet20(num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
             blocks: Sequence[int] = (3, 3, 3)) -> nn.Module:
    """ResNet-20 of He et al. for 32x32 images."""
    if len(blocks) != len(STAGE_CHANNELS) or any(int(b) < 1 for b in blocks):
        from speq_search.errors import ConfigError

        raise ConfigError("blocks", blocks, "three integers >= 1 (blocks per stage)")
    return CifarResNet(in_channels, [scaled(c, width) for c in STAGE_CHANNELS], [int(b) for b in blocks], num_classes)
