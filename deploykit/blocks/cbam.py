"""CBAM: Convolutional Block Attention Module.

Paper: Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018,
https://arxiv.org/abs/1807.06521. Official code: Jongchan/attention-module, `MODELS/cbam.py`.

The reference keeps the official constructor `CBAM(gate_channels, reduction_ratio=16, pool_types=('avg', 'max'),
no_spatial=False)`, submodule names and state_dict keys, so checkpoints of the official ResNet-CBAM load with
strict=True (keys below, after the network prefix and DataParallel's `module.`):

- `ChannelGate.mlp.1.weight/bias`, `ChannelGate.mlp.3.weight/bias`: the shared MLP
  (Flatten, Linear C -> C//r, ReLU, Linear C//r -> C), applied to each global pooling of x and summed;
  the channel gate is `x * sigmoid(sum)`. Pool types: 'avg', 'max', 'lp' (p = 2, i.e. the L2 norm over
  H x W) and 'lse' (log-sum-exp over H x W, max-shifted).
- `SpatialGate.spatial.conv.weight` (7x7, 2 -> 1, padding 3, no bias) and `SpatialGate.spatial.bn.*`
  (BatchNorm2d(1), eps 1e-5, momentum 0.01); the spatial input is cat(max over C, mean over C), max first;
  the spatial gate is `x * sigmoid(bn(conv(...)))`, applied to the channel gate's output. No residual.

Minimal fixes in the reference: `pool_types` defaults to a tuple (the official default is a shared mutable list),
and an unknown pool type raises ValueError at construction (the official forward skips it silently and fails
later, or sums nothing). `torch.sigmoid` replaces the deprecated `F.sigmoid`. Everything else, including the
pooling kernels read from `x.size()`, the `torch.max` tuple and `expand_as`, is kept as the authors wrote it.

Export-safe twin (`CBAMSafe`): the same modules and keys; global pools are single reductions over (H, W)
(`mean`, `amax`, an L2 norm, a max-shifted log-sum-exp) instead of pooling kernels sized from `x.size()`
(which TorchScript bakes in as constants and which need shape arithmetic under dynamo); the pooled vectors of
all pool types go through the MLP's first layer together and, since the last Linear is affine, its outputs are
summed before it (one matmul with the bias counted once per pool type); the channel pool over C uses `amax`
(no index output); gates broadcast instead of `expand_as`. Nothing is read from the tensor's shape, so the
ONNX graph has no shape computation for any dynamic axis. fp16: the L2 and log-sum-exp pools run as
ReduceL2 / Exp-ReduceSum-Log, which the mixed-precision converter keeps in fp32.

Options for the variants of published model code (defaults give the official module and keys):
`spatial_kernel_size` (timm's `spatial_kernel_size`, 3 in several ports), `rd_channels` (a hidden width that
is no C // r, as timm's rounding gives), `spatial_bn=False` and `spatial_bias=True` for the spatial gates
written as a bare conv (luuuyi/CBAM.PyTorch's `SpatialAttention` and the many YOLO "CBAM" ports).

`convert_split_gates_layout` (KEY_CONVERTERS) maps those ports' two-gate modules (a channel-attention child
with two 1x1 convs or Linears, a spatial-attention child with one (1, 2, k, k) conv over (mean, max), names
free) onto the official keys; `convert_timm_layout` maps timm's `CbamModule` layout (`channel.fc1/fc2` 1x1 convs, bias-free
by default; `spatial.conv.conv/bn`, whose channel pool is mean first) onto the official keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.common import bottleneck_width

POOL_TYPES = ("avg", "max", "lp", "lse")
SPATIAL_KERNEL = 7  # fixed in the official SpatialGate


class BasicConv(nn.Module):
    """Conv2d, then optional BatchNorm2d (eps 1e-5, momentum 0.01) and ReLU; keys `conv`, `bn` as upstream."""

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1, groups: int = 1, relu: bool = True, bn: bool = True, bias: bool = False):
        super().__init__()
        self.out_channels = out_planes
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
        self.bn = nn.BatchNorm2d(out_planes, eps=1e-5, momentum=0.01, affine=True) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.relu is not None:
            x = self.relu(x)
        return x


class Flatten(nn.Module):
    """(B, ...) -> (B, -1), with the batch read from the tensor as in the official code."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size(0), -1)


