"""Global Second-order Pooling (GSoP) channel attention, the block of GSoP-Net1.

Paper: Gao, Xie, Wang, Li, "Global Second-order Pooling Convolutional Networks", CVPR 2019,
https://arxiv.org/abs/1811.12006. Official code: ZilinGao/Global-Second-order-Pooling-Convolutional-Networks,
`torchvision/models/resnet.py` (`Bottleneck` with `attention='1'`, method `chan_att`) and the MPNCOV
`CovpoolLayer` it calls.

As a deploy unit the block takes the Bottleneck's full-C tensor after bn3 (`pre_att`) and returns
`pre_att * att`; the residual add and the final ReLU belong to the network. The attention:
ReLU (not in-place) -> `conv_for_DR` (1x1, C -> d, bias, stride 2 in the Bottlenecks with planes <= 64, else 1)
-> `bn_for_DR` -> ReLU -> covariance over the M = H*W positions (centred, divided by M) viewed as (B, d, d, 1)
-> `row_bn` -> `row_conv_group` (kernel (d, 1), groups d, d -> 4d) -> `fc_adapt_channels` (1x1, 4d -> C) ->
sigmoid. Keys: `conv_for_DR.*`, `bn_for_DR.*`, `row_bn.*`, `row_conv_group.*`, `fc_adapt_channels.*`, the
same as inside the official Bottleneck (a Bottleneck state dict loads through `convert_bottleneck_layout`).

`dr_stride` is a constructor argument. Its default (None) applies the official rule expressed in the block's own
channels: a Bottleneck with planes <= 64 has C = 4 * planes <= 256, so C <= 256 gets stride 2, wider blocks 1.
The output shape never depends on it (the attention is a (B, C, 1, 1) vector).

The reference computes the covariance the official way, `X @ I_hat @ X^T` with the M x M centring matrix
`I_hat = I/M - 1/M^2` built in every call: that matrix is M^2 values (about 2.4 MB for a 28 x 28 map, 39 MB for
56 x 56 in fp32), and every size in it is read from the tensor.

Export-safe twin (same constructor and keys): no M x M matrix and no reshape. It centres with a mean, scales
by 1/sqrt(M) *before* the product, and contracts the positions with one Einsum:

    cov[b, i, j] = sum_{h, w} Z[b, i, h, w] * Z[b, j, h, w],   Z = (Y - mean_hw(Y)) / sqrt(M)

Both exporters emit a single ONNX `Einsum` for it (no Reshape to (B, d, H*W), which would need Shape nodes
when H and W are dynamic), and in eager PyTorch it is one bmm, faster than the official two. M comes from a
ReduceSum over a ones map made from the data (`y[:, :1] * 0 + 1`), so no size is read from the tensor shape and
the graph has no shape computation even with dynamic batch, height and width.

The prescale is the fp16 fix. Summing M raw products and dividing afterwards makes the intermediate grow with M
and with the square of the activation scale (activations around 30-100 over a 28 x 28 map reach 10^5 to 10^6,
beyond fp16's 65504), while the prescaled sum is the covariance itself, which does not grow with M. The ones
map differs from the reference only for non-finite inputs (inf * 0 is NaN), whose covariance is not finite
anyway.
"""

from __future__ import annotations

import torch
from torch import nn

# Bottleneck submodules around the attention in the official ResNet (key prefixes in its state dict).
_BOTTLENECK_PREFIXES = ("conv1.", "bn1.", "conv2.", "bn2.", "conv3.", "bn3.", "downsample.")


def official_dr_stride(channels: int) -> int:
    """The official DR conv stride: 2 when planes = C/4 <= 64, else 1."""
    return 2 if channels // 4 <= 64 else 1


def centered_covariance_official(y: torch.Tensor) -> torch.Tensor:
    """Covariance pooling as MPNCOV's CovpoolLayer: (B, d, H, W) -> (B, d, d) through an M x M centring matrix."""
    b, d, h, w = y.shape
    m = h * w
    flat = y.reshape(b, d, m)
    centring = torch.eye(m, dtype=y.dtype, device=y.device) / m - 1.0 / (m * m)
    return flat.bmm(centring.expand(b, m, m)).bmm(flat.transpose(1, 2))


