"""Selective Kernel (SK) unit.

Paper: Li, Wang, Hu, Yang, "Selective Kernel Networks", CVPR 2019, https://arxiv.org/abs/1903.06586.
Official code is Caffe (implus/SKNet, `models/sknet50.prototxt`). Its SK unit, with C channels:

- split: two branches on the same input, 3x3 conv groups 32 (pad 1) and 3x3 conv groups 32 dilation 2
  (pad 2, the paper's "5x5"), each without bias, followed by BatchNorm and ReLU;
- fuse: U = U0 + U1, global average pool, fc (1x1 conv, no bias) C -> d with d = max(C / 16, 32),
  BatchNorm, ReLU;
- select: fc (1x1 conv, no bias) d -> 2C, read as (2, C), softmax over the two branches, output
  a0 * U0 + a1 * U1 (BatchNorm eps 1e-5 everywhere).

PyTorch ports differ from it and from each other. This module follows the paper exactly and uses the key
layout of timm's `SelectiveKernel` (`timm/layers/selective_kernel.py`) as built by timm's
`skresnext50_32x4d` (sk_kwargs `split_input=False`, `rd_ratio=1/16`, `rd_divisor=32`: timm's own note calls it
"equivalent to the SKNet-50 model" of the paper), so the `conv2` unit of every block of timm's published
SKNet-50 weights loads with strict=True:
`paths.{0,1}.conv.weight`, `paths.{0,1}.bn.*`, `attn.fc_reduce.weight`, `attn.bn.*`, `attn.fc_select.weight`.
timm sizes d with make_divisible(C / 16, 32), which equals max(C / 16, 32) for every SKNet-50/101 width
(128 ... 1024); `attn_channels` overrides d for other checkpoints. timm's default `split_input=True` variant
(each branch sees half the input channels, used by skresnet18/34) is a different unit and is not covered.

A second layout, ResearchingDexter/SKNet_pytorch `SKConv` (the same paper unit: `conv.{0,1}.{0,1}`,
`fc1.{0,1}`, `fc2`), is mapped onto these keys by `convert_dexter_layout` (KEY_CONVERTERS).

Options for the SK units of published PyTorch code (defaults give the paper's unit): `num_paths` M (branch i is
a 3x3 conv with dilation 1 + i, as both ports build M > 2), and `select_bias` for the biased select convs of
pppLang/SKNet's `SKConv(features, M, G, r)` (`convs.{i}`, `fc`, one `fcs.{i}` 1x1 conv per branch, mapped by
`convert_ppplang_layout` onto one fc_select whose output is the branches' logits in order).

Export-safe twin (`SKConvSafe`, same constructor and keys): with two branches, softmax over the branch axis is
a0 = sigmoid(z0 - z1), a1 = 1 - a0, so the output is U1 + a0 * (U0 - U1): no (B, 2, C, 1, 1) view read from
`x.shape`, no stacked copy of both branches, no Softmax node; the pool is a ReduceMean of each branch
(mean(U0 + U1) = mean(U0) + mean(U1), which skips a full-size add). The sigmoid of a difference also keeps
an fp16 graph finite where exp(z) of a large logit would overflow.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn


class ConvBnRelu(nn.Module):
    """Bias-free conv -> BatchNorm -> ReLU with keys `conv.weight`, `bn.*` (timm `ConvNormAct` layout).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: convolution stride.
        dilation: dilation of the 3x3 kernel; the padding keeps the size ("same" at stride 1).
        groups: convolution groups.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SelectAttention(nn.Module):
    """Fuse and select: pool of U0 + U1 -> fc_reduce -> BN -> ReLU -> fc_select -> softmax over branches.

    Args:
        channels: channels C of each branch.
        attn_channels: width d of the compact feature z.
        num_paths: number of branches (2 in the SK unit).
    """

    def __init__(self, channels: int, attn_channels: int, num_paths: int = 2, bias: bool = False):
        super().__init__()
        self.num_paths = num_paths
        self.fc_reduce = nn.Conv2d(channels, attn_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(attn_channels)
        self.fc_select = nn.Conv2d(attn_channels, channels * num_paths, kernel_size=1, bias=bias)

    def forward(self, paths: torch.Tensor) -> torch.Tensor:
        """paths: (B, M, C, H, W) -> attention weights (B, M, C, 1, 1), summing to 1 over M."""
        z = paths.sum(1).mean((2, 3), keepdim=True)
        z = self.fc_select(F.relu(self.bn(self.fc_reduce(z))))
        b, mc, h, w = z.shape
        return torch.softmax(z.view(b, self.num_paths, mc // self.num_paths, h, w), dim=1)


class SKConv(nn.Module):
    """Reference SK unit (paper semantics, timm `SelectiveKernel` keys).

    Args:
        channels: input and output channels C; divisible by `groups`.
        groups: groups of both branch convolutions (the paper's cardinality, 32).
        reduction: r in d = max(C / r, min_attn_channels).
        min_attn_channels: L in d = max(C / r, L).
        stride: stride of both branches (2 in the first unit of a stage; 1 keeps the input size).
        attn_channels: d, overriding the formula (for checkpoints sized otherwise).
        num_paths: number of branches M (2 in the paper); branch i has dilation 1 + i.
        select_bias: bias on the select conv (the per-branch fcs of pppLang/SKNet have one).
    """

    def __init__(self, channels: int, groups: int = 32, reduction: int = 16, min_attn_channels: int = 32,
                 stride: int = 1, attn_channels: int | None = None, *, num_paths: int = 2,
                 select_bias: bool = False):
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels {channels} must be divisible by groups {groups}")
        if num_paths < 2:
            raise ValueError(f"num_paths must be at least 2, got {num_paths}")
        self.channels = channels
        attn_channels = attn_channels or max(channels // reduction, min_attn_channels)
        self.paths = nn.ModuleList([ConvBnRelu(channels, channels, stride=stride, dilation=1 + i, groups=groups)
                                    for i in range(num_paths)])
        self.attn = SelectAttention(channels, attn_channels, num_paths=num_paths, bias=select_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        paths = torch.stack([path(x) for path in self.paths], dim=1)
        return (paths * self.attn(paths)).sum(1)


class SKConvSafe(SKConv):
    """Export-safe SK unit: two-way softmax as a sigmoid of the logit difference, no 5-D view or stack."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.paths) > 2:
            return self._forward_many(x)
        u0, u1 = self.paths[0](x), self.paths[1](x)
        attn = self.attn
        s = u0.mean((2, 3), keepdim=True) + u1.mean((2, 3), keepdim=True)
        z = attn.fc_select(F.relu(attn.bn(attn.fc_reduce(s))))
        c = self.channels
        a0 = torch.sigmoid(z[:, :c] - z[:, c:])     # softmax([z0, z1])[0]
        return torch.addcmul(u1, a0, u0 - u1)

    def _forward_many(self, x: torch.Tensor) -> torch.Tensor:
        """M > 2 branches: the logits sliced at constant channel offsets, a softmax over a (B, M, C, 1, 1)
        stack of the small logit maps (not of the branches), then a weighted sum."""
        us = [path(x) for path in self.paths]
        attn, c = self.attn, self.channels
        s = sum(u.mean((2, 3), keepdim=True) for u in us)
        z = attn.fc_select(F.relu(attn.bn(attn.fc_reduce(s))))
        a = torch.softmax(torch.stack([z[:, i * c:(i + 1) * c] for i in range(len(us))], dim=1), dim=1)
        out = us[0] * a[:, 0]
        for i in range(1, len(us)):
            out = torch.addcmul(out, us[i], a[:, i])
        return out


def convert_dexter_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map ResearchingDexter/SKNet_pytorch `SKConv` keys onto these; None when the layout does not apply.

    That port's `conv.{i}` is Sequential(conv, BN, ReLU) per branch (dilation 1 + i, groups 32, no bias),
    `fc1` is Sequential(1x1 conv without bias, BN, ReLU) and `fc2` the 1x1 conv to M * C: the same unit.
    """
    if "fc2.weight" not in state or "conv.0.0.weight" not in state:
        return None
    prefixes = {"fc1.0.": "attn.fc_reduce.", "fc1.1.": "attn.bn.", "fc2.": "attn.fc_select."}
    return _renamed(state, prefixes, branch=re.compile(r"conv\.(\d+)\.([01])\.(.*)"))


def convert_ppplang_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map pppLang/SKNet `SKConv(features, M, G, r)` keys onto these; None when the layout does not apply.

    `convs.{i}` is Sequential(3x3 conv dilation 1 + i without bias, BN, ReLU), `fc` Sequential(1x1 conv without
    bias, BN, ReLU), and `fcs.{i}` one biased 1x1 conv d -> C per branch, whose outputs are softmaxed over the
    branches: stacked in branch order they are one conv d -> M * C (fc_select, select_bias=True).
    """
    if "fc.0.weight" not in state or "convs.0.0.weight" not in state or "fcs.0.weight" not in state:
        return None
    fcs = sorted({int(m.group(1)) for k in state if (m := re.fullmatch(r"fcs\.(\d+)\.weight", k))})
    if fcs != list(range(len(fcs))):
        return None
    out = _renamed({k: v for k, v in state.items() if not k.startswith("fcs.")},
                   {"fc.0.": "attn.fc_reduce.", "fc.1.": "attn.bn."}, branch=re.compile(r"convs\.(\d+)\.([01])\.(.*)"))
    out["attn.fc_select.weight"] = torch.cat([state[f"fcs.{i}.weight"] for i in fcs])
    if all(f"fcs.{i}.bias" in state for i in fcs):
        out["attn.fc_select.bias"] = torch.cat([state[f"fcs.{i}.bias"] for i in fcs])
    elif any(f"fcs.{i}.bias" in state for i in fcs):
        return None
    return out


def _renamed(state: dict, prefixes: dict[str, str], branch: re.Pattern) -> dict:
    """Keys renamed by prefix, and branch keys `<i>.<0 conv | 1 bn>.<name>` to `paths.<i>.<conv | bn>.<name>`."""
    out = {}
    for key, value in state.items():
        m = branch.fullmatch(key)
        if m:
            out[f"paths.{m.group(1)}.{('conv', 'bn')[int(m.group(2))]}.{m.group(3)}"] = value
            continue
        for old, new in prefixes.items():
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            out[key] = value
    return out


KEY_CONVERTERS = (convert_dexter_layout, convert_ppplang_layout)
