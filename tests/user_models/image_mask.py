"""A two-input mask-guided refinement network: an RGB image and a binary mask, one refined output.

Imitates the user code of matting / inpainting refiners (e.g. the mask-conditioned encoders of DeepFill-style
and MODNet-style models): the mask is concatenated to the image at the stem and also gates the decoder's
features, and the encoder's blocks carry a torchvision-style `SqueezeExcitation` (keys `fc1`/`fc2`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class ResidualSE(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.se = SqueezeExcitation(channels, channels // 4)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + x)


class MaskRefiner(nn.Module):
    def __init__(self, width=16, blocks=2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(4, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.body = nn.Sequential(*[ResidualSE(width) for _ in range(blocks)])
        self.mask_gate = nn.Conv2d(1, width, 1)
        self.head = nn.Conv2d(width, 1, 3, padding=1)

    def forward(self, image, mask):
        x = self.body(self.stem(torch.cat([image, mask], dim=1)))
        small_mask = F.avg_pool2d(mask, 2)
        x = x * torch.sigmoid(self.mask_gate(small_mask))
        alpha = F.interpolate(self.head(x), scale_factor=2.0, mode="bilinear", align_corners=False)
        return torch.sigmoid(alpha + mask)


def image_mask_refiner(width: int = 16, blocks: int = 2) -> MaskRefiner:
    return MaskRefiner(width=width, blocks=blocks)
