"""A tiny detector written as user model code usually is: a conv backbone, a CBAM neck (channel gate over average
and max pools, 7x7 spatial gate, as in the CBAM authors' code) and a head returning a dict.

    deploykit export --module examples/tiny_detector.py:TinyDetector --args '{"num_classes": 3}' \\
        --input images:1x3x64x64 --dynamic images:0,2,3 --out models
"""

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class BasicConv(nn.Module):
    def __init__(self, cin, cout, kernel_size, padding=0, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


class ChannelGate(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))

    def forward(self, x):
        avg = F.avg_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
        mx = F.max_pool2d(x, (x.size(2), x.size(3)), stride=(x.size(2), x.size(3)))
        scale = torch.sigmoid(self.mlp(avg) + self.mlp(mx))
        return x * scale.unsqueeze(2).unsqueeze(3).expand_as(x)


class ChannelPool(nn.Module):
    def forward(self, x):
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, 7, padding=3, relu=False)

    def forward(self, x):
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    def __init__(self, channels, reduction=16):
        super().__init__()
        self.ChannelGate = ChannelGate(channels, reduction)
        self.SpatialGate = SpatialGate()

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))


class TinyDetector(nn.Module):
    def __init__(self, num_classes=3, width=32):
        super().__init__()
        self.backbone = nn.Sequential(conv_bn(3, width // 2, 2), conv_bn(width // 2, width, 2), conv_bn(width, width, 2))
        self.neck = CBAM(width)
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.box = nn.Conv2d(width, 4, 1)

    def forward(self, images):
        features = self.neck(self.backbone(images))
        return {"scores": self.cls(features).sigmoid(), "boxes": F.relu(self.box(features))}
