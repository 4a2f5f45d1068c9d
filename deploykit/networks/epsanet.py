"""EPSANet-50: ResNet-50 whose bottleneck 3x3 convolution is a Pyramid Squeeze Attention (PSA) module.

Paper: Zhang, Zu, Lu, Zou, Meng, "EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional Neural
Network", arXiv 2021, https://arxiv.org/abs/2105.14447. Official code: murufeng/EPSANet, `models/epsanet.py`
(`epsanet50()` = `EPSANet(EPSABlock, [3, 4, 6, 3])`).

Layout, as the authors' network: torchvision ResNet-50 names; each `EPSABlock` is conv1 (1x1) -> bn1 -> ReLU ->
`conv2` = PSAModule(planes, planes, stride, kernels (3, 5, 7, 9), groups (1, 4, 8, 16)) -> bn2 -> ReLU ->
conv3 (1x1, x4) -> bn3 -> add -> ReLU. Keys `layerN.i.conv2.conv_1..4.weight`, `layerN.i.conv2.se.fc1/fc2.*`.

Only the "small" network is built: it is the one the official code defines and its count matches the published
22.56 M. The "large" network (27.90 M) is described in the paper only by its branch groups (32, 32, 32, 32),
which the official widths cannot take (planes / 4 = 16 output channels in layer1); no layout we could derive from
the official code reproduces 27.90 M, so it is not registered rather than guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from deploykit import blocks
from deploykit.networks._resnet import ResNetBottleneck, ResNetSkeleton

SMALL_GROUPS = (1, 4, 8, 16)
KERNELS = (3, 5, 7, 9)


class EPSABlock(ResNetBottleneck):
    """Bottleneck with a PSA module as `conv2` (keys as the authors' EPSABlock).

    Args:
        inplanes: input channels.
        planes: bottleneck width; output planes * 4.
        stride: stride of the PSA convolutions.
        downsample: shortcut module when shapes change.
        conv_groups: groups of the four PSA branches.
        variant: "reference" or "safe" PSA.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 conv_groups: Sequence[int] = SMALL_GROUPS, variant: str = "reference"):
        def psa() -> nn.Module:
            return blocks.create("psa", variant, inplans=planes, planes=planes, stride=stride,
                                 conv_kernels=KERNELS, conv_groups=tuple(conv_groups))

        super().__init__(inplanes, planes, stride, downsample, conv2=psa)


class EPSANet(ResNetSkeleton):
    """EPSANet on a ResNet backbone.

    Args:
        layers: blocks per stage ((3, 4, 6, 3) for EPSANet-50).
        num_classes: classifier outputs.
        variant: "reference" or "safe" PSA modules.
        widths: stage widths; PSA needs planes >= 64 (its SE reduces planes / 4 by 16).
        conv_groups: PSA branch groups.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, variant: str = "reference",
                 widths: Sequence[int] = (64, 128, 256, 512), conv_groups: Sequence[int] = SMALL_GROUPS):
        def block_fn(inplanes, planes, stride, downsample, stage, index):
            return EPSABlock(inplanes, planes, stride, downsample, conv_groups, variant)

        super().__init__(block_fn, tuple(layers), 4, widths=widths, num_classes=num_classes)


def epsanet50_small(variant: str = "reference", **kwargs) -> EPSANet:
    """EPSANet-50 (Small): the official `epsanet50()`."""
    return EPSANet(**{"layers": (3, 4, 6, 3), **kwargs}, variant=variant)
