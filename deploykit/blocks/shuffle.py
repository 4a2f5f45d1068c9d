"""Shuffle Attention (SA) layer.

Paper: Zhang, Yang, "SA-Net: Shuffle Attention for Deep Convolutional Neural Networks", ICASSP 2021,
https://arxiv.org/abs/2102.00240. Official code: wofmanaf/SA-Net, `models/sa_resnet.py`, class `sa_layer`.

Official computation, `sa_layer(channel, groups=64)`, with K = channel / (2 * groups):
the input is viewed as (B * groups, channel / groups, H, W) and each group is split in two halves of K
channels. Channel half: x0 * sigmoid(cweight * GAP(x0) + cbias). Spatial half:
x1 * sigmoid(sweight * GroupNorm(K, K)(x1) + sbias) (GroupNorm with one channel per group, i.e. each channel
normalised over H x W, eps 1e-5, affine `gn.weight`/`gn.bias`). The halves are concatenated, viewed back as
(B, channel, H, W) and channel-shuffled with 2 groups (output channel 2k + i <- channel i * channel/2 + k).
Parameters `cweight`, `cbias`, `sweight`, `sbias` have shape (1, K, 1, 1), shared by all groups; weights start
at 0 and biases at 1. Keys: `cweight`, `cbias`, `sweight`, `sbias`, `gn.weight`, `gn.bias`.

Reference: the official module (keys, defaults, forward); the only change is a ValueError when `channel` is
not divisible by 2 * groups. The official code then fails (GroupNorm(0, 0), a reshape or a broadcast), except
for channel / groups == 3, where it silently splits each group 2 + 1 and broadcasts 1-channel parameters over
the 2-channel half: not the paper's layer, so it is refused too.

Export-safe twin (`ShuffleAttentionSafe`, same constructor and keys) works on the (B, C, H, W) tensor
itself: no (B * groups, ...) view, no 5-D permute, no size read from the input.
- Channel j of every group is the static strided channel slice `x[:, j::2K]` (a view in eager PyTorch, a
  Slice with constant starts and steps in ONNX), and all its channels share the parameters of index j, so
  each of the 2K slices is gated with scalar parameters: the channel gate for j < K, the spatial gate for
  j >= K. One ReduceMean over H x W gives every channel's mean.
- GroupNorm(K, K) normalises each channel on its own over H x W, so it is written out as the mean of the
  squared centred input and rsqrt: static ops. Centring first keeps an fp16 graph from losing the small
  deviations of a large-mean channel to cancellation, and the square is a Pow, which the fp16 conversion
  keeps in fp32, so it cannot overflow.
- The 2K gated slices are concatenated once; putting their channels back in place and the official 2-group
  channel shuffle are then one constant-index Gather on the channel axis.
The output is the official one up to float rounding (about 1e-7 relative). The graph has about 20 nodes per
slice pair (40 at the registry default K = 2, about 300 for SA-ResNet's widest layer, C = 2048, K = 16), all
elementwise or reductions that TensorRT fuses. In eager PyTorch the official view is free, so the twin is
about as fast as the reference rather than clearly faster: any graph that does not read H and W has to copy
the channels into place (here one Concat and one Gather, which PyTorch runs single-threaded along dim 1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import Parameter


class ShuffleAttention(nn.Module):
    """Reference: official `sa_layer`.

    Args:
        channel: channels C; must be divisible by 2 * groups.
        groups: number of channel groups G (each split into a channel half and a spatial half).
    """

    def __init__(self, channel: int, groups: int = 64):
        super().__init__()
        if channel % (2 * groups):
            raise ValueError(f"channel {channel} must be divisible by 2 * groups = {2 * groups}")
        half = channel // (2 * groups)
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.cweight = Parameter(torch.zeros(1, half, 1, 1))
        self.cbias = Parameter(torch.ones(1, half, 1, 1))
        self.sweight = Parameter(torch.zeros(1, half, 1, 1))
        self.sbias = Parameter(torch.ones(1, half, 1, 1))
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(half, half)

    @staticmethod
    def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, groups, -1, h, w).permute(0, 2, 1, 3, 4).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        return self.channel_shuffle(out, 2)


class ShuffleAttentionSafe(ShuffleAttention):
    """Export-safe Shuffle Attention: strided channel slices gated with scalar parameters, one Gather."""

    def __init__(self, channel: int, groups: int = 64):
        super().__init__(channel, groups)
        half = channel // (2 * groups)
        self.period = 2 * half                            # channels per group
        # forward() concatenates its per-slice results in this order: slice j of the period (every group's
        # j-th channel) for j = 0 .. period - 1, channel-half slices (j < K) first.
        split = torch.cat([torch.arange(j, channel, self.period) for j in range(self.period)])
        # Official output channel 2m + i is input channel i * C/2 + m (the group view and the concat leave
        # every channel where it was); find that channel in the split order.
        shuffled = torch.arange(channel).reshape(2, channel // 2).t().reshape(-1)
        position = torch.empty_like(split)
        position[split] = torch.arange(channel)
        self.register_buffer("output_index", position[shuffled], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        period, half = self.period, self.period // 2
        sw = self.sweight.view(-1)
        cw, cb = self.cweight.view(-1).unbind(0), self.cbias.view(-1).unbind(0)
        a = (sw * self.gn.weight).unbind(0)                                     # sweight * gn.weight
        d = torch.addcmul(self.sbias.view(-1), sw, self.gn.bias).unbind(0)      # sweight * gn.bias + sbias
        mean = x.mean((2, 3), keepdim=True)
        outs = []
        for k in range(half):
            # Channel k of every group's channel half: a strided view sharing one parameter index.
            outs.append(x[:, k::period] * torch.sigmoid(mean[:, k::period] * cw[k] + cb[k]))
        for k in range(half):
            # GroupNorm with one channel per group normalises each channel over H x W. Centring first keeps
            # an fp16 graph's small deviations of a large-mean channel; the square is a Pow, which fp16
            # conversion keeps in fp32 (no overflow above |x - mean| = 256).
            x_s = x[:, half + k::period]
            centred = x_s - mean[:, half + k::period]
            scale = torch.rsqrt(centred.pow(2).mean((2, 3), keepdim=True) + self.gn.eps) * a[k]
            outs.append(x_s * torch.sigmoid(centred * scale + d[k]))
        return torch.cat(outs, 1).index_select(1, self.output_index)
