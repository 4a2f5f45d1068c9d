"""ResNet with CBAM in every residual block, or BAM between stages (ResidualNet of the CBAM/BAM authors).

Papers: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521; Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018,
https://arxiv.org/abs/1807.06514. Official code: Jongchan/attention-module, `MODELS/model_resnet.py`
(`ResidualNet("ImageNet", depth, num_classes, att_type)`).

Layout, as the authors' network (and so their checkpoints' keys):
- CBAM: each BasicBlock / Bottleneck holds `cbam` = CBAM(planes * expansion, 16), applied to the block's last
  BN output before the residual add (`layerN.i.cbam.ChannelGate.mlp.*`, `...SpatialGate.spatial.*`);
- BAM: `bam1`, `bam2`, `bam3` = BAM(64/128/256 * expansion) applied to the outputs of layer1..layer3;
- everything else is the torchvision ResNet names (`conv1`, `bn1`, `layerN.i.*`, `downsample.0/1`, `fc`).

The `reference` variant uses the faithful blocks (deploykit.blocks cbam/bam `reference`), the `safe` variant their
export-safe twins; the state dicts are identical. The network-level code (see `_resnet.py`) has no export hazard
of its own. The authors' init (BN weights of CBAM's spatial gate set to 0) only matters for training and is not
reproduced: weights come from a checkpoint or from deploykit's seeded verification weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deploykit import blocks
from deploykit.networks._resnet import ResNetBottleneck, ResNetSkeleton, conv3x3

DEPTHS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
          101: ("bottleneck", (3, 4, 23, 3))}


class BasicBlock(nn.Module):
    """Two 3x3 convs; optional CBAM before the residual add (keys as the authors' BasicBlock)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cbam: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.cbam = cbam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.cbam is not None:
            out = self.cbam(out)
        return self.relu(out + residual)


class Bottleneck(ResNetBottleneck):
    """1x1 -> 3x3 (stride) -> 1x1 (x4); optional CBAM before the residual add (keys as the authors' Bottleneck)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cbam: nn.Module | None = None):
        super().__init__(inplanes, planes, stride, downsample)
        self.cbam = cbam

    def attend(self, out: torch.Tensor) -> torch.Tensor:
        return out if self.cbam is None else self.cbam(out)


class ResidualNet(ResNetSkeleton):
    """ResNet-18/34/50/101 with CBAM per block or BAM after layer1-3.

    Args:
        depth: 18, 34, 50 or 101.
        att_type: "CBAM", "BAM" or None (plain ResNet), as the authors' `att_type`.
        num_classes: classifier outputs.
        variant: "reference" or "safe" blocks.
        widths: stage widths (the papers' 64, 128, 256, 512; smaller ones make fast test networks).
        layers: blocks per stage; defaults to the depth's.
        reduction: CBAM / BAM reduction ratio (16 in the papers).
    """

    def __init__(self, depth: int = 50, att_type: str | None = "CBAM", num_classes: int = 1000,
                 variant: str = "reference", widths: Sequence[int] = (64, 128, 256, 512),
                 layers: Sequence[int] | None = None, reduction: int = 16):
        if depth not in DEPTHS:
            raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
        if att_type not in ("CBAM", "BAM", None):
            raise ValueError(f"att_type must be 'CBAM', 'BAM' or None, got {att_type!r}")
        kind, default_layers = DEPTHS[depth]
        block_cls = BasicBlock if kind == "basic" else Bottleneck
        expansion = block_cls.expansion

        def block_fn(inplanes, planes, stride, downsample, stage, index):
            cbam = None
            if att_type == "CBAM":
                cbam = blocks.create("cbam", variant, gate_channels=planes * expansion, reduction_ratio=reduction)
            return block_cls(inplanes, planes, stride, downsample, cbam)

        super().__init__(block_fn, tuple(layers or default_layers), expansion, widths=widths, num_classes=num_classes)
        self.att_type = att_type
        if att_type == "BAM":
            for i in range(3):
                self.add_module(f"bam{i + 1}", blocks.create("bam", variant, gate_channel=widths[i] * expansion,
                                                             reduction_ratio=reduction))

    def after_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        if self.att_type == "BAM" and index <= 3:
            return getattr(self, f"bam{index}")(x)
        return x


def resnet18_cbam(variant: str = "reference", **kwargs) -> ResidualNet:
    """ResNet-18 with CBAM in every BasicBlock."""
    return ResidualNet(18, "CBAM", variant=variant, **kwargs)


def resnet50_cbam(variant: str = "reference", **kwargs) -> ResidualNet:
    """ResNet-50 with CBAM in every Bottleneck."""
    return ResidualNet(50, "CBAM", variant=variant, **kwargs)


def resnet18_bam(variant: str = "reference", **kwargs) -> ResidualNet:
    """ResNet-18 with BAM after layer1, layer2 and layer3."""
    return ResidualNet(18, "BAM", variant=variant, **kwargs)


def resnet50_bam(variant: str = "reference", **kwargs) -> ResidualNet:
    """ResNet-50 with BAM after layer1, layer2 and layer3."""
    return ResidualNet(50, "BAM", variant=variant, **kwargs)
