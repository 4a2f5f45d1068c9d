"""An EfficientNet-style network with SiLU squeeze-and-excitation.

Imitates timm's `efficientnet_blocks.py` (Tan & Le, "EfficientNet", arXiv 1905.11946): `DepthwiseSeparableConv`
and `InvertedResidual` blocks whose `SqueezeExcite(in_chs, rd_ratio=0.25, rd_channels=..., act_layer=nn.SiLU,
gate_layer=nn.Sigmoid)` has keys `conv_reduce`/`act1`/`conv_expand`/`gate`; as in EfficientNet the squeeze
width comes from the block's *input* channels (x 0.25), not from the expanded channels it gates.
"""

from __future__ import annotations

from torch import nn


class SqueezeExcite(nn.Module):
    def __init__(self, in_chs, rd_ratio=0.25, rd_channels=None, act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        if rd_channels is None:
            rd_channels = round(in_chs * rd_ratio)
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = act_layer(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


def conv_bn_act(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.SiLU(inplace=True))
    return nn.Sequential(*layers)


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, in_chs, out_chs, stride=1, se_ratio=0.25):
        super().__init__()
        self.conv_dw = conv_bn_act(in_chs, in_chs, 3, stride, groups=in_chs)
        self.se = SqueezeExcite(in_chs, rd_ratio=se_ratio, act_layer=nn.SiLU)
        self.conv_pw = conv_bn_act(in_chs, out_chs, 1, act=False)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x):
        shortcut = x
        x = self.conv_pw(self.se(self.conv_dw(x)))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    def __init__(self, in_chs, out_chs, kernel, stride, exp_ratio=6.0, se_ratio=0.25):
        super().__init__()
        mid = int(in_chs * exp_ratio)
        self.conv_pw = conv_bn_act(in_chs, mid, 1)
        self.conv_dw = conv_bn_act(mid, mid, kernel, stride, groups=mid)
        # EfficientNet: the squeeze width follows the block input, not `mid`.
        self.se = SqueezeExcite(mid, rd_channels=max(1, int(in_chs * se_ratio)), act_layer=nn.SiLU)
        self.conv_pwl = conv_bn_act(mid, out_chs, 1, act=False)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x):
        shortcut = x
        x = self.conv_pwl(self.se(self.conv_dw(self.conv_pw(x))))
        return x + shortcut if self.has_skip else x


class EfficientNet(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        w = width
        self.conv_stem = conv_bn_act(3, w, 3, 2)
        self.blocks = nn.Sequential(
            DepthwiseSeparableConv(w, w),
            InvertedResidual(w, 24 * w // 16, 3, 2),
            InvertedResidual(24 * w // 16, 24 * w // 16, 3, 1),
            InvertedResidual(24 * w // 16, 40 * w // 16, 5, 2),
        )
        self.conv_head = conv_bn_act(40 * w // 16, 4 * w, 1)
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        x = self.conv_head(self.blocks(self.conv_stem(x)))
        return self.classifier(x.mean((2, 3)))


def efficientnet_tiny(num_classes: int = 10, width: int = 16) -> EfficientNet:
    return EfficientNet(num_classes=num_classes, width=width)
