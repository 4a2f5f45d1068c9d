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
- The channel halves of all groups are gathered with constant indices (two Gathers on the channel axis) and
  gated with per-channel parameter vectors (the K shared parameters indexed per channel, folded to
  constants on export): about a dozen nodes whatever K is.
- GroupNorm(K, K) normalises each channel on its own over H x W: that is an instance norm, one ONNX
  InstanceNormalization node under both exporters (GroupNorm itself exports as reshapes around one, which
  need the input's shape). `sweight` and `sbias` fold into its per-channel affine. The fp16 conversion keeps
  it in fp32, so its sums of squares cannot overflow (+-400 inputs are tested). ONNX Runtime's kernel keeps
  the small deviations of a large-mean channel as well as the official GroupNorm does (mean 1000, std 0.01:
  1.7e-3 vs 1.3e-3 relative to the official output, which is float32's limit there).
- The gated halves are concatenated; putting their channels back in place and the official 2-group channel
  shuffle are then one constant-index Gather on the channel axis.
The output is the official one up to float rounding (about 1e-7 relative).
Why gathers and not 2K static strided slices `x[:, j::2K]` with scalar gates (the previous twin): the slices
made 20 nodes each, about 300 for SA-ResNet-50's layer4 (C = 2048, K = 16), where the dynamo exporter spent
minutes tracing the network; and on ONNX Runtime CPU the gathered graph is faster even at K = 2 (measured at
256 x 56 x 56, 2 threads: 8.0 vs 10.0 ms at batch 8, where eager PyTorch runs the reference in 8.8 ms). The
price is eager PyTorch: the official view is free there, while PyTorch's channel-axis gathers copy slowly,
so this twin is slower than the reference in eager mode (see benchmarks/results/blocks_cpu.md).
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
    """Export-safe Shuffle Attention: the channel halves gathered and gated per channel (an instance norm for
    the spatial half), one final Gather."""

    def __init__(self, channel: int, groups: int = 64):
        super().__init__(channel, groups)
        half = channel // (2 * groups)
        position_in_group = torch.arange(channel) % (2 * half)
        channel_half = torch.nonzero(position_in_group < half).flatten()
        spatial_half = torch.nonzero(position_in_group >= half).flatten()
        self.register_buffer("channel_half", channel_half, persistent=False)
        self.register_buffer("spatial_half", spatial_half, persistent=False)
        # The parameter index of each gathered channel (the parameters are shared by all groups).
        self.register_buffer("channel_param", position_in_group[channel_half], persistent=False)
        self.register_buffer("spatial_param", position_in_group[spatial_half] - half, persistent=False)
        # Official output channel 2m + i is input channel i * C/2 + m (the group view and the concat leave
        # every channel where it was); find that channel among the gathered halves.
        split = torch.cat([channel_half, spatial_half])
        shuffled = torch.arange(channel).reshape(2, channel // 2).t().reshape(-1)
        position = torch.empty_like(split)
        position[split] = torch.arange(channel)
        self.register_buffer("output_index", position[shuffled], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        def per_channel(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return values.reshape(-1).index_select(0, index)    # the K shared values, one per gathered channel

        x_c = x.index_select(1, self.channel_half)
        x_s = x.index_select(1, self.spatial_half)
        c_weight = per_channel(self.cweight, self.channel_param).view(1, -1, 1, 1)
        c_bias = per_channel(self.cbias, self.channel_param).view(1, -1, 1, 1)
        out_c = x_c * torch.sigmoid(x_c.mean((2, 3), keepdim=True) * c_weight + c_bias)
        # sweight * (gn.weight * n + gn.bias) + sbias = (sweight * gn.weight) * n + (sweight * gn.bias + sbias).
        sw = self.sweight.reshape(-1)
        scale = per_channel(sw * self.gn.weight, self.spatial_param)
        shift = per_channel(torch.addcmul(self.sbias.reshape(-1), sw, self.gn.bias), self.spatial_param)
        # torch.instance_norm is the op F.instance_norm calls, minus its check that refuses a 1x1 map; the
        # official GroupNorm takes one (the normalised pixel is 0), e.g. SA-ResNet-50's layer4 at 32x32 input.
        normed = torch.instance_norm(x_s, scale, shift, None, None, True, 0.0, self.gn.eps, False)
        out_s = x_s * torch.sigmoid(normed)
        return torch.cat([out_c, out_s], 1).index_select(1, self.output_index)
