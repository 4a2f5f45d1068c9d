"""HA-CNN soft attention (spatial x channel attention map).

Paper: Li, Zhu, Gong, "Harmonious Attention Network for Person Re-Identification", CVPR 2018,
https://arxiv.org/abs/1802.08122. Official PyTorch code: KaiyangZhou/deep-person-reid,
`torchreid/models/hacnn.py`, classes `ConvBlock`, `SpatialAttn`, `ChannelAttn`, `SoftAttn`.

The block returns the soft attention *map* (same shape as the input, values in [0.5, 1) because a ReLU
precedes the sigmoid); HA-CNN multiplies its features by it outside the module. Every `ConvBlock` is
conv (with bias) -> BatchNorm -> ReLU.

- spatial branch: mean over channels -> ConvBlock(1, 1, 3, stride 2, pad 1) -> bilinear x2 upsample
  (align_corners=True) -> ConvBlock(1, 1, 1);
- channel branch: average over H x W -> ConvBlock(C, C/16, 1) -> ConvBlock(C/16, C, 1);
- map = sigmoid(ConvBlock(C, C, 1)(spatial * channel)).

Reference: the official modules, keys and semantics (keys `spatial_attn.conv{1,2}.{conv,bn}.*`,
`channel_attn.conv{1,2}.{conv,bn}.*`, `conv.{conv,bn}.*`). Minimal changes: the deprecated `F.upsample`
is `F.interpolate` (same computation) and the official `assert in_channels % 16 == 0` is a ValueError.
The official quirk is kept: the upsample doubles the stride-2 map, so for odd H or W the map is one pixel
larger than the input (41x17 -> 42x18) and HA-CNN's `x * attn` fails there. HA-CNN itself only sees even
sizes (40x16, 20x8, 10x4 for its 160x64 input).

Export-safe twin (`SoftAttnSafe`, same constructor and keys):
- the upsample is the official one with a constant scale (x2, align_corners=True: a Resize with constant
  scales), followed by a crop to the input's H x W done without reading H or W: the row indices 0 .. H-1
  are counted from the input itself (a cumulative sum of ones along one of its rows) and picked with a
  Gather; likewise the columns. For even H and W the crop keeps everything, so the twin equals the
  reference; for odd H or W it returns the top-left H x W window of the official (H+1) x (W+1) map, i.e. the
  official value at every input pixel. The graph has no Shape node under either exporter, with a dynamic
  batch and with dynamic H and W. (A Slice to H x W would have to read the size: the stride-2 map has
  ceil(H/2) rows, which no longer tells odd H from even.)
- the channel pool is a ReduceMean, not an average pool whose kernel is read from `x.size()`;
- the 1x1 ConvBlock on `spatial * channel` uses that the product is rank one per sample:
  conv(s * c) = s * (W c) + bias, so the C x C convolution runs on the (B, C, 1, 1) channel vector instead
  of on the full map (exact algebra, fewer FLOPs, no full-size product tensor).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Conv2d (with bias) -> BatchNorm2d -> ReLU, keys `conv.*`, `bn.*` as the official `ConvBlock`.

    Args:
        in_c: input channels.
        out_c: output channels.
        k: kernel size.
        s: stride.
        p: padding.
    """

    def __init__(self, in_c: int, out_c: int, k: int, s: int = 1, p: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_c, out_c, k, stride=s, padding=p)
        self.bn = nn.BatchNorm2d(out_c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SpatialAttn(nn.Module):
    """Official spatial attention: channel mean -> 3x3 stride-2 ConvBlock -> x2 bilinear -> 1x1 ConvBlock."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBlock(1, 1, 3, s=2, p=1)
        self.conv2 = ConvBlock(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x.mean(1, keepdim=True))
        # Official: twice the stride-2 map's size (one pixel more than the input for odd sizes).
        x = F.interpolate(x, (x.size(2) * 2, x.size(3) * 2), mode="bilinear", align_corners=True)
        return self.conv2(x)


class ChannelAttn(nn.Module):
    """Official channel attention: average pool over H x W -> ConvBlock C->C/r -> ConvBlock C/r->C.

    Args:
        in_channels: channels C; must be divisible by `reduction_rate`.
        reduction_rate: bottleneck ratio r.
    """

    def __init__(self, in_channels: int, reduction_rate: int = 16):
        super().__init__()
        if in_channels % reduction_rate:
            raise ValueError(f"in_channels {in_channels} must be divisible by reduction_rate {reduction_rate}")
        self.conv1 = ConvBlock(in_channels, in_channels // reduction_rate, 1)
        self.conv2 = ConvBlock(in_channels // reduction_rate, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.avg_pool2d(x, x.size()[2:])
        return self.conv2(self.conv1(x))


class SoftAttn(nn.Module):
    """Reference HA-CNN soft attention; returns the attention map, keys as the official `SoftAttn`.

    Args:
        in_channels: channels C of the input (and of the map); divisible by 16.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.spatial_attn = SpatialAttn()
        self.channel_attn = ChannelAttn(in_channels)
        self.conv = ConvBlock(in_channels, in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.spatial_attn(x) * self.channel_attn(x)
        return torch.sigmoid(self.conv(y))


def _leading_indices(line: torch.Tensor) -> torch.Tensor:
    """0, 1, ..., len - 1 for a 1-D slice of the input, without reading its length (x ** 0 is 1, NaN included)."""
    return (line.pow(0).cumsum(0) - 1).long()


class SoftAttnSafe(SoftAttn):
    """Export-safe soft attention: constant-scale upsample, crop by index vectors counted from the input,
    ReduceMean pool, rank-one 1x1 conv; no size is read from any tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sa, ca = self.spatial_attn, self.channel_attn
        m = x.mean(1, keepdim=True)                                # (B, 1, H, W)
        s = sa.conv1(m)                                            # (B, 1, ceil(H/2), ceil(W/2))
        # The official x2 upsample (a constant-scale Resize), then its first H rows and W columns.
        s = F.interpolate(s, scale_factor=2.0, mode="bilinear", align_corners=True)
        s = s.index_select(2, _leading_indices(m[0, 0, :, 0])).index_select(3, _leading_indices(m[0, 0, 0, :]))
        s = sa.conv2(s)                                            # (B, 1, H, W)
        c = ca.conv2(ca.conv1(x.mean((2, 3), keepdim=True)))       # (B, C, 1, 1)
        # conv1x1(s * c) == s * conv1x1_nobias(c) + bias: the product is rank one per sample.
        conv = self.conv.conv
        u = F.conv2d(c, conv.weight)
        y = torch.addcmul(conv.bias[None, :, None, None], s, u)
        return torch.sigmoid(F.relu(self.conv.bn(y)))
