"""MobileNetV2 for 32x32 images (Sandler et al., 2018), CIFAR variant with fewer strides."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speq_search.models._registry import Dim, register_model, scaled

# (expansion, channels, blocks, stride); the CIFAR variant keeps strides 1 in the first stages.
_CIFAR_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 linear projection; residual when shapes match."""

    def __init__(self, in_planes: int, planes: int, expansion: float, stride: int) -> None:
        super().__init__()
        hidden = max(1, int(round(in_planes * expansion)))
        self.use_residual = stride == 1 and in_planes == planes
        self.expand = None
        if hidden != in_planes:
            self.expand = nn.Sequential(nn.Conv2d(in_planes, hidden, 1, bias=False), nn.BatchNorm2d(hidden))
        self.depthwise = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn_dw = nn.BatchNorm2d(hidden)
        self.project = nn.Conv2d(hidden, planes, 1, bias=False)
        self.bn_proj = nn.BatchNorm2d(planes)

    def first_conv_name(self) -> str:
        return "expand.0" if self.expand is not None else "depthwise"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu6(self.expand(x)) if self.expand is not None else x
        out = F.relu6(self.bn_dw(self.depthwise(out)))
        out = self.bn_proj(self.project(out))
        return out + x if self.use_residual else out


class CifarMobileNetV2(nn.Module):
    """Stem conv, inverted residual blocks, 1x1 conv to 1280 x width, global pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, width: float, expansion: float | None) -> None:
        super().__init__()
        stem = scaled(32, width)
        self.conv1 = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        blocks = []
        prev = stem
        for t, c, n, s in _CIFAR_SETTINGS:
            out = scaled(c, width)
            for j in range(n):
                blocks.append(InvertedResidual(prev, out, t if expansion is None or t == 1 else expansion, s if j == 0 else 1))
                prev = out
        self.blocks = nn.Sequential(*blocks)
        last = scaled(1280, max(width, 1.0))
        self.conv2 = nn.Conv2d(prev, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.fc = nn.Linear(last, num_classes)
        # A block's input is the linear output of the block before (it can be negative), so
        # its first conv needs a signed activation quantizer; so does the final 1x1 conv.
        self.signed_input_layers = tuple(
            f"blocks.{i}.{b.first_conv_name()}" for i, b in enumerate(self.blocks) if i > 0
        ) + ("conv2",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = F.relu6(self.bn1(self.conv1(x)))
        out = self.blocks(out)
        out = F.relu6(self.bn2(self.conv2(out)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@register_model("mobilenetv2", "CIFAR MobileNetV2 (depthwise convs); expansion=6 sets the expansion ratio",
                in_channels=3, input_size=32,
                dims={"expansion": Dim("expansion", description="expansion ratio of the inverted residuals")})
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0, expansion: float | None = None) -> nn.Module:
    """MobileNetV2 for 32x32 images."""
    if expansion is not None and not 1 <= float(expansion) <= 8:
        from speq_search.errors import ConfigError

        raise ConfigError("expansion", expansion, "a ratio from 1 to 8")
    return CifarMobileNetV2(in_channels, num_classes, width, None if expansion is None else float(expansion))