class GSoP(nn.Module):
    """Reference channel GSoP with the official keys and computation.

    Args:
        channels: channels C of the input (the Bottleneck's planes * 4) and of the output.
        att_dim: reduced dimension d of the covariance (official default 128).
        dr_stride: stride of `conv_for_DR`; None applies the official rule (2 for C <= 256, else 1).
    """

    def __init__(self, channels: int, att_dim: int = 128, dr_stride: int | None = None):
        super().__init__()
        self.channels = channels
        self.ch_dim = att_dim
        self.dr_stride = official_dr_stride(channels) if dr_stride is None else dr_stride
        self.relu_normal = nn.ReLU(inplace=False)
        self.conv_for_DR = nn.Conv2d(channels, att_dim, kernel_size=1, stride=self.dr_stride, bias=True)
        self.bn_for_DR = nn.BatchNorm2d(att_dim)
        self.relu = nn.ReLU(inplace=True)
        self.row_bn = nn.BatchNorm2d(att_dim)
        # Row-wise convolution: each covariance row (d values) maps to 4 outputs, as a grouped conv.
        self.row_conv_group = nn.Conv2d(att_dim, 4 * att_dim, kernel_size=(att_dim, 1), groups=att_dim, bias=True)
        self.fc_adapt_channels = nn.Conv2d(4 * att_dim, channels, kernel_size=1, bias=True)
        self.sigmoid = nn.Sigmoid()

    def channel_attention(self, pre_att: torch.Tensor) -> torch.Tensor:
        """The official `chan_att`: (B, C, H, W) -> (B, C, 1, 1) in (0, 1)."""
        y = self.relu(self.bn_for_DR(self.conv_for_DR(self.relu_normal(pre_att))))
        cov = centered_covariance_official(y)
        cov = cov.view(cov.size(0), cov.size(1), cov.size(2), 1)
        return self.sigmoid(self.fc_adapt_channels(self.row_conv_group(self.row_bn(cov))))

    def forward(self, pre_att: torch.Tensor) -> torch.Tensor:
        return pre_att * self.channel_attention(pre_att)


class GSoPSafe(GSoP):
    """Export-safe GSoP: prescaled covariance as one Einsum; no M x M matrix, no reshape, no size reads."""

    def channel_attention(self, pre_att: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn_for_DR(self.conv_for_DR(torch.relu(pre_att))))
        cov = self.covariance(y)
        return torch.sigmoid(self.fc_adapt_channels(self.row_conv_group(self.row_bn(cov))))

    @staticmethod
    def covariance(y: torch.Tensor) -> torch.Tensor:
        """Centred covariance over positions, (B, d, H, W) -> (B, d, d, 1), the layout `row_bn` takes."""
        # M = H*W counted from the data (no Shape node); 1/sqrt(M) applied before the sum keeps fp16 in range.
        positions = (y[:, :1] * 0.0 + 1.0).sum(dim=(2, 3), keepdim=True)
        z = (y - y.mean(dim=(2, 3), keepdim=True)) * positions.rsqrt()
        return torch.einsum("bihw,bjhw->bij", z, z).unsqueeze(-1)


def convert_bottleneck_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Keep the GSoP keys of an official Bottleneck state dict (conv1..bn3, downsample dropped); else None."""
    ours = ("conv_for_DR.", "bn_for_DR.", "row_bn.", "row_conv_group.", "fc_adapt_channels.")
    if "conv_for_DR.weight" not in state or not any(k.startswith(_BOTTLENECK_PREFIXES) for k in state):
        return None
    if not all(k.startswith(ours + _BOTTLENECK_PREFIXES) for k in state):
        return None  # other attention modes ('2', '+', 'M', '&') carry more modules: not this block
    return {k: v for k, v in state.items() if k.startswith(ours)}


KEY_CONVERTERS = (convert_bottleneck_layout,)
