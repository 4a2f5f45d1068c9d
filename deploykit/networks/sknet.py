"""SKNet-50: ResNeXt-50 (32x4d) whose grouped 3x3 convolution is a Selective Kernel unit.

Paper: Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019, https://arxiv.org/abs/1903.06586 (Table 1:
SKNet-50 = ResNeXt-50 with SK[M=2, G=32, r=16] units, L = 32). The official code is Caffe (implus/SKNet).

Layout: the key layout of timm's `skresnext50_32x4d` (which timm documents as the paper's SKNet-50), so its
published weights load with strict keys:
- stem `conv1` (7x7 stride 2), `bn1`, max pool; `layer1..layer4` of (3, 4, 6, 3) bottlenecks; `fc`;
- bottleneck width = planes * 2 (cardinality 32 x 4 channels): `conv1` = 1x1 ConvBN + ReLU (`conv1.conv`,
  `conv1.bn`), `conv2` = the SK unit with the stage stride (deploykit block `sk`: `conv2.paths.{0,1}.*`,
  `conv2.attn.*`), `conv3` = 1x1 ConvBN to planes * 4 without activation, residual add, ReLU; the shortcut is
  `downsample.0/1` (1x1 conv with stride, BN).

The `safe` variant uses the export-safe SK twin; the network code has no export hazard of its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deploykit import blocks
from deploykit.networks._resnet import ResNetSkeleton


class ConvBN(nn.Module):
    """1x1 conv (no bias) -> BN, optionally ReLU; keys `conv.weight`, `bn.*` (timm ConvNormAct)."""

    def __init__(self, in_channels: int, out_channels: int, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.act else x


class SKBottleneck(nn.Module):
    """ResNeXt bottleneck with the SK unit as `conv2`.

    Args:
        inplanes: input channels.
        planes: stage planes; output planes * 4.
        stride: stride of the SK unit.
        downsample: shortcut module when shapes change.
        cardinality: groups of the SK branches (32).
        base_width: channels per group at planes 64 (4); width = planes * base_width / 64 * cardinality.
        variant: "reference" or "safe" SK unit.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int = 32, base_width: int = 4, variant: str = "reference"):
        super().__init__()
        width = (planes * base_width // 64) * cardinality
        self.conv1 = ConvBN(inplanes, width)
        self.conv2 = blocks.create("sk", variant, channels=width, groups=cardinality, stride=stride)
        self.conv3 = ConvBN(width, planes * 4, act=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class SKNet(ResNetSkeleton):
    """SKNet on a ResNeXt backbone.

    Args:
        layers: bottlenecks per stage ((3, 4, 6, 3) for SKNet-50).
        num_classes: classifier outputs.
        variant: "reference" or "safe" SK units.
        widths: stage planes (64, 128, 256, 512).
        cardinality: SK branch groups.
        base_width: channels per group at planes 64.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, variant: str = "reference",
                 widths: Sequence[int] = (64, 128, 256, 512), cardinality: int = 32, base_width: int = 4):
        def block_fn(inplanes, planes, stride, downsample, stage, index):
            return SKBottleneck(inplanes, planes, stride, downsample, cardinality, base_width, variant)

        super().__init__(block_fn, tuple(layers), 4, widths=widths, num_classes=num_classes)


def sknet50(variant: str = "reference", **kwargs) -> SKNet:
    """SKNet-50 (timm skresnext50_32x4d keys)."""
    return SKNet(**{"layers": (3, 4, 6, 3), **kwargs}, variant=variant)
