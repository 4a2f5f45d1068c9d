"""make_export_safe on the SE variants of published model code, each written here in the shape of the original
(constructor, submodule names, forward), and on SE look-alikes that must be kept.

Formulations followed (read, not copied): torchvision `ops/misc.py::SqueezeExcitation` (fc1/fc2 Conv2d,
`activation`, `scale_activation`) and its MobileNetV3 use (`scale_activation=nn.Hardsigmoid`, squeeze width
`_make_divisible(expanded // 4, 8)`); timm `efficientnet_blocks.py::SqueezeExcite` (conv_reduce / act1 /
conv_expand / gate, SiLU in EfficientNet, squeeze width from the block input); timm
`layers/squeeze_excite.py::SEModule` as RegNetY builds it (fc1 / bn=Identity / act / fc2 / gate, `add_maxpool`
option); d-li14/mobilenetv3.pytorch `SELayer` (Linear `fc` Sequential, `h_sigmoid` = ReLU6(x + 3) / 6);
hujie-frank/SENet-style Linear SE with and without bias.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.convert import make_export_safe
from tests.networks.convert_helpers import Host, assert_swapped_after_proof


def _make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class TorchvisionSqueezeExcitation(nn.Module):
    def __init__(self, input_channels, squeeze_channels, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


class TimmSqueezeExcite(nn.Module):
    """timm efficientnet_blocks.SqueezeExcite; `gate_fn` lets a test pass a plain function as the gate."""

    def __init__(self, in_chs, rd_ratio=0.25, rd_channels=None, act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        rd_channels = rd_channels or round(in_chs * rd_ratio)
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = act_layer(inplace=True) if act_layer in (nn.ReLU, nn.SiLU, nn.Hardswish) else act_layer()
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_expand(self.act1(self.conv_reduce(x_se)))
        return x * self.gate(x_se)


class TimmHardSigmoid(nn.Module):
    """timm's fallback hard sigmoid: relu6(x + 3) / 6, written as a function of its own."""

    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


class TimmSEModule(nn.Module):
    def __init__(self, channels, rd_ratio=1.0 / 16, rd_channels=None, add_maxpool=False, bias=True,
                 act_layer=nn.ReLU, gate_layer=nn.Sigmoid):
        super().__init__()
        self.add_maxpool = add_maxpool
        rd_channels = rd_channels or round(channels * rd_ratio)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias)
        self.bn = nn.Identity()
        self.act = act_layer(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias)
        self.gate = gate_layer()

    def forward(self, x):
        x_se = x.mean((2, 3), keepdim=True)
        if self.add_maxpool:
            x_se = 0.5 * x_se + 0.5 * x.amax((2, 3), keepdim=True)
        x_se = self.fc2(self.act(self.bn(self.fc1(x_se))))
        return x * self.gate(x_se)


class HSigmoid(nn.Module):
    def __init__(self, inplace=True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x):
        return self.relu(x + 3) / 6


class DLi14SELayer(nn.Module):
    """d-li14/mobilenetv3.pytorch SELayer: Linear layers in `fc`, h_sigmoid gate."""

    def __init__(self, channel, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channel, _make_divisible(channel // reduction, 8)), nn.ReLU(inplace=True),
                                nn.Linear(_make_divisible(channel // reduction, 8), channel), HSigmoid())

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        return x * self.fc(y).view(b, c, 1, 1)


class LinearFc12SE(nn.Module):
    """SE with two named nn.Linear layers (fc1, fc2) and functional activations, with or without bias."""

    def __init__(self, channels, reduction, bias, act=F.relu):
        super().__init__()
        self.fc1 = nn.Linear(channels, channels // reduction, bias=bias)
        self.fc2 = nn.Linear(channels // reduction, channels, bias=bias)
        self.act = act

    def forward(self, x):
        w = torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3))))))
        return x * w[:, :, None, None]




