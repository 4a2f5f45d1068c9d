"""A UNet with squeeze-and-excitation in its decoder, for any H and W divisible by 8.

Imitates the user code of "SE-UNet" / scSE-decoder segmentation models (e.g. the decoders of
segmentation_models.pytorch with `decoder_attention_type`, or Roy et al.'s concurrent SE for medical images):
a four-level UNet (Ronneberger et al.) whose decoder blocks end with an SE block written with `nn.Linear` in an
`fc` Sequential (keys `fc.0`, `fc.2`), pooled through `AdaptiveAvgPool2d` and reshaped with `x.size()`.
Skip connections are resized to the decoder's size, so the model runs at any H, W divisible by 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SELayer(nn.Module):
    def __init__(self, channel, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class DoubleConv(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                   nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.block(x)


class Up(nn.Module):
    def __init__(self, cin, cskip, cout):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin // 2, 2, stride=2)
        self.conv = DoubleConv(cin // 2 + cskip, cout)
        self.se = SELayer(cout)

    def forward(self, x, skip):
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.se(self.conv(torch.cat([skip, x], dim=1)))


class SEUNet(nn.Module):
    def __init__(self, in_channels=3, num_classes=2, width=8):
        super().__init__()
        w = width
        self.inc = DoubleConv(in_channels, w)
        self.down1 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(w, 2 * w))
        self.down2 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(2 * w, 4 * w))
        self.down3 = nn.Sequential(nn.MaxPool2d(2), DoubleConv(4 * w, 8 * w))
        self.up1 = Up(8 * w, 4 * w, 4 * w)
        self.up2 = Up(4 * w, 2 * w, 2 * w)
        self.up3 = Up(2 * w, w, w)
        self.outc = nn.Conv2d(w, num_classes, 1)

    def forward(self, x):
        x1 = self.inc(x)
        x2 = self.down1(x1)
        x3 = self.down2(x2)
        x4 = self.down3(x3)
        return self.outc(self.up3(self.up2(self.up1(x4, x3), x2), x1))


def se_unet(width: int = 8, num_classes: int = 2) -> SEUNet:
    return SEUNet(num_classes=num_classes, width=width)
