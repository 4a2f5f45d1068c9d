"""make_export_safe on the CBAM and BAM variants of published model code, written here in the shape of the
originals, and on look-alikes that must be kept.

Formulations followed (read, not copied): Jongchan/attention-module `MODELS/cbam.py` (pool types avg, max, lp,
lse; `no_spatial`) and `MODELS/bam.py` (`num_layers`, `dilation_conv_num`, `dilation_val`); timm
`layers/cbam.py::CbamModule` (`spatial_kernel_size`, `mlp_bias`, rounded squeeze width); luuuyi/CBAM.PyTorch
(`ChannelAttention` fc1/relu1/fc2 without bias, `SpatialAttention(kernel_size)` with a bare conv over
cat(avg, max)); the YOLO ports' CBAM (`shared_MLP` Sequential, a biased spatial conv).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.convert import make_export_safe
from tests.networks.convert_helpers import Host, assert_swapped_after_proof

# --- Jongchan/attention-module CBAM, all pool types ----------------------------------------------------------


class BasicConv(nn.Module):
    def __init__(self, cin, cout, k, padding=0, relu=True, bn=True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01) if bn else None
        self.relu = nn.ReLU() if relu else None

    def forward(self, x):
        x = self.conv(x)
        x = self.bn(x) if self.bn is not None else x
        return self.relu(x) if self.relu is not None else x


def logsumexp_2d(tensor):
    flat = tensor.view(tensor.size(0), tensor.size(1), -1)
    s, _ = torch.max(flat, dim=2, keepdim=True)
    return s + (flat - s).exp().sum(dim=2, keepdim=True).log()


class JongchanChannelGate(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max")):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(gate_channels, gate_channels // reduction_ratio),
                                 nn.ReLU(), nn.Linear(gate_channels // reduction_ratio, gate_channels))
        self.pool_types = list(pool_types)

    def forward(self, x):
        att = None
        size = (x.size(2), x.size(3))
        for pool_type in self.pool_types:
            if pool_type == "avg":
                raw = self.mlp(F.avg_pool2d(x, size, stride=size))
            elif pool_type == "max":
                raw = self.mlp(F.max_pool2d(x, size, stride=size))
            elif pool_type == "lp":
                raw = self.mlp(F.lp_pool2d(x, 2, size, stride=size))
            else:
                raw = self.mlp(logsumexp_2d(x))
            att = raw if att is None else att + raw
        return x * torch.sigmoid(att).unsqueeze(2).unsqueeze(3).expand_as(x)


class JongchanSpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = BasicConv(2, 1, 7, padding=3, relu=False)

    def forward(self, x):
        pooled = torch.cat((torch.max(x, 1)[0].unsqueeze(1), torch.mean(x, 1).unsqueeze(1)), dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class JongchanCBAM(nn.Module):
    def __init__(self, gate_channels, reduction_ratio=16, pool_types=("avg", "max"), no_spatial=False):
        super().__init__()
        self.ChannelGate = JongchanChannelGate(gate_channels, reduction_ratio, pool_types)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = JongchanSpatialGate()

    def forward(self, x):
        x_out = self.ChannelGate(x)
        return x_out if self.no_spatial else self.SpatialGate(x_out)


# --- timm CbamModule -----------------------------------------------------------------------------------------


class TimmChannelAttn(nn.Module):
    def __init__(self, channels, rd_channels, mlp_bias=False):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=mlp_bias)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=mlp_bias)

    def forward(self, x):
        x_avg = self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True))))
        x_max = self.fc2(self.act(self.fc1(x.amax((2, 3), keepdim=True))))
        return x * torch.sigmoid(x_avg + x_max)


class ConvNorm(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x):
        return self.bn(self.conv(x))


class TimmSpatialAttn(nn.Module):
    def __init__(self, kernel_size=7):
        super().__init__()
        self.conv = ConvNorm(kernel_size)

    def forward(self, x):
        x_attn = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(x_attn))


class TimmCbamModule(nn.Module):
    def __init__(self, channels, rd_channels, spatial_kernel_size=7, mlp_bias=False):
        super().__init__()
        self.channel = TimmChannelAttn(channels, rd_channels, mlp_bias)
        self.spatial = TimmSpatialAttn(spatial_kernel_size)

    def forward(self, x):
        return self.spatial(self.channel(x))


# --- luuuyi/CBAM.PyTorch and YOLO-port CBAM ------------------------------------------------------------------


class LuuuyiChannelAttention(nn.Module):
    def __init__(self, in_planes, ratio=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.fc1 = nn.Conv2d(in_planes, in_planes // ratio, 1, bias=False)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Conv2d(in_planes // ratio, in_planes, 1, bias=False)

    def forward(self, x):
        avg_out = self.fc2(self.relu1(self.fc1(self.avg_pool(x))))
        max_out = self.fc2(self.relu1(self.fc1(self.max_pool(x))))
        return torch.sigmoid(avg_out + max_out)


class LuuuyiSpatialAttention(nn.Module):
    def __init__(self, kernel_size=7, bias=False):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x):
        avg_out = torch.mean(x, dim=1, keepdim=True)
        max_out, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class LuuuyiCBAM(nn.Module):
    def __init__(self, planes, ratio=16, kernel_size=7):
        super().__init__()
        self.ca = LuuuyiChannelAttention(planes, ratio)
        self.sa = LuuuyiSpatialAttention(kernel_size)

    def forward(self, x):
        x = self.ca(x) * x
        return self.sa(x) * x


class YoloChannelAttention(nn.Module):
    def __init__(self, channel, ratio=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.shared_MLP = nn.Sequential(nn.Conv2d(channel, channel // ratio, 1, bias=False), nn.ReLU(),
                                        nn.Conv2d(channel // ratio, channel, 1, bias=False))

    def forward(self, x):
        return torch.sigmoid(self.shared_MLP(self.avg_pool(x)) + self.shared_MLP(self.max_pool(x)))


class YoloSpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv2d = nn.Conv2d(2, 1, kernel_size=7, stride=1, padding=3)   # biased, as in those ports

    def forward(self, x):
        avgout = torch.mean(x, dim=1, keepdim=True)
        maxout, _ = torch.max(x, dim=1, keepdim=True)
        return torch.sigmoid(self.conv2d(torch.cat([avgout, maxout], dim=1)))


class YoloCBAM(nn.Module):
    def __init__(self, c1, ratio=8):
        super().__init__()
        self.channel_attention = YoloChannelAttention(c1, ratio)
        self.spatial_attention = YoloSpatialAttention()

    def forward(self, x):
        out = self.channel_attention(x) * x
        return self.spatial_attention(out) * out




CBAM_CASES = {
    "jongchan_avg_max": (lambda: JongchanCBAM(32, 8), 32, {"pool_types": ["avg", "max"], "no_spatial": False}),
    "jongchan_all_pools": (lambda: JongchanCBAM(32, 8, ("avg", "max", "lp", "lse")), 32,
                           {"pool_types": ["avg", "max", "lp", "lse"]}),
    "jongchan_no_spatial": (lambda: JongchanCBAM(32, 4, no_spatial=True), 32, {"no_spatial": True}),
    "timm_kernel3_bias_rounded_width": (lambda: TimmCbamModule(30, 8, spatial_kernel_size=3, mlp_bias=True), 30,
                                        {"spatial_kernel_size": 3, "rd_channels": 8}),
    "timm_default": (lambda: TimmCbamModule(32, 2), 32, {"reduction_ratio": 16}),
    "luuuyi_kernel3": (lambda: LuuuyiCBAM(32, 4, kernel_size=3), 32,
                       {"spatial_kernel_size": 3, "spatial_bn": False, "reduction_ratio": 4}),
    "luuuyi_kernel7": (lambda: LuuuyiCBAM(64, 16), 64, {"spatial_bn": False}),
    "yolo_shared_mlp_biased_spatial": (lambda: YoloCBAM(32), 32, {"spatial_bn": False, "spatial_bias": True}),
}


@pytest.mark.parametrize("name", list(CBAM_CASES))
def test_cbam_variant_is_swapped_after_proof(name):
    factory, channels, expected = CBAM_CASES[name]
    assert_swapped_after_proof(factory(), channels, kind="cbam", twin="CBAMSafe", expected=expected, seed=7,
                               proof_size=(2, 3, 12, 10), checks=(((1, 3, 5, 9), 1.0), ((3, 3, 21, 17), 5.0)),
                               tol=1e-4)


class SpatialFirstCBAM(JongchanCBAM):
    """Official keys, gates applied in the other order: a different function."""

    def forward(self, x):
        return self.ChannelGate(self.SpatialGate(x))


class MaxMeanLuuuyi(LuuuyiCBAM):
    """luuuyi's keys with a spatial pool ordered (max, mean): proved through the max-first mapping."""

    def forward(self, x):
        x = self.ca(x) * x
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return torch.sigmoid(self.sa.conv1(pooled)) * x


