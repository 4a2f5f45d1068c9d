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
- One constant-index Gather puts every channel-half channel first and every spatial-half channel after
  them, so the two branches are static channel slices of one tensor; the (1, K, 1, 1) parameters are
  expanded to those C/2 channels by a constant-index gather on the parameter vectors.
- GroupNorm(K, K) normalises each channel on its own over H x W, so it is written out as two ReduceMeans
  (mean, then the mean of the squared centred input) and rsqrt: static ops. Centring first keeps an fp16
  graph from losing the small deviations of a large-mean channel to cancellation, and the square is a Pow,
  which the fp16 conversion keeps in fp32, so it cannot overflow.
- The concatenation, the inverse of the first Gather and the 2-group channel shuffle are one constant-index
  Gather on the channel axis.
The output is the official one up to float rounding (about 1e-7 relative).
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
    """Export-safe Shuffle Attention: constant-index Gathers and static channel slices, no reshapes."""

    def __init__(self, channel: int, groups: int = 64):
        super().__init__(channel, groups)
        half = channel // (2 * groups)
        j = torch.arange(channel) % (2 * half)          # position inside the channel's group
        # Split order: every channel-half channel (j < K), then every spatial-half channel, group-major.
        split = torch.cat([torch.nonzero(j < half).flatten(), torch.nonzero(j >= half).flatten()])
        # Official output channel 2k + i is pre-shuffle channel i * C/2 + k (the group view and the concat
        # leave every channel where it was); look it up in the split order.
        shuffled = torch.arange(channel).reshape(2, channel // 2).t().reshape(-1)
        position = torch.empty_like(split)
        position[split] = torch.arange(channel)
        k = torch.arange(channel // 2) % half            # parameter index of each split-order channel
        self.half_channels = channel // 2
        self.register_buffer("split_index", split, persistent=False)
        self.register_buffer("output_index", position[shuffled], persistent=False)
        self.register_buffer("coef_index", torch.stack([k, k + half, k + 2 * half, k + 3 * half]), persistent=False)

    def _coefficients(self) -> tuple[torch.Tensor, ...]:
        """cweight, cbias, sweight * gn.weight, sweight * gn.bias + sbias, each (1, C/2, 1, 1)."""
        sw = self.sweight.reshape(-1)
        table = torch.cat([self.cweight.reshape(-1), self.cbias.reshape(-1), sw * self.gn.weight,
                           torch.addcmul(self.sbias.reshape(-1), sw, self.gn.bias)])
        return table[self.coef_index][:, None, :, None, None].unbind(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cw, cb, a, d = self._coefficients()
        half = self.half_channels
        x = x.index_select(1, self.split_index)
        mean = x.mean((2, 3), keepdim=True)
        x_c, x_s = x[:, :half], x[:, half:]
        out_c = x_c * torch.sigmoid(cw * mean[:, :half] + cb)
        # GroupNorm with one channel per group normalises each channel over H x W. Centring first keeps an
        # fp16 graph's small deviations of a large-mean channel; the square is a Pow, which fp16 conversion
        # keeps in fp32 (no overflow above |x - mean| = 256).
        centred = x_s - mean[:, half:]
        var = centred.pow(2).mean((2, 3), keepdim=True)
        out_s = x_s * torch.sigmoid(torch.addcmul(d, centred, a * torch.rsqrt(var + self.gn.eps)))
        return torch.cat([out_c, out_s], 1).index_select(1, self.output_index)