def logsumexp_2d(x: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over H x W, shifted by the per-channel max: (B, C, H, W) -> (B, C, 1)."""
    flat = x.view(x.size(0), x.size(1), -1)
    peak, _ = torch.max(flat, dim=2, keepdim=True)
    return peak + (flat - peak).exp().sum(dim=2, keepdim=True).log()


class ChannelGate(nn.Module):
    """Channel attention: shared MLP over global pools, summed, sigmoid, times x.

    Args:
        gate_channels: channels C.
        reduction_ratio: r; the MLP's hidden width is C // r.
        pool_types: any of 'avg', 'max', 'lp', 'lse', in the order their MLP outputs are summed.
    """

    def __init__(self, gate_channels: int, reduction_ratio: int = 16, pool_types: Sequence[str] = ("avg", "max"),
                 rd_channels: int | None = None):
        super().__init__()
        pool_types = tuple(pool_types)
        unknown = [p for p in pool_types if p not in POOL_TYPES]
        if unknown or not pool_types:
            raise ValueError(f"pool_types {list(pool_types)} must be a non-empty list of {', '.join(POOL_TYPES)}")
        self.gate_channels = gate_channels
        hidden = rd_channels if rd_channels is not None else bottleneck_width(gate_channels, reduction_ratio)
        if hidden < 1:
            raise ValueError(f"rd_channels must be at least 1, got {hidden}")
        self.mlp = nn.Sequential(
            Flatten(),
            nn.Linear(gate_channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, gate_channels),
        )
        self.pool_types = pool_types

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = (x.size(2), x.size(3))
        att_sum = None
        for pool_type in self.pool_types:
            if pool_type == "avg":
                pooled = F.avg_pool2d(x, kernel, stride=kernel)
            elif pool_type == "max":
                pooled = F.max_pool2d(x, kernel, stride=kernel)
            elif pool_type == "lp":
                pooled = F.lp_pool2d(x, 2, kernel, stride=kernel)
            else:  # "lse"
                pooled = logsumexp_2d(x)
            raw = self.mlp(pooled)
            att_sum = raw if att_sum is None else att_sum + raw
        scale = torch.sigmoid(att_sum).unsqueeze(2).unsqueeze(3).expand_as(x)
        return x * scale


class ChannelPool(nn.Module):
    """(B, C, H, W) -> (B, 2, H, W): max over C, then mean over C."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)


class SpatialGate(nn.Module):
    """Spatial attention: channel pool, 7x7 conv + BN (no ReLU), sigmoid, times x.

    Args:
        kernel_size: odd size of the conv (7 in the official module).
        bn: BatchNorm after the conv (official); False for the ports with a bare conv.
        bias: bias of the conv (the official one has none).
    """

    def __init__(self, kernel_size: int = SPATIAL_KERNEL, bn: bool = True, bias: bool = False):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"spatial_kernel_size must be odd and positive, got {kernel_size}")
        self.compress = ChannelPool()
        self.spatial = BasicConv(2, 1, kernel_size, stride=1, padding=(kernel_size - 1) // 2, relu=False, bn=bn,
                                 bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    """Reference CBAM: channel gate, then spatial gate, keys as the official module.

    Args:
        gate_channels: input (and output) channels C.
        reduction_ratio: channel MLP bottleneck ratio r (hidden width C // r).
        pool_types: global pools feeding the channel MLP; the paper and its checkpoints use ('avg', 'max').
        no_spatial: drop the spatial gate (and its keys), leaving channel attention only.
        spatial_kernel_size: size of the spatial gate's conv (official 7).
        rd_channels: hidden width of the channel MLP, overriding C // r.
        spatial_bn: BatchNorm in the spatial gate (official True).
        spatial_bias: bias on the spatial gate's conv (official False).
    """

    def __init__(self, gate_channels: int, reduction_ratio: int = 16, pool_types: Sequence[str] = ("avg", "max"),
                 no_spatial: bool = False, *, spatial_kernel_size: int = SPATIAL_KERNEL,
                 rd_channels: int | None = None, spatial_bn: bool = True, spatial_bias: bool = False):
        super().__init__()
        self.ChannelGate = ChannelGate(gate_channels, reduction_ratio, pool_types, rd_channels)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = SpatialGate(spatial_kernel_size, spatial_bn, spatial_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ChannelGate(x)
        if not self.no_spatial:
            out = self.SpatialGate(out)
        return out


def _global_pool(x: torch.Tensor, pool_type: str) -> torch.Tensor:
    """One global pool over (H, W) as a single reduction: (B, C, H, W) -> (B, C)."""
    if pool_type == "avg":
        return x.mean(dim=(2, 3))
    if pool_type == "max":
        return x.amax(dim=(2, 3))
    if pool_type == "lp":
        # lp_pool2d with p = 2 over the whole map is the L2 norm (ReduceL2, kept fp32 by the fp16 converter).
        return torch.linalg.vector_norm(x, ord=2, dim=(2, 3))
    peak = x.amax(dim=(2, 3), keepdim=True)
    return (peak + (x - peak).exp().sum(dim=(2, 3), keepdim=True).log()).flatten(1)


class CBAMSafe(CBAM):
    """Export-safe CBAM: reductions instead of size-derived pooling kernels, one MLP pass, broadcasting gates."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * self._channel_gate(x)
        if not self.no_spatial:
            pooled = torch.cat((out.amax(dim=1, keepdim=True), out.mean(dim=1, keepdim=True)), dim=1)
            out = out * torch.sigmoid(self.SpatialGate.spatial(pooled))
        return out

    def _channel_gate(self, x: torch.Tensor) -> torch.Tensor:
        """sigmoid(sum over pool types of mlp(pool(x))), shaped (B, C, 1, 1)."""
        fc1, fc2 = self.ChannelGate.mlp[1], self.ChannelGate.mlp[3]
        pool_types = self.ChannelGate.pool_types
        if len(pool_types) == 1:
            hidden = torch.relu(fc1(_global_pool(x, pool_types[0])))
            logits = fc2(hidden)
        else:
            pooled = torch.stack([_global_pool(x, p) for p in pool_types])       # (P, B, C)
            hidden = torch.relu(fc1(pooled)).sum(dim=0)                           # (B, C // r)
            # fc2 is affine: sum_p fc2(h_p) = W2 (sum_p h_p) + P * b2.
            bias = fc2.bias * len(pool_types) if fc2.bias is not None else None
            logits = F.linear(hidden, fc2.weight, bias)
        return torch.sigmoid(logits)[:, :, None, None]


def convert_timm_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map timm `CbamModule` keys onto the official layout; None when the state is not in that layout.

    timm: `channel.fc1.weight` (C//r, C, 1, 1) and `channel.fc2.weight` (1x1 convs, biases only with
    mlp_bias=True; a missing bias is a zero bias), `spatial.conv.conv.weight` (1, 2, 7, 7) whose input channels
    are (mean, max), the reverse of the official (max, mean), and `spatial.conv.bn.*`.
    """
    if "channel.fc1.weight" not in state or "channel.fc2.weight" not in state:
        return None
    out: dict[str, torch.Tensor] = {}
    for src, dst in (("channel.fc1", "ChannelGate.mlp.1"), ("channel.fc2", "ChannelGate.mlp.3")):
        weight = state[f"{src}.weight"]
        out[f"{dst}.weight"] = weight.reshape(weight.shape[0], weight.shape[1]).clone()
        bias = state.get(f"{src}.bias")
        out[f"{dst}.bias"] = bias.clone() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    if "spatial.conv.conv.weight" in state:
        out["SpatialGate.spatial.conv.weight"] = state["spatial.conv.conv.weight"].flip(1).clone()
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            key = f"spatial.conv.bn.{name}"
            if key in state:
                out[f"SpatialGate.spatial.bn.{name}"] = state[key].clone()
        out.setdefault("SpatialGate.spatial.bn.num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


def _split_gates(state: dict[str, torch.Tensor], mean_first: bool) -> dict[str, torch.Tensor] | None:
    """The two-gate layout: two MLP weights (h, C[, 1, 1]) and (C, h[, 1, 1]) with optional biases, one spatial
    conv weight (1, 2, k, k) with an optional bias, nothing else (a BatchNorm or more layers: another module)."""
    weights = {k[: -len("weight")]: v for k, v in state.items() if k.endswith("weight")}
    if len(weights) != 3 or len(state) > 6:
        return None
    spatial = [p for p, w in weights.items() if w.dim() == 4 and w.shape[:2] == (1, 2) and w.shape[2] == w.shape[3]]
    if len(spatial) != 1:
        return None
    mlp = [p for p in sorted(weights) if p != spatial[0]]
    shapes = [tuple(weights[p].shape) for p in mlp]
    if any(len(sh) not in (2, 4) or sh[2:] not in ((), (1, 1)) for sh in shapes):
        return None
    if shapes[0][:2] != shapes[1][:2][::-1]:
        return None
    if shapes[0][0] > shapes[0][1]:      # the squeezing layer first, whatever the names' order
        mlp.reverse()
    known = {p + "weight" for p in weights} | {p + "bias" for p in weights}
    if set(state) - known or (spatial[0] + "bias") in state and state[spatial[0] + "bias"].numel() != 1:
        return None
    out: dict[str, torch.Tensor] = {}
    for src, dst in zip(mlp, ("ChannelGate.mlp.1", "ChannelGate.mlp.3")):
        weight = weights[src]
        out[f"{dst}.weight"] = weight.reshape(weight.shape[0], weight.shape[1]).clone()
        bias = state.get(src + "bias")
        out[f"{dst}.bias"] = bias.clone() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    conv = weights[spatial[0]]
    out["SpatialGate.spatial.conv.weight"] = (conv.flip(1) if mean_first else conv).clone()
    if spatial[0] + "bias" in state:
        out["SpatialGate.spatial.conv.bias"] = state[spatial[0] + "bias"].clone()
    return out


def convert_split_gates_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map a two-gate CBAM port (channel child with fc1/fc2 or a Sequential MLP, spatial child with one bare
    (1, 2, k, k) conv over cat(mean, max), as luuuyi/CBAM.PyTorch and YOLO ports write it) onto the official
    keys, flipping the conv's input channels to the official (max, mean); None when the layout does not apply."""
    return _split_gates(state, mean_first=True)


def convert_split_gates_max_first_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The same two-gate layout for ports whose spatial pool is cat(max, mean), as the official one."""
    return _split_gates(state, mean_first=False)


KEY_CONVERTERS = (convert_timm_layout, convert_split_gates_layout, convert_split_gates_max_first_layout)