def test_cbam_lookalike_is_kept_and_max_first_port_is_swapped():
    model = randomize_for_verification(Host(SpatialFirstCBAM(32, 8), 32), seed=8).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 8, 8))
    assert not report.replaced and report.not_replaced[0].path == "block", report.summary()
    assert "differ" in report.not_replaced[0].reason and type(converted.block) is SpatialFirstCBAM

    model = randomize_for_verification(Host(MaxMeanLuuuyi(32, 4), 32), seed=8).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 8, 8))
    assert report.replaced and report.replaced[0].source.endswith("convert_split_gates_max_first_layout")
    assert report.model_check["passed"]


# --- BAM with its options ------------------------------------------------------------------------------------


class BamChannelGate(nn.Module):
    def __init__(self, gate_channel, reduction_ratio=16, num_layers=1):
        super().__init__()
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("flatten", nn.Flatten())
        chans = [gate_channel] + [gate_channel // reduction_ratio] * num_layers + [gate_channel]
        for i in range(len(chans) - 2):
            self.gate_c.add_module(f"gate_c_fc_{i}", nn.Linear(chans[i], chans[i + 1]))
            self.gate_c.add_module(f"gate_c_bn_{i + 1}", nn.BatchNorm1d(chans[i + 1]))
            self.gate_c.add_module(f"gate_c_relu_{i + 1}", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(chans[-2], chans[-1]))

    def forward(self, x):
        pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2))
        return self.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(x)


