"""A MobileNetV3-style classifier with hard-sigmoid squeeze-and-excitation.

Imitates torchvision's `mobilenetv3.py` (Howard et al., "Searching for MobileNetV3", arXiv 1905.02244):
inverted residuals whose SE is torchvision's `SqueezeExcitation(input_channels, squeeze_channels,
activation=nn.ReLU, scale_activation=nn.Hardsigmoid)` (1x1 convs `fc1`/`fc2` with bias, ReLU inside, the
squeeze width `_make_divisible(expanded // 4, 8)`), Hardswish in the later blocks and a Linear classifier.
`width_mult` shrinks every layer for tests.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn


def _make_divisible(v, divisor=8, min_value=None):
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, x):
        scale = self.avgpool(x)
        scale = self.activation(self.fc1(scale))
        return self.scale_activation(self.fc2(scale))

    def forward(self, x):
        return self._scale(x) * x


class ConvBNActivation(nn.Sequential):
    def __init__(self, cin, cout, kernel_size=3, stride=1, groups=1, activation_layer=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, kernel, expanded, cout, use_se, activation, stride):
        super().__init__()
        self.use_res_connect = stride == 1 and cin == cout
        act = nn.Hardswish if activation == "HS" else nn.ReLU
        layers = []
        if expanded != cin:
            layers.append(ConvBNActivation(cin, expanded, 1, activation_layer=act))
        layers.append(ConvBNActivation(expanded, expanded, kernel, stride, groups=expanded, activation_layer=act))
        if use_se:
            se_layer = partial(SqueezeExcitation, scale_activation=nn.Hardsigmoid)
            layers.append(se_layer(expanded, _make_divisible(expanded // 4, 8)))
        layers.append(ConvBNActivation(expanded, cout, 1, activation_layer=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        result = self.block(x)
        return result + x if self.use_res_connect else result


class MobileNetV3(nn.Module):
    # (in, kernel, expanded, out, use_se, activation, stride): MobileNetV3-Small's first blocks.
    SETTINGS = [(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2), (24, 3, 88, 24, False, "RE", 1),
                (24, 5, 96, 40, True, "HS", 2), (40, 5, 240, 40, True, "HS", 1), (40, 5, 120, 48, True, "HS", 1)]

    def __init__(self, num_classes=10, width_mult=0.5, last_channel=128):
        super().__init__()

        def adjust(c):
            return _make_divisible(c * width_mult, 8)

        layers = [ConvBNActivation(3, adjust(16), 3, 2, activation_layer=nn.Hardswish)]
        for cin, k, exp, cout, se, act, s in self.SETTINGS:
            layers.append(InvertedResidual(adjust(cin), k, adjust(exp), adjust(cout), se, act, s))
        last_in = adjust(self.SETTINGS[-1][3])
        layers.append(ConvBNActivation(last_in, 6 * last_in, 1, activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last_in, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=0.2, inplace=True), nn.Linear(last_channel, num_classes))

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenetv3_small(num_classes: int = 10, width_mult: float = 0.5) -> MobileNetV3:
    return MobileNetV3(num_classes=num_classes, width_mult=width_mult)
