"""BAM: Bottleneck Attention Module.

Paper: Park, Woo, Lee, Kweon, "BAM: Bottleneck Attention Module", BMVC 2018, https://arxiv.org/abs/1807.06514.
Official code: Jongchan/attention-module, `MODELS/bam.py` (in its ResNet, after layer1, layer2 and layer3).

Semantics, as the official forward (and so the official weights) define them: a channel branch
(global average pool -> MLP C -> C/r -> C with BatchNorm1d + ReLU on the hidden layer) giving (B, C), a spatial
branch (1x1 conv C -> C/r, then two 3x3 convs with dilation 4, each conv followed by BatchNorm2d + ReLU, then a
1x1 conv to one channel) giving (B, 1, H, W), and the output `(1 + sigmoid(channel * spatial)) * x`: the
branches are combined by a product, although the paper writes a sum.

The reference keeps the official constructor `BAM(gate_channel)` (the branches' own arguments, with the official
defaults reduction_ratio=16, num_layers=1, dilation_conv_num=2, dilation_val=4, are also accepted as keywords)
and the official keys:
`channel_att.gate_c.gate_c_fc_0.*`, `channel_att.gate_c.gate_c_bn_1.*` (BatchNorm1d),
`channel_att.gate_c.gate_c_fc_final.*`, `spatial_att.gate_s.gate_s_conv_reduce0.*`,
`spatial_att.gate_s.gate_s_bn_reduce0.*`, `spatial_att.gate_s.gate_s_conv_di_{0,1}.*`,
`spatial_att.gate_s.gate_s_bn_di_{0,1}.*`, `spatial_att.gate_s.gate_s_conv_final.*` (all convs with bias).

Minimal fixes in the reference:
- The official `ChannelGate.__init__` stores `self.gate_activation = gate_activation`, a name defined nowhere, so
  the official module cannot even be constructed (NameError). The attribute was never used; it is dropped.
- The official channel pool is `avg_pool2d(x, x.size(2), stride=x.size(2))`: a square H x H window. It is the
  global average only when H == W. For H > W it raises (window larger than the input, e.g. 41x17); for
  W >= 2H it yields several pooled columns and the MLP's Linear rejects the flattened size; for H < W < 2H it
  silently averages only the first H columns. The reference pools the full (H, W) window, which is exactly the
  official result whenever H == W (every size the official networks were trained and evaluated on) and the
  paper's global average pooling otherwise.

Export-safe twin (`BAMSafe`): the same modules and keys; the channel pool is a `mean` over (H, W) and the
channel MLP runs on (B, C) directly (no Flatten `view(x.size(0), -1)`, no pooling window read from the
shape); the branches broadcast against each other instead of `expand_as`. Nothing is read from the tensor's
shape, so the ONNX graph has no shape computation for any dynamic axis. fp16: every intermediate is bounded by
the convolutions' outputs (no sums over H x W in fp16: the mean is a ReduceMean, kept in fp32 by the
mixed-precision converter).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.common import bottleneck_width


class Flatten(nn.Module):
    """(B, ...) -> (B, -1), with the batch read from the tensor as in the official code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


class ChannelGate(nn.Module):
    """Channel branch: global average pool, then Linear (-> BatchNorm1d -> ReLU) x num_layers, then Linear.

    Args:
        gate_channel: channels C.
        reduction_ratio: r; hidden widths are C // r.
        num_layers: number of hidden layers.
    """

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, num_layers: int = 1):
        super().__init__()
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", Flatten())
        widths = [gate_channel] + [bottleneck_width(gate_channel, reduction_ratio)] * num_layers + [gate_channel]
        for i in range(len(widths) - 2):
            self.gate_c.add_module(f"gate_c_fc_{i}", nn.Linear(widths[i], widths[i + 1]))
            self.gate_c.add_module(f"gate_c_bn_{i + 1}", nn.BatchNorm1d(widths[i + 1]))
            self.gate_c.add_module(f"gate_c_relu_{i + 1}", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(widths[-2], widths[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Fix: the full (H, W) window; the official window is (H, H) (see the module docstring).
        window = (x.size(2), x.size(3))
        pooled = F.avg_pool2d(x, window, stride=window)
        return self.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(x)


class SpatialGate(nn.Module):
    """Spatial branch: 1x1 reduce, dilated 3x3 convs, 1x1 to one channel; BatchNorm2d + ReLU after all but the last.

    Args:
        gate_channel: channels C.
        reduction_ratio: r; the branch works on C // r channels.
        dilation_conv_num: number of dilated 3x3 convs.
        dilation_val: their dilation (and padding, which keeps H x W).
    """

    def __init__(self, gate_channel: int, reduction_ratio: int = 16, dilation_conv_num: int = 2,
                 dilation_val: int = 4):
        super().__init__()
        mid = bottleneck_width(gate_channel, reduction_ratio)
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(gate_channel, mid, kernel_size=1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(mid))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(mid, mid, kernel_size=3, padding=dilation_val,
                                                                     dilation=dilation_val))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(mid))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(mid, 1, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x).expand_as(x)


class BAM(nn.Module):
    """Reference BAM, keys as the official module: `(1 + sigmoid(channel(x) * spatial(x))) * x`.

    Args:
        gate_channel: input (and output) channels C.
        reduction_ratio: bottleneck ratio of both branches (official 16).
        num_layers: hidden layers of the channel MLP (official 1).
        dilation_conv_num: dilated convs of the spatial branch (official 2).
        dilation_val: their dilation (official 4).
    """

    def __init__(self, gate_channel: int, *, reduction_ratio: int = 16, num_layers: int = 1,
                 dilation_conv_num: int = 2, dilation_val: int = 4):
        super().__init__()
        self.channel_att = ChannelGate(gate_channel, reduction_ratio, num_layers)
        self.spatial_att = SpatialGate(gate_channel, reduction_ratio, dilation_conv_num, dilation_val)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = 1 + torch.sigmoid(self.channel_att(x) * self.spatial_att(x))
        return att * x


class BAMSafe(BAM):
    """Export-safe BAM: a mean for the channel pool, the MLP on (B, C) without Flatten, broadcasting branches."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The channel MLP without its leading Flatten (a plain tuple: the modules stay registered in gate_c).
        self._channel_layers = tuple(self.channel_att.gate_c)[1:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channel = x.mean(dim=(2, 3))                       # (B, C)
        for layer in self._channel_layers:
            channel = layer(channel)
        spatial = self.spatial_att.gate_s(x)               # (B, 1, H, W)
        # (1 + a) * x as x + x * a: one fused pass fewer over the full tensor.
        return torch.addcmul(x, x, torch.sigmoid(channel[:, :, None, None] * spatial))
