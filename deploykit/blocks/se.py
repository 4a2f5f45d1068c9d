"""Squeeze-and-Excitation (SE) block.

Paper: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
Official code is Caffe (hujie-frank/SENet); the PyTorch port that loads the converted official weights is
`SEModule(channels, reduction)` of timm/Cadene `senet.py`: global average pool -> fc1 (1x1 conv, bias) ->
ReLU -> fc2 (1x1 conv, bias) -> sigmoid -> x * w. Keys `fc1.*`, `fc2.*`.

Export-safe twin: the pool is a `mean(dim=(2, 3), keepdim=True)` (no AdaptiveAvgPool kernel, no
`view(b, c)` from `x.size()`), ReLU is not in-place. The weights and keys are the same.

The other common layout, two `nn.Linear` in `fc` (keys `fc.0`, `fc.2`, often bias-free), is mapped onto the
canonical keys by `convert_linear_fc_layout` (used by deploykit.blocks.load_checkpoint).
"""

from __future__ import annotations

import torch
from torch import nn

from deploykit.blocks.common import bottleneck_width, global_avg_pool


class SEModule(nn.Module):
    """Reference SE module, keys as timm/Cadene `SEModule`.

    Args:
        channels: input (and output) channels C.
        reduction: bottleneck ratio r; the hidden width is C // r.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        hidden = bottleneck_width(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.avg_pool(x)
        w = self.relu(self.fc1(w))
        w = self.sigmoid(self.fc2(w))
        return x * w


class SEModuleSafe(SEModule):
    """Export-safe SE: ReduceMean instead of an adaptive pool, no in-place ReLU."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.relu(self.fc1(global_avg_pool(x)))
        return x * torch.sigmoid(self.fc2(w))


def convert_linear_fc_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map the `fc.0` / `fc.2` nn.Linear layout onto `fc1` / `fc2` 1x1 convs; None when it does not apply.

    A bias-free Linear becomes a conv with a zero bias, which computes the same function.
    """
    if "fc.0.weight" not in state or "fc.2.weight" not in state:
        return None
    out = {k: v for k, v in state.items() if not k.startswith("fc.")}
    for src, dst in (("fc.0", "fc1"), ("fc.2", "fc2")):
        weight = state[f"{src}.weight"]
        out[f"{dst}.weight"] = weight[:, :, None, None].clone()
        bias = state.get(f"{src}.bias")
        out[f"{dst}.bias"] = bias.clone() if bias is not None else torch.zeros(weight.shape[0], dtype=weight.dtype)
    return out


KEY_CONVERTERS = (convert_linear_fc_layout,)
