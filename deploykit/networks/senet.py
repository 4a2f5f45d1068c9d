"""SE-ResNet-50: ResNet-50 with a Squeeze-and-Excitation module in every bottleneck.

Paper: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
Official code is Caffe (hujie-frank/SENet). The PyTorch layout followed here is the port that carries the
converted Caffe weights: Cadene's pretrained-models `senet.py` `se_resnet50` (also timm's `legacy_seresnet50`,
same keys). Its checkpoint `se_resnet50-ce0d4300.pth` loads with strict keys.

Layout (Caffe conventions kept by the port):
- `layer0` = Sequential(`conv1` 7x7 stride 2, `bn1`, `relu1`, `pool` = MaxPool2d(3, 2, ceil_mode=True));
- `SEResNetBottleneck`: the stride sits on `conv1` (the 1x1), not on the 3x3 `conv2` as in torchvision;
  `se_module` = SE(planes * 4, reduction 16) on the bn3 output, then the residual add;
- downsample = Sequential(1x1 conv with stride, BN) as `downsample.0/1`; classifier `last_linear`.
timm's non-legacy `seresnet50` is a different network (torchvision stride placement, `se.fc1` keys) whose
weights do not load here.

Global pooling is a mean over H and W (the port's AvgPool2d(7) equals it at 224 x 224). The `safe` variant uses
deploykit's export-safe SE twin; the rest of the network has no export hazard.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from deploykit import blocks
from deploykit.networks._resnet import conv1x1, make_stage


class SEResNetBottleneck(nn.Module):
    """Caffe-style bottleneck (stride on the first 1x1) with SE before the residual add."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, reduction: int = 16, stride: int = 1,
                 downsample: nn.Module | None = None, variant: str = "reference"):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, stride=stride, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * 4)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.se_module = blocks.create("se", variant, channels=planes * 4, reduction=reduction)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.se_module(out) + residual)


class SENet(nn.Module):
    """SE-ResNet with the Cadene/timm `SENet` keys.

    Args:
        layers: bottlenecks per stage ((3, 4, 6, 3) for SE-ResNet-50).
        num_classes: classifier outputs.
        variant: "reference" or "safe" SE modules.
        widths: stage widths (64, 128, 256, 512; smaller for fast tests). The stem has widths[0] channels.
        reduction: SE reduction ratio.
    """

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), num_classes: int = 1000, variant: str = "reference",
                 widths: Sequence[int] = (64, 128, 256, 512), reduction: int = 16):
        super().__init__()
        stem = widths[0]
        self.layer0 = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)),
            ("bn1", nn.BatchNorm2d(stem)),
            ("relu1", nn.ReLU(inplace=True)),
            # ceil_mode keeps the Caffe weights' alignment (the port's own comment); equal to padding=1 at 224.
            ("pool", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ]))
        def block(inplanes, planes, stride, downsample, stage_index, block_index):
            return SEResNetBottleneck(inplanes, planes, reduction, stride, downsample, variant)

        inplanes = stem
        for i, (n, planes) in enumerate(zip(layers, widths, strict=True)):
            self.add_module(f"layer{i + 1}", make_stage(block, inplanes, planes, n, 1 if i == 0 else 2, 4, i))
            inplanes = planes * 4
        self.last_linear = nn.Linear(inplanes, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer0(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_linear(self.forward_features(x).mean(dim=(2, 3)))


def se_resnet50(variant: str = "reference", **kwargs) -> SENet:
    """SE-ResNet-50 (Cadene/timm legacy layout)."""
    return SENet(**{"layers": (3, 4, 6, 3), **kwargs}, variant=variant)
