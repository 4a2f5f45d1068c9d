"""GSoP-Net1: ResNet-50 with channel GSoP attention in the last bottleneck of every stage.

Paper: Gao, Xie, Wang, Li, "Global Second-order Pooling Convolutional Networks", CVPR 2019,
https://arxiv.org/abs/1811.12006. Official code: ZilinGao/Global-Second-order-Pooling-Convolutional-Networks,
`torchvision/models/resnet.py` (`resnet50(att_position=..., att_dim=128, GSoP_mode=1)`, with `main.py` placing
attention '1' on the last block of each stage).

Layout, as the authors' network:
- torchvision ResNet-50 names, but layer4 keeps stride 1 (a 14 x 14 map at 224 x 224; the authors pool it with
  AvgPool2d(14), here a mean over H and W, equal at 224 and valid at any size);
- in the last Bottleneck of each stage the GSoP modules sit directly on the block (`layerN.K.conv_for_DR`,
  `bn_for_DR`, `row_bn`, `row_conv_group`, `fc_adapt_channels`): after bn3, `out = out * gsop_attention(out)`,
  then the residual add and ReLU. `conv_for_DR` has stride 2 in stages whose planes <= 64 (layer1), else 1.

The block is deploykit.blocks.gsop (`GSoP` reference, `GSoPSafe` export-safe twin). Its submodules are adopted
by the Bottleneck under their own names, so the keys are the authors' without a `gsop.` prefix; the block object
itself computes with those same modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deploykit import blocks
from deploykit.networks._resnet import ResNetBottleneck, ResNetSkeleton


def adopt_submodules(owner: nn.Module, block: nn.Module) -> None:
    """Register `block`'s stateful children on `owner` under their names (keys without a prefix)."""
    for name, child in block.named_children():
        if any(True for _ in child.parameters()) or any(True for _ in child.buffers()):
            owner.add_module(name, child)


class GSoPBottleneck(ResNetBottleneck):
    """torchvision Bottleneck, optionally with channel GSoP (the authors' attention '1') before the add.

    Args:
        inplanes: input channels.
        planes: bottleneck width (output planes * 4).
        stride: stride of the 3x3 conv.
        downsample: shortcut module when shapes change.
        attention: add GSoP to this block.
        att_dim: GSoP's reduced dimension d.
        variant: "reference" or "safe" GSoP.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 attention: bool = False, att_dim: int = 128, variant: str = "reference"):
        super().__init__(inplanes, planes, stride, downsample)
        gsop = None
        if attention:
            # The authors' rule, in the Bottleneck's own terms: stride 2 when planes <= 64.
            gsop = blocks.create("gsop", variant, channels=planes * 4, att_dim=att_dim,
                                 dr_stride=2 if planes <= 64 else 1)
            adopt_submodules(self, gsop)
        # Not registered as a child: its modules are registered above, under the authors' names.
        object.__setattr__(self, "gsop", gsop)

    def attend(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.gsop is None else self.gsop(out)


class GSoPNet1(ResNetSkeleton):
    """GSoP-Net1 on a ResNet backbone.

    Args:
        layers: bottlenecks per stage ((3, 4, 6, 3) for ResNet-50).
        num_classes: classifier outputs.
        variant: "reference" or "safe" GSoP blocks.
        widths: stage widths.
        att_dim: GSoP's reduced dimension (128 in the paper).
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, variant: str = "reference",
                 widths: Sequence[int] = (64, 128, 256, 512), att_dim: int = 128):
        layers = tuple(layers)

        def block_fn(inplanes, planes, stride, downsample, stage, index):
            last = index == layers[stage] - 1
            return GSoPBottleneck(inplanes, planes, stride, downsample, attention=last, att_dim=att_dim,
                                  variant=variant)

        super().__init__(block_fn, layers, 4, widths=widths, strides=(1, 2, 2, 1), num_classes=num_classes)


def gsop_resnet50(variant: str = "reference", **kwargs) -> GSoPNet1:
    """GSoP-Net1 (ResNet-50), att_dim 128."""
    return GSoPNet1(**{"layers": (3, 4, 6, 3), **kwargs}, variant=variant)
