"""A class-conditional network with an int64 input: image plus one class index per sample.

Imitates the user code of class-conditional heads (FiLM-conditioned segmenters, the label embedding of
conditional GAN discriminators / projection discriminators): `nn.Embedding(num_classes, C)` looked up with an
int64 `labels` tensor of shape (B,) gives a per-sample scale and shift added to the image features, which then
pass timm's `CbamModule` layout (`channel.fc1`/`channel.fc2` 1x1 convs without bias, `spatial.conv.conv`/
`spatial.conv.bn` over (mean, max)).
"""

from __future__ import annotations

import torch
from torch import nn


class ConvNormAct(nn.Module):
    def __init__(self, cin, cout, k, stride=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class ChannelAttn(nn.Module):
    def __init__(self, channels, rd_ratio=1.0 / 16, mlp_bias=False):
        super().__init__()
        rd = max(1, round(channels * rd_ratio))
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=mlp_bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=mlp_bias)

    def forward(self, x):
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(x_avg + x_max)


class SpatialAttn(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = ConvNormAct(2, 1, kernel_size, act=False)

    def forward(self, x):
        x_attn = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(x_attn))


class CbamModule(nn.Module):
    def __init__(self, channels, rd_ratio=1.0 / 16, spatial_kernel_size=7):
        super().__init__()
        self.channel = ChannelAttn(channels, rd_ratio)
        self.spatial = SpatialAttn(spatial_kernel_size)

    def forward(self, x):
        return self.spatial(self.channel(x))


class ClassConditionalNet(nn.Module):
    def __init__(self, num_classes=5, width=16, out_channels=2):
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, width, 3, 2), ConvNormAct(width, 2 * width, 3, 2))
        self.embed = nn.Embedding(num_classes, 4 * width)
        self.attn = CbamModule(2 * width, rd_ratio=0.25)
        self.head = nn.Conv2d(2 * width, out_channels, 1)

    def forward(self, image, labels):
        x = self.stem(image)
        scale, shift = self.embed(labels).chunk(2, dim=1)       # (B, 2w) each
        x = x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        return self.head(self.attn(x))


def class_conditional(num_classes: int = 5, width: int = 16) -> ClassConditionalNet:
    return ClassConditionalNet(num_classes=num_classes, width=width)