class BamSpatialGate(nn.Module):
    def __init__(self, gate_channel, reduction_ratio=16, dilation_conv_num=2, dilation_val=4):
        super().__init__()
        mid = gate_channel // reduction_ratio
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(gate_channel, mid, 1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(mid))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(dilation_conv_num):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(mid, mid, 3, padding=dilation_val,
                                                                     dilation=dilation_val))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(mid))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(mid, 1, 1))

    def forward(self, x):
        return self.gate_s(x).expand_as(x)


class OfficialBAM(nn.Module):
    def __init__(self, gate_channel, reduction_ratio=16, num_layers=1, dilation_conv_num=2, dilation_val=4):
        super().__init__()
        self.channel_att = BamChannelGate(gate_channel, reduction_ratio, num_layers)
        self.spatial_att = BamSpatialGate(gate_channel, reduction_ratio, dilation_conv_num, dilation_val)

    def forward(self, x):
        return (1 + torch.sigmoid(self.channel_att(x) * self.spatial_att(x))) * x


class PaperSumBAM(OfficialBAM):
    """The paper's formula, a sum of the branches: the official keys, another function."""

    def forward(self, x):
        return (1 + torch.sigmoid(self.channel_att(x) + self.spatial_att(x))) * x


@pytest.mark.parametrize("options", [{}, {"num_layers": 2}, {"dilation_conv_num": 1, "dilation_val": 2},
                                     {"reduction_ratio": 4, "num_layers": 3, "dilation_conv_num": 3,
                                      "dilation_val": 1}], ids=["official", "layers2", "dil2x1", "r4_l3_d1x3"])
def test_bam_options_are_swapped_after_proof(options):
    block = OfficialBAM(32, **{"reduction_ratio": 8, **options})
    model = randomize_for_verification(Host(block, 32), seed=9).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 12, 12))
    assert [c.path for c in report.replaced] == ["block"], report.summary()
    args = report.replaced[0].args
    assert args["num_layers"] == options.get("num_layers", 1)
    assert args["dilation_conv_num"] == options.get("dilation_conv_num", 2)
    assert args["dilation_val"] == options.get("dilation_val", 4)
    assert type(converted.block).__name__ == "BAMSafe"
    x = torch.randn(3, 3, 16, 16) * 3
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), atol=1e-4, rtol=1e-4)


def test_bam_with_the_papers_sum_is_kept():
    model = randomize_for_verification(Host(PaperSumBAM(32, 8), 32), seed=9).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 12, 12))
    assert not report.replaced and report.not_replaced[0].block == "bam", report.summary()
    assert "differ" in report.not_replaced[0].reason and type(converted.block) is PaperSumBAM
