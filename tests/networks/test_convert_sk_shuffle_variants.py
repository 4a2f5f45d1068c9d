"""make_export_safe on the SK and Shuffle Attention units of published PyTorch code, written here in the shape
of the originals, and on look-alikes that must be kept.

Formulations followed (read, not copied): pppLang/SKNet `SKConv(features, M, G, r, stride, L)` (current
version: `convs.{i}` 3x3 conv with dilation 1 + i, `fc` conv-BN-ReLU, one biased `fcs.{i}` per branch, softmax
over M; widely copied, e.g. External-Attention's SKAttention); ResearchingDexter/SKNet_pytorch `SKConv(in, out,
stride, M, r, L)` (`conv.{i}`, `fc1`, `fc2` to M * C, reshape to (B, M, C, -1)); wofmanaf/SA-Net `sa_layer
(channel, groups)`; External-Attention's `ShuffleAttention(channel, reduction, G)` (attribute `G`).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.convert import make_export_safe
from tests.networks.convert_helpers import Host, assert_swapped_after_proof


class PppLangSKConv(nn.Module):
    def __init__(self, features, M=2, G=32, r=16, stride=1, L=32):
        super().__init__()
        d = max(int(features / r), L)
        self.M, self.features = M, features
        self.convs = nn.ModuleList([nn.Sequential(
            nn.Conv2d(features, features, kernel_size=3, stride=stride, padding=1 + i, dilation=1 + i, groups=G,
                      bias=False),
            nn.BatchNorm2d(features), nn.ReLU(inplace=False)) for i in range(M)])
        self.gap = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Sequential(nn.Conv2d(features, d, kernel_size=1, stride=1, bias=False), nn.BatchNorm2d(d),
                                nn.ReLU(inplace=False))
        self.fcs = nn.ModuleList([nn.Conv2d(d, features, kernel_size=1, stride=1) for _ in range(M)])
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        batch_size = x.shape[0]
        feats = torch.cat([conv(x) for conv in self.convs], dim=1)
        feats = feats.view(batch_size, self.M, self.features, feats.shape[2], feats.shape[3])
        feats_z = self.fc(self.gap(torch.sum(feats, dim=1)))
        attention = torch.cat([fc(feats_z) for fc in self.fcs], dim=1)
        attention = self.softmax(attention.view(batch_size, self.M, self.features, 1, 1))
        return torch.sum(feats * attention, dim=1)


class DexterSKConv(nn.Module):
    def __init__(self, in_channels, out_channels, stride=1, M=2, r=16, L=32, groups=32):
        super().__init__()
        d = max(in_channels // r, L)
        self.M, self.out_channels = M, out_channels
        self.conv = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, padding=1 + i, dilation=1 + i, groups=groups,
                      bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)) for i in range(M)])
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Sequential(nn.Conv2d(out_channels, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU(inplace=True))
        self.fc2 = nn.Conv2d(d, out_channels * M, 1, 1, bias=False)
        self.softmax = nn.Softmax(dim=1)

    def forward(self, x):
        batch_size = x.size(0)
        output = [conv(x) for conv in self.conv]
        U = output[0]
        for o in output[1:]:
            U = U + o
        a_b = self.fc2(self.fc1(self.global_pool(U)))
        a_b = self.softmax(a_b.reshape(batch_size, self.M, self.out_channels, -1))
        a_b = [a.reshape(batch_size, self.out_channels, 1, 1) for a in a_b.chunk(self.M, dim=1)]
        V = output[0] * a_b[0]
        for o, a in zip(output[1:], a_b[1:]):
            V = V + o * a
        return V




SK_CASES = {
    "ppplang_M2_G8": (lambda: PppLangSKConv(32, M=2, G=8, r=4, L=8), 32,
                      {"num_paths": None, "select_bias": True, "groups": 8, "attn_channels": 8}),
    "ppplang_M3_G4_stride2": (lambda: PppLangSKConv(32, M=3, G=4, r=2, stride=2, L=8), 32,
                              {"num_paths": 3, "select_bias": True, "groups": 4, "stride": 2}),
    "ppplang_M4_G32": (lambda: PppLangSKConv(64, M=4, G=32, L=16), 64, {"num_paths": 4, "groups": 32}),
    "dexter_M2": (lambda: DexterSKConv(64, 64, M=2, L=16), 64, {"num_paths": None, "select_bias": None}),
    "dexter_M3_stride2": (lambda: DexterSKConv(64, 64, stride=2, M=3, L=16), 64, {"num_paths": 3, "stride": 2}),
}


@pytest.mark.parametrize("name", list(SK_CASES))
def test_sk_variant_is_swapped_after_proof(name):
    factory, channels, expected = SK_CASES[name]
    # `expected` may name an argument the record must not carry (None): compare by get, not by subset.
    record = assert_swapped_after_proof(factory(), channels, kind="sk", twin="SKConvSafe",
                                        expected={k: v for k, v in expected.items() if v is not None}, seed=12,
                                        proof_size=(2, 3, 12, 12),
                                        checks=(((1, 3, 9, 7), 1.0), ((3, 3, 16, 20), 4.0)), tol=1e-4)
    for key, value in expected.items():
        assert record.args.get(key) == value, record.args


class KernelSizeSK(PppLangSKConv):
    """The first pppLang version's branches: kernel 3 + 2i instead of dilation 1 + i (same keys for M = 1 ...
    here the branch convs have other shapes, so it is a different unit and is kept, not swapped)."""

    def __init__(self, features, M=2, G=8, r=4, L=8):
        super().__init__(features, M, G, r, L=L)
        for i, branch in enumerate(self.convs):
            branch[0] = nn.Conv2d(features, features, 3 + 2 * i, padding=1 + i, groups=G, bias=False)


class SumInsteadOfSelect(PppLangSKConv):
    """pppLang's keys, but the branches are summed and gated by a sigmoid: not the SK unit."""

    def forward(self, x):
        feats = [conv(x) for conv in self.convs]
        u = sum(feats)
        z = self.fc(u.mean((2, 3), keepdim=True))
        return sum(f * torch.sigmoid(fc(z)) for f, fc in zip(feats, self.fcs))


