"""A network with blocks deploykit cannot make export-safe: they are kept, and the model still exports.

Imitates user code mixing a non-local block (Wang et al., "Non-local Neural Networks", arXiv 1711.07971,
facebookresearch/video-nonlocal-net's embedded-Gaussian form, written as the popular PyTorch ports do with
`x.size()` and `view(b, c, -1)`) with a global-context gate in the style of GCNet (Cao et al., arXiv
1904.11492): attention pooling over H x W instead of SE's average, but with SE's key layout (`fc1`/`fc2` 1x1
convs). deploykit has no twin for the first, and the second only looks like SE (a different function), so
make_export_safe keeps both and says why; torch.onnx exports them as written.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class NonLocalBlock(nn.Module):
    def __init__(self, in_channels, inter_channels=None):
        super().__init__()
        self.inter_channels = inter_channels or max(1, in_channels // 2)
        self.g = nn.Conv2d(in_channels, self.inter_channels, 1)
        self.theta = nn.Conv2d(in_channels, self.inter_channels, 1)
        self.phi = nn.Conv2d(in_channels, self.inter_channels, 1)
        self.W = nn.Sequential(nn.Conv2d(self.inter_channels, in_channels, 1), nn.BatchNorm2d(in_channels))

    def forward(self, x):
        batch_size = x.size(0)
        g_x = self.g(x).view(batch_size, self.inter_channels, -1).permute(0, 2, 1)
        theta_x = self.theta(x).view(batch_size, self.inter_channels, -1).permute(0, 2, 1)
        phi_x = self.phi(x).view(batch_size, self.inter_channels, -1)
        f_div_c = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
        y = torch.matmul(f_div_c, g_x).permute(0, 2, 1).contiguous()
        y = y.view(batch_size, self.inter_channels, *x.size()[2:])
        return self.W(y) + x


class ContextGate(nn.Module):
    """SE's keys (fc1, fc2), but the squeeze is a softmax attention pooling: not SE, so it must be kept."""

    def __init__(self, channels, reduction=4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x):
        b, c, h, w = x.size()
        weights = F.softmax(x.mean(1).view(b, 1, h * w), dim=-1)                 # (B, 1, HW)
        context = torch.bmm(x.view(b, c, h * w), weights.transpose(1, 2)).view(b, c, 1, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(context))))


class NonLocalNet(nn.Module):
    def __init__(self, num_classes=10, width=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width),
                                  nn.ReLU())
        self.nonlocal_block = NonLocalBlock(2 * width)
        self.context = ContextGate(2 * width)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        x = self.context(self.nonlocal_block(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def nonlocal_net(num_classes: int = 10, width: int = 16) -> NonLocalNet:
    return NonLocalNet(num_classes=num_classes, width=width)
