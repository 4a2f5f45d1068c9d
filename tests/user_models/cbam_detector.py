"""A single-scale anchor-free detector with a CBAM neck, returning a dict of three outputs.

Imitates the user code of a small FCOS/CenterNet-style detector whose neck refines the backbone's last map with
CBAM written as in Jongchan/attention-module `MODELS/cbam.py` (`ChannelGate` with a Flatten/Linear/ReLU/Linear
`mlp` over avg and max pools read from `x.size()`, `SpatialGate` with a 7x7 `BasicConv` over (max, mean)),
and whose head returns `{"boxes", "scores", "features"}` as detection code usually does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BasicConv(nn.Module):
    def __init__(self, in_planes, out_planes, kernel_size, stride=1, padding=0, relu=True, bn=True, bias=False):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding, bias=bias)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class Flatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class ChannelGate(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16, pool_types=["avg", "max"]):  # noqa: B006 - as upstream
        super().__init__()
        self.gate_channels = gate_channels
        self.mlp = nn.Sequential(Flatten(), nn.Linear(gate_channels, gate_channels // reduction_ratio), nn.ReLU(),
                                 nn.Linear(gate_channels // reduction_ratio, gate_channels))
        self.pool_types = pool_types

    def forward(self, x):
        channel_att_sum = None
        for pool_type in self.pool_types:
            if pool_type == "avg":
                pool = F.avg_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
            else:
                pool = F.max_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
            raw = self.mlp(pool)
            channel_att_sum = raw if channel_att_sum is None else channel_att_sum + raw
        scale = torch.sigmoid(channel_att_sum).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


class ChannelPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, 7, stride=1, padding=3, relu=False)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16, pool_types=["avg", "max"], no_spatial=False):  # noqa: B006
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, pool_types)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate()

    def forward(self, x):
        x_out = self.ChannelGate(x)
        if not self.no_spatial:
            x_out = self.SpatialGate(x_out)
        return x_out


def conv_bn_relu(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CBAMDetector(nn.Module):
    """Backbone (stride 8) -> CBAM neck -> shared head; per location 4 box distances and class scores."""

    def __init__(self, width=16, num_classes=3, reduction=4):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn_relu(3, width, 2), conv_bn_relu(width, 2 * width, 2),
                                      conv_bn_relu(2 * width, 2 * width, 2))
        self.neck = nn.Sequential(BasicConv(2 * width, 2 * width, 3, padding=1), CBAM(2 * width, reduction))
        self.cls_head = nn.Conv2d(2 * width, num_classes, 3, padding=1)
        self.box_head = nn.Conv2d(2 * width, 4, 3, padding=1)
        self.num_classes = num_classes

    def forward(self, images):
        features = self.neck(self.backbone(images))
        b = features.shape[0]
        boxes = F.relu(self.box_head(features)).flatten(2).transpose(1, 2)           # (B, N, 4) ltrb distances
        scores = torch.sigmoid(self.cls_head(features)).view(b, self.num_classes, -1).permute(0, 2, 1)
        return {"boxes": boxes, "scores": scores, "features": features}


def cbam_detector(width: int = 16, num_classes: int = 3) -> CBAMDetector:
    return CBAMDetector(width=width, num_classes=num_classes)
