"""Squeeze-and-Excitation (SE) block.

Paper: Hu, Shen, Sun, "Squeeze-and-Excitation Networks", CVPR 2018, https://arxiv.org/abs/1709.01507.
Official code is Caffe (hujie-frank/SENet); the PyTorch port that loads the converted official weights is
`SEModule(channels, reduction)` of timm/Cadene `senet.py`: global average pool -> fc1 (1x1 conv, bias) ->
ReLU -> fc2 (1x1 conv, bias) -> sigmoid -> x * w. Keys `fc1.*`, `fc2.*`.

Export-safe twin: the pool is a `mean(dim=(2, 3), keepdim=True)` (no AdaptiveAvgPool kernel, no
`view(b, c)` from `x.size()`), ReLU is not in-place. The weights and keys are the same.

The other common layout, two `nn.Linear` in `fc` (keys `fc.0`, `fc.2`, often bias-free), is mapped onto the
canonical keys by `convert_linear_fc_layout` (used by deploykit.blocks.load_checkpoint).

Variants of published networks (defaults give the paper's block): `activation` inside the bottleneck (ReLU in
SENet and MobileNetV3, SiLU in EfficientNet's `SqueezeExcite`, GELU, ...), `gate` (sigmoid, or MobileNetV3's
hard-sigmoid `relu6(x + 3) / 6`), `bias=False` for bias-free 1x1 convs, and `rd_channels` for a squeeze width
that is no C // r (EfficientNet and RegNetY size it from the block's input, torchvision's MobileNetV3 rounds
it to a multiple of 8). Other key layouts: timm `SqueezeExcite` (`conv_reduce`/`conv_expand`) and Linear
`fc1`/`fc2` (KEY_CONVERTERS).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.common import bottleneck_width, global_avg_pool


ACTIVATIONS = ("relu", "relu6", "silu", "gelu", "gelu_tanh", "hardswish")
GATES = ("sigmoid", "hardsigmoid")


def _activation_module(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    return {"relu6": nn.ReLU6, "silu": nn.SiLU, "gelu": nn.GELU, "hardswish": nn.Hardswish}[name]()


def _activation(x: torch.Tensor, name: str) -> torch.Tensor:
    """The bottleneck activation, never in place."""
    if name == "relu":
        return torch.relu(x)
    if name == "relu6":
        return F.relu6(x)
    if name == "silu":
        return F.silu(x)
    if name == "hardswish":
        return F.hardswish(x)
    return F.gelu(x, approximate="tanh" if name == "gelu_tanh" else "none")


class SEModule(nn.Module):
    """Reference SE module, keys as timm/Cadene `SEModule`.

    Args:
        channels: input (and output) channels C.
        reduction: bottleneck ratio r; the hidden width is C // r.
        rd_channels: hidden width, overriding C // r.
        activation: bottleneck activation, one of ACTIVATIONS.
        gate: "sigmoid" or "hardsigmoid".
        bias: whether the two 1x1 convs have a bias.
    """

    def __init__(self, channels: int, reduction: int = 16, *, rd_channels: int | None = None,
                 activation: str = "relu", gate: str = "sigmoid", bias: bool = True):
        super().__init__()
        if activation not in ACTIVATIONS or gate not in GATES:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)} and gate one of "
                             f"{', '.join(GATES)}; got {activation!r}, {gate!r}")
        if rd_channels is not None and rd_channels < 1:
            raise ValueError(f"rd_channels must be at least 1, got {rd_channels}")
        self.activation, self.gate = activation, gate
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        hidden = rd_channels if rd_channels is not None else bottleneck_width(channels, reduction)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, padding=0, bias=bias)
        # `relu` / `sigmoid` keep the original attribute names; they hold the chosen activation and gate.
        self.relu = _activation_module(activation)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, padding=0, bias=bias)
        self.sigmoid = nn.Sigmoid() if gate == "sigmoid" else nn.Hardsigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.avg_pool(x)
        w = self.relu(self.fc1(w))
        w = self.sigmoid(self.fc2(w))
        return x * w


class SEModuleSafe(SEModule):
    """Export-safe SE: ReduceMean instead of an adaptive pool, no in-place activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(_activation(self.fc1(global_avg_pool(x)), self.activation))
        return x * (torch.sigmoid(w) if self.gate == "sigmoid" else F.hardsigmoid(w))


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


def convert_linear_fc12_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map `fc1` / `fc2` nn.Linear layers (2-D weights) onto 1x1 convs; None when it does not apply."""
    w1, w2 = state.get("fc1.weight"), state.get("fc2.weight")
    if w1 is None or w2 is None or w1.dim() != 2 or w2.dim() != 2:
        return None
    out = dict(state)
    out["fc1.weight"], out["fc2.weight"] = w1[:, :, None, None].clone(), w2[:, :, None, None].clone()
    return out


def convert_timm_squeeze_excite_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """Map timm `SqueezeExcite` (efficientnet_blocks / MobileNetV3: `conv_reduce`, `conv_expand`) onto
    `fc1` / `fc2`; None when it does not apply."""
    if "conv_reduce.weight" not in state or "conv_expand.weight" not in state:
        return None
    renamed = {"conv_reduce.": "fc1.", "conv_expand.": "fc2."}
    return {next((new + k[len(old):] for old, new in renamed.items() if k.startswith(old)), k): v
            for k, v in state.items()}


KEY_CONVERTERS = (convert_linear_fc_layout, convert_linear_fc12_layout, convert_timm_squeeze_excite_layout)