CASES = {
    # name: (block factory, channels, expected args subset)
    "torchvision_relu_sigmoid": (lambda: TorchvisionSqueezeExcitation(32, 8), 32,
                                 {"activation": "relu", "gate": "sigmoid", "reduction": 4}),
    "torchvision_mobilenetv3_hardsigmoid": (
        lambda: TorchvisionSqueezeExcitation(120, _make_divisible(120 // 4, 8), scale_activation=nn.Hardsigmoid),
        120, {"activation": "relu", "gate": "hardsigmoid", "rd_channels": 32}),
    "torchvision_silu": (lambda: TorchvisionSqueezeExcitation(48, 12, activation=nn.SiLU), 48,
                         {"activation": "silu", "gate": "sigmoid"}),
    "timm_efficientnet_silu": (lambda: TimmSqueezeExcite(96, rd_channels=4, act_layer=nn.SiLU), 96,
                               {"activation": "silu", "gate": "sigmoid", "reduction": 24}),
    "timm_efficientnet_rd_from_block_input": (lambda: TimmSqueezeExcite(144, rd_channels=10, act_layer=nn.SiLU),
                                              144, {"activation": "silu", "reduction": 14}),
    "timm_mobilenetv3_hard_sigmoid_function": (
        lambda: TimmSqueezeExcite(40, rd_channels=16, gate_layer=TimmHardSigmoid), 40,
        {"activation": "relu", "gate": "hardsigmoid", "rd_channels": 16}),
    "timm_gelu": (lambda: TimmSqueezeExcite(32, act_layer=nn.GELU), 32, {"activation": "gelu"}),
    "timm_regnety_semodule": (lambda: TimmSEModule(152, rd_channels=14), 152,
                              {"activation": "relu", "gate": "sigmoid", "rd_channels": 14}),
    "timm_semodule_no_bias": (lambda: TimmSEModule(64, rd_ratio=0.25, bias=False), 64,
                              {"bias": False, "reduction": 4}),
    "dli14_linear_hsigmoid": (lambda: DLi14SELayer(40), 40, {"gate": "hardsigmoid", "activation": "relu"}),
    "linear_fc12_bias": (lambda: LinearFc12SE(32, 4, True), 32, {"reduction": 4}),
    "linear_fc12_no_bias_functional_silu": (lambda: LinearFc12SE(32, 4, False, act=F.silu), 32,
                                            {"activation": "silu", "bias": False}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_se_variant_is_swapped_after_proof(name):
    factory, channels, expected = CASES[name]
    # The checks after the proof use new sizes and data, including large activations (hard-sigmoid
    # saturates, ReLU6 clips at 6).
    assert_swapped_after_proof(factory(), channels, kind="se", twin="SEModuleSafe", expected=expected, seed=5,
                               proof_size=(2, 3, 11, 13), checks=(((1, 3, 7, 5), 1.0), ((3, 3, 20, 16), 8.0)),
                               tol=1e-5)


class AttentionPoolSE(TimmSEModule):
    """SE's keys, but the squeeze is a softmax-weighted spatial pool (GCNet-like): a different function."""

    def forward(self, x):
        weights = torch.softmax(x.mean(1, keepdim=True).flatten(2), dim=-1)
        x_se = (x.flatten(2) * weights).sum(-1)[:, :, None, None]
        return x * self.gate(self.fc2(self.act(self.fc1(x_se))))


class TanhGateSE(TimmSqueezeExcite):
    """EfficientNet's SE with a gate no twin has ((1 + tanh) / 2 is a sigmoid of 2x, not of x)."""

    def forward(self, x):
        x_se = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * (1 + torch.tanh(x_se)) / 2


@pytest.mark.parametrize("block,channels", [(lambda: TimmSEModule(32, rd_ratio=0.25, add_maxpool=True), 32),
                                            (lambda: AttentionPoolSE(32, rd_ratio=0.25), 32),
                                            (lambda: TanhGateSE(32, act_layer=nn.SiLU), 32)],
                         ids=["timm_add_maxpool", "attention_pool", "tanh_gate"])
def test_se_lookalikes_are_kept_with_a_reason(block, channels):
    model = randomize_for_verification(Host(block(), channels), seed=6).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 9, 9))
    assert not report.replaced and [c.path for c in report.not_replaced] == ["block"], report.summary()
    kept = report.not_replaced[0]
    assert kept.block == "se" and "differ" in kept.reason and "other activation/gate options" in kept.reason
    assert type(converted.block) is type(model.block) and report.model_check["passed"]


class VitMlp(nn.Module):
    """A transformer MLP (Linear fc1 expanding, GELU, fc2): shares SE's key names only, and is not reported."""

    def __init__(self, dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def test_transformer_mlp_is_not_an_se_candidate():
    model = nn.Sequential(VitMlp(16), VitMlp(16))
    _, report = make_export_safe(model, torch.randn(2, 5, 16))
    assert not report.replaced and not report.not_replaced, report.summary()