def test_sk_lookalikes_are_kept():
    for block in (KernelSizeSK(32), SumInsteadOfSelect(32, M=2, G=8, r=4, L=8)):
        model = randomize_for_verification(Host(block, 32), seed=13).eval()
        converted, report = make_export_safe(model, torch.randn(2, 3, 10, 10))
        assert not report.replaced, report.summary()
        assert type(converted.block) is type(block) and report.model_check["passed"]
    # The summed one has the unit's exact layout, so it is reported as kept, with the reason.
    assert report.not_replaced[0].block == "sk" and "differ" in report.not_replaced[0].reason


# --- Shuffle Attention ---------------------------------------------------------------------------------------


class SANetSaLayer(nn.Module):
    def __init__(self, channel, groups=64):
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        k = channel // (2 * groups)
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sigmoid = nn.Sigmoid()
        self.gn = nn.GroupNorm(k, k)

    @staticmethod
    def channel_shuffle(x, groups):
        b, c, h, w = x.shape
        x = x.reshape(b, groups, -1, h, w).permute(0, 2, 1, 3, 4)
        return x.reshape(b, -1, h, w)

    def forward(self, x):
        b, c, h, w = x.shape
        x = x.reshape(b * self.groups, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
        return self.channel_shuffle(out, 2)


class ExternalAttentionShuffle(SANetSaLayer):
    """External-Attention-pytorch's ShuffleAttention(channel, reduction, G): the group count is stored as `G`."""

    def __init__(self, channel=512, reduction=16, G=8):
        super().__init__(channel, G)
        del self.groups
        self.G = G

    def forward(self, x):
        b, c, h, w = x.size()
        x = x.view(b * self.G, -1, h, w)
        x_0, x_1 = x.chunk(2, dim=1)
        x_channel = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        x_spatial = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        out = torch.cat([x_channel, x_spatial], dim=1).contiguous().view(b, -1, h, w)
        return self.channel_shuffle(out, 2)


@pytest.mark.parametrize("factory,channels,groups", [
    (lambda: SANetSaLayer(64, groups=1), 64, 1), (lambda: SANetSaLayer(64, groups=8), 64, 8),
    (lambda: SANetSaLayer(256), 256, 64), (lambda: ExternalAttentionShuffle(64, G=4), 64, 4),
], ids=["sanet_g1", "sanet_g8", "sanet_g64_default", "external_attention_G4"])
def test_shuffle_variant_is_swapped_after_proof(factory, channels, groups):
    model = randomize_for_verification(Host(factory(), channels), seed=14).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 10, 12))
    assert [c.path for c in report.replaced] == ["block"], report.summary()
    assert report.replaced[0].args == {"channel": channels, "groups": groups}
    assert type(converted.block).__name__ == "ShuffleAttentionSafe"
    x = torch.randn(3, 3, 7, 9) * 3
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), atol=1e-4, rtol=1e-4)


class NoShuffle(SANetSaLayer):
    """sa_layer without the final channel shuffle: the same weights, a permuted output."""

    def forward(self, x):
        b, c, h, w = x.shape
        x_0, x_1 = x.reshape(b * self.groups, -1, h, w).chunk(2, dim=1)
        xn = x_0 * self.sigmoid(self.cweight * self.avg_pool(x_0) + self.cbias)
        xs = x_1 * self.sigmoid(self.sweight * self.gn(x_1) + self.sbias)
        return torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)


def test_shuffle_without_the_shuffle_is_kept():
    model = randomize_for_verification(Host(NoShuffle(64, 4), 64), seed=15).eval()
    converted, report = make_export_safe(model, torch.randn(2, 3, 8, 8))
    assert not report.replaced and report.not_replaced[0].block == "shuffle", report.summary()
    assert "differ" in report.not_replaced[0].reason and type(converted.block) is NoShuffle
