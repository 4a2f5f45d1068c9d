"""Small pieces the export-safe twins share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def bottleneck_width(channels: int, ratio: int) -> int:
    """C // r, the hidden width of a reduction MLP; the authors' code would build a 0-wide layer that fails at
    the first forward (or divide by zero), so such arguments are refused when the block is built."""
    if ratio < 1 or channels // ratio < 1:
        raise ValueError(f"reduction ratio {ratio} leaves no hidden channels for {channels} channels: "
                         f"it must be between 1 and {channels}")
    return channels // ratio


def linear_as_conv1x1(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """Apply a token-wise nn.Linear to an NCHW tensor as a 1x1 convolution (no layout change, same weights)."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over H and W, kept as (B, C, 1, 1): one ReduceMean, no kernel size read from x.size()."""
    return x.mean(dim=(2, 3), keepdim=True)


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max over H and W, kept as (B, C, 1, 1): one ReduceMax, no tuple return and no kernel from x.size()."""
    return x.amax(dim=(2, 3), keepdim=True)
