"""Pyramid Squeeze Attention (PSA), the module of EPSANet.

Paper: Zhang, Zu, Lu, Zou, Meng, "EPSANet: An Efficient Pyramid Squeeze Attention Block on Convolutional
Neural Network", arXiv 2021, https://arxiv.org/abs/2105.14447. Official code: murufeng/EPSANet,
`models/epsanet.py` (`PSAModule`) and `models/SE_weight_module.py` (`SEWeightModule`).

`PSAModule(inplans, planes, conv_kernels=(3, 5, 7, 9), stride=1, conv_groups=(1, 4, 8, 16))`: four
convolutions `conv_1..conv_4` each map all `inplans` channels to `planes // 4` (kernel k, padding k // 2, no
bias); one SE shared by the four branches (`se`: global average pool -> `fc1` 1x1 conv with bias -> ReLU ->
`fc2` -> sigmoid, reduction 16) gives each branch a channel vector; a softmax across the four branches turns
them into weights; the weighted branches are concatenated in REVERSED order [branch 4, 3, 2, 1]. The order is
part of the function the released weights learnt (the next conv's input channels follow it), so it is kept.
Keys: `conv_1.weight` .. `conv_4.weight`, `se.fc1.*`, `se.fc2.*`. In EPSANet the module is each block's
`conv2` (an `EPSABlock` state dict loads through `convert_epsablock_layout`). The "small" networks use the
default groups, the "large" ones (32, 32, 32, 32). With planes < 64 the SE's hidden width planes // 64 is 0
and the official module fails in its first forward; the reference refuses it at construction instead.

Export-safe twin (same constructor and keys): the official forward views the features as 5-D
(B, 4, planes/4, H, W) with sizes read from the tensor, runs the SE four times, softmaxes the 5-D view and
rebuilds the output with a Python loop of concatenations. The twin instead pools each branch with a ReduceMean
and places the four pooled vectors side by side on the width axis, (B, planes/4, 1, 4): the SE's 1x1
convolutions act on each of those positions independently, so one SE pass gives all four branch vectors and the
softmax over branches is a static 4-D `softmax(dim=3)`. Each branch is scaled by its column and the branches
are concatenated once, in the reversed order. No reshape, no size read from the tensor, no in-place ReLU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deploykit.blocks.se import SEModule

# EPSABlock submodules around the PSA module (which is the block's `conv2`).
_EPSABLOCK_PREFIXES = ("conv1.", "bn1.", "bn2.", "conv3.", "bn3.", "downsample.")


class SEWeightModule(SEModule):
    """EPSANet's SE weight: the SE module's layers and keys, returning the sigmoid channel vector only (the
    caller multiplies).

    Args:
        channels: channels of the branch it weights.
        reduction: hidden width is channels // reduction.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class PSAModule(nn.Module):
    """Reference PSA module with the official constructor, keys and forward.

    Args:
        inplans: input channels (official spelling).
        planes: output channels; each of the four branches has planes // 4.
        conv_kernels: kernel sizes of conv_1..conv_4.
        stride: stride of every branch convolution.
        conv_groups: groups of conv_1..conv_4.
    """

    def __init__(self, inplans: int, planes: int, conv_kernels: Sequence[int] = (3, 5, 7, 9), stride: int = 1,
                 conv_groups: Sequence[int] = (1, 4, 8, 16)):
        super().__init__()
        if len(conv_kernels) != 4 or len(conv_groups) != 4:
            raise ValueError(f"PSA has four branches: got conv_kernels {conv_kernels}, conv_groups {conv_groups}")
        if planes % 4:
            raise ValueError(f"planes ({planes}) must be divisible by the 4 branches")
        self.split_channel = planes // 4
        if self.split_channel // 16 < 1:
            raise ValueError(f"planes ({planes}) must be >= 64: the shared SE reduces planes // 4 by 16")
        convs = []
        for kernel, groups in zip(conv_kernels, conv_groups, strict=True):
            convs.append(nn.Conv2d(inplans, self.split_channel, kernel_size=kernel, stride=stride,
                                   padding=kernel // 2, groups=groups, bias=False))
        self.conv_1, self.conv_2, self.conv_3, self.conv_4 = convs
        self.se = SEWeightModule(self.split_channel)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        branches = [self.conv_1(x), self.conv_2(x), self.conv_3(x), self.conv_4(x)]
        h, w = branches[0].shape[2], branches[0].shape[3]
        feats = torch.cat(branches, dim=1).view(b, 4, self.split_channel, h, w)
        se = torch.cat([self.se(branch) for branch in branches], dim=1).view(b, 4, self.split_channel, 1, 1)
        weighted = feats * self.softmax(se)
        # The official loop prepends each branch: the output is [branch 4, branch 3, branch 2, branch 1].
        return torch.cat([weighted[:, i] for i in (3, 2, 1, 0)], dim=1)


class PSAModuleSafe(PSAModule):
    """Export-safe PSA: one SE pass over the four pooled branches laid out on the width axis, static softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Output order, reversed as in the official module.
        branches = (self.conv_4(x), self.conv_3(x), self.conv_2(x), self.conv_1(x))
        pooled = torch.cat([branch.mean(dim=(2, 3), keepdim=True) for branch in branches], dim=3)  # (B, c, 1, 4)
        # 1x1 convs treat the four columns independently: the shared SE applied to each branch at once.
        se = torch.sigmoid(self.se.fc2(torch.relu(self.se.fc1(pooled))))
        weights = torch.softmax(se, dim=3)                                                       # over branches
        return torch.cat([branch * weights[:, :, :, i:i + 1] for i, branch in enumerate(branches)], dim=1)


def convert_epsablock_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Take the PSA keys (`conv2.*`) out of an official EPSABlock state dict; None when it is not one."""
    if "conv2.conv_1.weight" not in state:
        return None
    if not all(k.startswith(("conv2.",) + _EPSABLOCK_PREFIXES) for k in state):
        return None
    return {k[len("conv2."):]: v for k, v in state.items() if k.startswith("conv2.")}


KEY_CONVERTERS = (convert_epsablock_layout,)
