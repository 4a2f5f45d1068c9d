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
itself: no (B * groups, ...) view, no 5-D permute, no size read from the input. Two layouts of the same math,
chosen by K when the module is built (both give 0 shape nodes):
- Strided slices (K < 8, e.g. the registry default K = 2 and SA-ResNet's layer1-2). Channel j of every group
  is the static strided channel slice `x[:, j::2K]` (a view in eager PyTorch, a Slice with constant starts
  and steps in ONNX), and all its channels share the parameters of index j, so each of the 2K slices is gated
  with scalar parameters: the channel gate for j < K, the spatial gate for j >= K.
- Two channel Gathers (K >= 8, SA-ResNet's layer3-4). 2K slices would be 20 nodes each (about 300 for
  C = 2048, K = 16: the dynamo exporter then spends minutes tracing SA-ResNet-50, and eager PyTorch pays
  per-op overhead on small feature maps), so the channel halves of all groups are gathered with constant
  indices and gated with per-channel parameter vectors: about 20 nodes whatever K is. Measured on 2 CPU
  threads, this is faster than the slices from K = 8 on and slower below (the gathers copy the input).
In both, GroupNorm(K, K) normalises each channel on its own over H x W, so it is written out as the mean of
the squared centred input and rsqrt: static ops. Centring first keeps an fp16 graph from losing the small
deviations of a large-mean channel to cancellation, and the square is a Pow, which the fp16 conversion keeps
in fp32, so it cannot overflow. The gated pieces are concatenated once; putting their channels back in place
and the official 2-group channel shuffle are then one constant-index Gather on the channel axis.
The output is the official one up to float rounding (about 1e-7 relative). In eager PyTorch the official
view is free, so the twin is about as fast as the reference rather than clearly faster: any graph that does
not read H and W has to copy the channels into place (here one Concat and one Gather, which PyTorch runs
single-threaded along dim 1).
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
    """Export-safe Shuffle Attention: gated channel slices (K < 8) or channel-half gathers (K >= 8), one
    final Gather."""

    # From this K on, gathering the halves beats 2K strided slices (see the module docstring).
    GATHER_FROM_K = 8

    def __init__(self, channel: int, groups: int = 64):
        super().__init__(channel, groups)
        half = channel // (2 * groups)
        self.period = 2 * half                            # channels per group
        self.gather_halves = half >= self.GATHER_FROM_K
        position_in_group = torch.arange(channel) % self.period
        if self.gather_halves:
            # forward() gathers every group's channel half, then every group's spatial half.
            channel_half = torch.nonzero(position_in_group < half).flatten()
            spatial_half = torch.nonzero(position_in_group >= half).flatten()
            self.register_buffer("channel_half", channel_half, persistent=False)
            self.register_buffer("spatial_half", spatial_half, persistent=False)
            # The parameter index of each gathered channel (the parameters are shared by all groups).
            self.register_buffer("channel_param", position_in_group[channel_half], persistent=False)
            self.register_buffer("spatial_param", position_in_group[spatial_half] - half, persistent=False)
            split = torch.cat([channel_half, spatial_half])
        else:
            # forward() concatenates slice j of the period (every group's j-th channel) for j = 0 .. 2K - 1.
            split = torch.cat([torch.arange(j, channel, self.period) for j in range(self.period)])
        # Official output channel 2m + i is input channel i * C/2 + m (the group view and the concat leave
        # every channel where it was); find that channel in the split order.
        shuffled = torch.arange(channel).reshape(2, channel // 2).t().reshape(-1)
        position = torch.empty_like(split)
        position[split] = torch.arange(channel)
        self.register_buffer("output_index", position[shuffled], persistent=False)

    def _spatial_gate(self, x_s: torch.Tensor, mean: torch.Tensor, a: torch.Tensor, d: torch.Tensor):
        # GroupNorm with one channel per group normalises each channel over H x W. Centring first keeps an
        # fp16 graph's small deviations of a large-mean channel; the square is a Pow, which fp16 conversion
        # keeps in fp32 (no overflow above |x - mean| = 256).
        centred = x_s - mean
        scale = torch.rsqrt(centred.pow(2).mean((2, 3), keepdim=True) + self.gn.eps) * a
        return x_s * torch.sigmoid(centred * scale + d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sw = self.sweight.view(-1)
        a = sw * self.gn.weight                                     # sweight * gn.weight
        d = torch.addcmul(self.sbias.view(-1), sw, self.gn.bias)    # sweight * gn.bias + sbias
        if self.gather_halves:
            return self._forward_gathered(x, a, d)
        period, half = self.period, self.period // 2
        cw, cb = self.cweight.view(-1).unbind(0), self.cbias.view(-1).unbind(0)
        a, d = a.unbind(0), d.unbind(0)
        mean = x.mean((2, 3), keepdim=True)
        outs = []
        for k in range(half):
            # Channel k of every group's channel half: a strided view sharing one parameter index.
            outs.append(x[:, k::period] * torch.sigmoid(mean[:, k::period] * cw[k] + cb[k]))
        for k in range(half):
            j = half + k
            outs.append(self._spatial_gate(x[:, j::period], mean[:, j::period], a[k], d[k]))
        return torch.cat(outs, 1).index_select(1, self.output_index)

    def _forward_gathered(self, x: torch.Tensor, a: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        def per_channel(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return values.index_select(0, index).view(1, -1, 1, 1)

        x_c = x.index_select(1, self.channel_half)
        x_s = x.index_select(1, self.spatial_half)
        cw = per_channel(self.cweight.view(-1), self.channel_param)
        cb = per_channel(self.cbias.view(-1), self.channel_param)
        out_c = x_c * torch.sigmoid(x_c.mean((2, 3), keepdim=True) * cw + cb)
        out_s = self._spatial_gate(x_s, x_s.mean((2, 3), keepdim=True),
                                   per_channel(a, self.spatial_param), per_channel(d, self.spatial_param))
        return torch.cat([out_c, out_s], 1).index_select(1, self.output_index)
