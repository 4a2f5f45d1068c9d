"""A RegNetY-style network: group-conv bottlenecks with squeeze-and-excitation.

Imitates timm's `regnet.py` (Radosavovic et al., "Designing Network Design Spaces", arXiv 2003.13678): each
`Bottleneck` is 1x1 -> 3x3 group conv -> SE -> 1x1, with timm's `SEModule` from `layers/squeeze_excite.py`
(keys `fc1`, `bn` (Identity), `act`, `fc2`, `gate`) whose squeeze width is `round(in_chs * 0.25)`, the
*block input* width, so the ratio to the gated (bottleneck) width is generally not an integer.
"""

from __future__ import annotations

from torch import nn


class SEModule(nn.Module):
    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        rd_channels = rd_channels or round(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.fc1(x_se)
        x_se = self.act(self.bn(x_se))
        x_se = self.fc2(x_se)
        return x * self.gate(x_se)


class ConvNormAct(nn.Module):
    def __init__(self, cin, cout, k=1, stride=1, groups=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, group_size=8, se_ratio=0.25):
        super().__init__()
        mid = out_chs
        self.conv1 = ConvNormAct(in_chs, mid, 1)
        self.conv2 = ConvNormAct(mid, mid, 3, stride, groups=mid // group_size)
        self.se = SEModule(mid, rd_channels=int(round(in_chs * se_ratio)))
        self.conv3 = ConvNormAct(mid, out_chs, 1, act=False)
        self.downsample = (ConvNormAct(in_chs, out_chs, 1, stride, act=False)
                           if stride != 1 or in_chs != out_chs else nn.Identity())
        self.act3 = nn.ReLU(inplace=True)

    def forward(self, x):
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(x + self.downsample(shortcut))


class RegNetY(nn.Module):
    def __init__(self, num_classes=10, widths=(24, 56, 152), depths=(1, 2, 1), group_size=8):
        super().__init__()
        self.stem = ConvNormAct(3, 16, 3, 2)
        stages, cin = [], 16
        for w, d in zip(widths, depths):
            blocks = [Bottleneck(cin if i == 0 else w, w, 2 if i == 0 else 1, group_size) for i in range(d)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def regnety_tiny(num_classes: int = 10) -> RegNetY:
    return RegNetY(num_classes=num_classes)
