"""SA-ResNet-50: ResNet-50 with a Shuffle Attention layer in every bottleneck.

Paper: Zhang, Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021,
https://arxiv.org/abs/2102.00240. Official code: wofmanaf/SA-Net, `models/sa_resnet.py` (`sa_resnet50`).

Layout, as the authors' network: torchvision ResNet-50 names; each `SABottleneck` applies
`sa` = sa_layer(planes * 4, groups=64) to the bn3 output, then the residual add and ReLU. Keys
`layerN.i.sa.cweight/cbias/sweight/sbias`, `layerN.i.sa.gn.weight/bias`.

The `safe` variant uses deploykit's export-safe Shuffle Attention (per-channel gates and one constant Gather
instead of 5-D reshapes); the network code itself has no export hazard.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deploykit import blocks
from deploykit.networks._resnet import ResNetBottleneck, ResNetSkeleton


class SABottleneck(ResNetBottleneck):
    """torchvision Bottleneck with Shuffle Attention before the residual add (`sa` keys after bn3, as the
    authors' block).

    Args:
        inplanes: input channels.
        planes: bottleneck width; output planes * 4 (divisible by 2 * sa_groups).
        stride: stride of the 3x3 conv.
        downsample: shortcut module when shapes change.
        sa_groups: Shuffle Attention groups (64 in the paper).
        variant: "reference" or "safe" Shuffle Attention.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 sa_groups: int = 64, variant: str = "reference"):
        def sa() -> nn.Module:
            return blocks.create("shuffle", variant, channel=planes * 4, groups=sa_groups)

        super().__init__(inplanes, planes, stride, downsample, attention=("sa", sa))

    def attend(self, out: torch.Tensor) -> torch.Tensor:
        return self.sa(out)


class SANet(ResNetSkeleton):
    """SA-Net on a ResNet backbone.

    Args:
        layers: bottlenecks per stage ((3, 4, 6, 3) for SA-ResNet-50).
        num_classes: classifier outputs.
        variant: "reference" or "safe" Shuffle Attention.
        widths: stage widths.
        sa_groups: Shuffle Attention groups; widths[0] * 4 must be divisible by 2 * sa_groups.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, variant: str = "reference",
                 widths: Sequence[int] = (64, 128, 256, 512), sa_groups: int = 64):
        def block_fn(inplanes, planes, stride, downsample, stage, index):
            return SABottleneck(inplanes, planes, stride, downsample, sa_groups, variant)

        super().__init__(block_fn, tuple(layers), 4, widths=widths, num_classes=num_classes)


def sa_resnet50(variant: str = "reference", **kwargs) -> SANet:
    """SA-ResNet-50, Shuffle Attention with 64 groups."""
    return SANet(**{"layers": (3, 4, 6, 3), **kwargs}, variant=variant)
