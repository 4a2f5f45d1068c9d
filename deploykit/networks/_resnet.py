"""The torchvision-style ResNet skeleton several attention papers built on.

`conv1` (7x7, stride 2) -> `bn1` -> ReLU -> `maxpool` (3x3, stride 2) -> `layer1..layer4` -> global average
pool -> `fc`. The attention papers change the residual block (and BAM adds modules between stages); they keep
these top-level names, so a network built here with the papers' blocks has the authors' checkpoint keys.

The global pool is `mean` over H and W in both variants. The authors wrote it as `AvgPool2d(7)` (ResNet-CBAM,
SE-ResNet), `AvgPool2d(14)` (GSoP-Net1) or `AdaptiveAvgPool2d(1)`: identical at the 224 x 224 input they
trained on, while the fixed windows fail (or pool a corner) at any other size. The mean gives (B, C) directly,
so the classifier needs no `view(x.size(0), -1)`, which reads the batch size from the tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

# block_fn(inplanes, planes, stride, downsample, stage_index, block_index) -> nn.Module
BlockFn = Callable[[int, int, int, "nn.Module | None", int, int], nn.Module]


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def projection_shortcut(inplanes: int, outplanes: int, stride: int) -> nn.Sequential:
    """The residual shortcut when shapes change: strided conv1x1 + BN (keys `downsample.0`, `downsample.1`)."""
    return nn.Sequential(conv1x1(inplanes, outplanes, stride), nn.BatchNorm2d(outplanes))


def make_stage(block_fn: BlockFn, inplanes: int, planes: int, blocks: int, stride: int, expansion: int,
               stage_index: int) -> nn.Sequential:
    """`blocks` residual blocks; the first one strides and gets a projection shortcut when shapes change."""
    downsample = None
    if stride != 1 or inplanes != planes * expansion:
        downsample = projection_shortcut(inplanes, planes * expansion, stride)
    layers = [block_fn(inplanes, planes, stride, downsample, stage_index, 0)]
    for i in range(1, blocks):
        layers.append(block_fn(planes * expansion, planes, 1, None, stage_index, i))
    return nn.Sequential(*layers)


class ResNetBottleneck(nn.Module):
    """torchvision Bottleneck: 1x1 -> 3x3 (stride) -> 1x1 (x4) -> `attend` -> residual add -> ReLU.

    The attention families differ only in what they plug in and where their authors registered it, which is
    the order of the state_dict keys: SA-Net's block holds its attention between bn3 and relu (`attention`
    here); CBAM's and GSoP's register theirs after `downsample` (subclasses, after this constructor).
    Subclasses override `attend`.

    Args:
        inplanes: input channels.
        planes: bottleneck width (output planes * 4).
        stride: stride of the 3x3 conv.
        downsample: shortcut module when shapes change.
        conv2: builds the module in the 3x3 conv's place, with its stride (EPSANet's PSA); a 3x3 conv when None.
        attention: (name, builder) of a module registered right after bn3.
    Builders are called where the module is registered, so modules are created (and randomly initialised)
    in the authors' order and a seeded network gets the authors' initial weights.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 conv2: Callable[[], nn.Module] | None = None,
                 attention: tuple[str, Callable[[], nn.Module]] | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride) if conv2 is None else conv2()
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        if attention is not None:
            name, build = attention
            self.add_module(name, build())
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def attend(self, out: torch.Tensor) -> torch.Tensor:
        """The attention on bn3's output, before the residual add; none here."""
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.attend(self.bn3(self.conv3(out)))
        return self.relu(out + residual)


class ResNetSkeleton(nn.Module):
    """torchvision-style ResNet with a pluggable residual block.

    Args:
        block_fn: builds one residual block (see BlockFn).
        layers: blocks per stage.
        expansion: output channels of a block = planes * expansion.
        widths: planes of each stage (64, 128, 256, 512 in the papers; smaller for fast tests).
        strides: stride of each stage's first block.
        num_classes: classifier outputs.
    """

    def __init__(self, block_fn: BlockFn, layers: Sequence[int], expansion: int,
                 widths: Sequence[int] = (64, 128, 256, 512), strides: Sequence[int] = (1, 2, 2, 2),
                 num_classes: int = 1000):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4 or len(strides) != 4:
            raise ValueError(f"a ResNet has four stages: layers {layers}, widths {widths}, strides {strides}")
        stem = widths[0]
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem
        for i, (n, planes, stride) in enumerate(zip(layers, widths, strides, strict=True)):
            self.add_module(f"layer{i + 1}", make_stage(block_fn, inplanes, planes, n, stride, expansion, i))
            inplanes = planes * expansion
        self.num_features = inplanes
        self.fc = nn.Linear(inplanes, num_classes)

    def after_stage(self, index: int, x: torch.Tensor) -> torch.Tensor:
        """Hook between stages (BAM uses it); identity here. `index` is 1-based."""
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, 5):
            x = self.after_stage(i, getattr(self, f"layer{i}")(x))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x).mean(dim=(2, 3)))
