"""make_export_safe on a user model built from the authors' modules (re-implemented here with other class names
and the authors' keys), on decoys that share a block's keys but not its function, and on deploykit's networks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import deploykit
from deploykit import networks
from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.convert import ConversionReport, make_export_safe
from tests.networks.small import SMALL_ARGS, small_size

# --- the authors' modules, written out from their papers' formulations (names differ on purpose) -------------


class Conv2dBN(nn.Module):
    def __init__(self, cin, cout, k, pad):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=pad, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5, momentum=0.01)

    def forward(self, x):
        return self.bn(self.conv(x))


class PaperChannelGate(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c, c // r), nn.ReLU(), nn.Linear(c // r, c))
        self.pool_types = ["avg", "max"]

    def forward(self, x):
        size = (x.size(2), x.size(3))
        logits = self.mlp(F.avg_pool2d(x, size)) + self.mlp(F.max_pool2d(x, size))
        return x * torch.sigmoid(logits)[:, :, None, None].expand_as(x)


class PaperSpatialGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.spatial = Conv2dBN(2, 1, 7, 3)

    def forward(self, x):
        pooled = torch.cat([x.max(dim=1, keepdim=True)[0], x.mean(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class PaperCBAM(nn.Module):
    """CBAM as in the paper (channel gate, then spatial gate), keys as Jongchan/attention-module."""

    def __init__(self, c, r):
        super().__init__()
        self.ChannelGate = PaperChannelGate(c, r)
        self.SpatialGate = PaperSpatialGate()

    def forward(self, x):
        return self.SpatialGate(self.ChannelGate(x))


class LinearSE(nn.Module):
    """SE with bias-free Linear layers in `fc` (External-Attention-style keys fc.0 / fc.2)."""

    def __init__(self, c, r):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(c, c // r, bias=False), nn.ReLU(), nn.Linear(c // r, c, bias=False),
                                nn.Sigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(x.mean((2, 3)).view(b, c)).view(b, c, 1, 1)


class GroupShuffleAttention(nn.Module):
    """SA-Net's sa_layer formulation: per group, a channel half and a GroupNorm half, then a 2-group shuffle."""

    def __init__(self, channel, groups):
        super().__init__()
        k = channel // (2 * groups)
        self.groups = groups
        self.cweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.cbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.sweight = nn.Parameter(torch.zeros(1, k, 1, 1))
        self.sbias = nn.Parameter(torch.ones(1, k, 1, 1))
        self.gn = nn.GroupNorm(k, k)

    def forward(self, x):
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        a, s = g.chunk(2, dim=1)
        a = a * torch.sigmoid(self.cweight * a.mean((2, 3), keepdim=True) + self.cbias)
        s = s * torch.sigmoid(self.sweight * self.gn(s) + self.sbias)
        out = torch.cat([a, s], 1).reshape(b, c, h, w)
        return out.reshape(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)


class TokenModulation(nn.Module):
    """SMT's scale-aware modulation as the authors call it: tokens (B, N, C) plus H and W."""

    def __init__(self, dim, heads=4, expand=2):
        super().__init__()
        self.ca_num_heads, self.sa_num_heads = heads, -1
        d = dim // heads
        self.v = nn.Linear(dim, dim)
        self.s = nn.Linear(dim, dim)
        for i in range(heads):
            setattr(self, f"local_conv_{i + 1}", nn.Conv2d(d, d, 3 + 2 * i, padding=1 + i, groups=d))
        self.proj0 = nn.Conv2d(dim, dim * expand, 1, groups=d)
        self.bn = nn.BatchNorm2d(dim * expand)
        self.proj1 = nn.Conv2d(dim * expand, dim, 1)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, H, W):
        b, n, c = x.shape
        heads, d = self.ca_num_heads, c // self.ca_num_heads
        s = self.s(x).transpose(1, 2).reshape(b, c, H, W)
        outs = [getattr(self, f"local_conv_{i + 1}")(s[:, i * d:(i + 1) * d]) for i in range(heads)]
        # Head i's channel j goes to channel j * heads + i.
        mixed = torch.stack(outs, dim=2).reshape(b, c, H, W)
        mod = self.proj1(F.gelu(self.bn(self.proj0(mixed))))
        return self.proj(mod.flatten(2).transpose(1, 2) * self.v(x))


class GSoPResBlock(nn.Module):
    """The GSoP authors' Bottleneck with channel attention '1': GSoP modules sit on the block itself."""

    def __init__(self, inplanes, planes, stride, att_dim):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                        nn.BatchNorm2d(planes * 4))
        self.conv_for_DR = nn.Conv2d(planes * 4, att_dim, 1, stride=2 if planes <= 64 else 1)
        self.bn_for_DR = nn.BatchNorm2d(att_dim)
        self.row_bn = nn.BatchNorm2d(att_dim)
        self.row_conv_group = nn.Conv2d(att_dim, 4 * att_dim, (att_dim, 1), groups=att_dim)
        self.fc_adapt_channels = nn.Conv2d(4 * att_dim, planes * 4, 1)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        y = F.relu(self.bn_for_DR(self.conv_for_DR(F.relu(out))))
        flat = y.flatten(2)
        centred = flat - flat.mean(2, keepdim=True)
        cov = (centred @ centred.transpose(1, 2) / flat.shape[2]).unsqueeze(-1)
        att = torch.sigmoid(self.fc_adapt_channels(self.row_conv_group(self.row_bn(cov))))
        return F.relu(out * att + self.downsample(x))


class WeightOnlySE(nn.Module):
    """SE keys, but it returns the gate only (EPSANet's SEWeightModule): not the SE block."""

    def __init__(self, c, r):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class MaxPoolSE(nn.Module):
    """SE keys with max pooling. With fc2.weight = 0 it computes what SE computes; with any other weights not."""

    def __init__(self, c, r):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // r, 1)
        self.fc2 = nn.Conv2d(c // r, c, 1)
        with torch.no_grad():
            self.fc2.weight.zero_()

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.amax((2, 3), keepdim=True)))))


class UserModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.cbam = PaperCBAM(32, 8)
        self.se = LinearSE(32, 8)
        self.shuffle = GroupShuffleAttention(32, 4)
        self.gate = WeightOnlySE(32, 8)
        self.maxse = MaxPoolSE(32, 8)
        self.stage = nn.Sequential(GSoPResBlock(32, 16, 2, 8))
        self.tokens = TokenModulation(64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = self.shuffle(self.se(self.cbam(self.stem(x))))
        x = self.maxse(x * self.gate(x))
        x = self.stage(x)
        h, w = x.shape[2], x.shape[3]
        t = x.flatten(2).transpose(1, 2)
        t = t + self.tokens(t, h, w)
        return self.head(t.mean(1))


@pytest.fixture(scope="module")
def user_model():
    model = UserModel()
    # Trained-looking weights everywhere except MaxPoolSE's fc2, whose zero makes it agree with SE by accident.
    randomize_for_verification(model, seed=11)
    with torch.no_grad():
        model.maxse.fc2.weight.zero_()
    return model.eval()


def test_authors_modules_are_replaced_with_proof(user_model):
    x = torch.randn(2, 3, 16, 16)
    original = copy.deepcopy(user_model)
    converted, report = deploykit.make_export_safe(user_model, x)
    assert isinstance(report, ConversionReport) and bool(report), report.summary()
    replaced = {c.path: c for c in report.replaced}
    assert set(replaced) == {"cbam", "se", "shuffle", "stage.0", "tokens"}, report.summary()
    assert {c.block for c in replaced.values()} == {"cbam", "se", "shuffle", "gsop_bottleneck", "sam"}
    assert all(c.source.startswith("authors' layout") for c in replaced.values())
    assert replaced["se"].source.endswith("convert_linear_fc_layout")  # the Linear layout mapped onto fc1/fc2
    assert replaced["cbam"].args["pool_types"] == ["avg", "max"] and replaced["shuffle"].args["groups"] == 4
    for c in replaced.values():
        assert c.max_abs <= 1e-4 and c.max_abs_seeded <= 1e-4
    # The swapped modules are deploykit's export-safe twins, carrying the same weights.
    assert type(converted.cbam).__name__ == "CBAMSafe" and type(converted.shuffle).__name__ == "ShuffleAttentionSafe"
    assert type(converted.stage[0]).__name__ == "GSoPBottleneck"
    assert type(converted.stage[0].gsop).__name__ == "GSoPSafe"
    assert torch.equal(converted.cbam.ChannelGate.mlp[1].weight, user_model.cbam.ChannelGate.mlp[1].weight)
    assert torch.equal(converted.se.fc1.weight[:, :, 0, 0], user_model.se.fc[0].weight)
    # The whole model computes what it computed, and the caller's model was left alone.
    assert report.model_check["passed"] and report.model_check["max_abs"] <= 1e-4
    with torch.no_grad():
        assert torch.allclose(converted(x), original(x), atol=1e-4)
    assert type(user_model.cbam) is PaperCBAM
    for key, value in original.state_dict().items():
        assert torch.equal(user_model.state_dict()[key], value)


def test_lookalikes_are_kept_and_reported(user_model):
    _, report = make_export_safe(user_model)
    kept = {c.path: c for c in report.not_replaced}
    assert set(kept) == {"gate", "maxse"}, report.summary()
    assert kept["gate"].block == "se" and "outputs differ" in kept["gate"].reason
    # Equal with its own weights, different with seeded ones: caught by the second check only.
    assert kept["maxse"].max_abs <= 1e-6 and "seeded random weights" in kept["maxse"].reason
    assert "maxse" in report.summary() and "kept" in report.summary()


def test_train_mode_and_inplace_are_respected():
    model = UserModel().train()
    converted, report = make_export_safe(model, inplace=True)
    assert converted is model and type(model.cbam).__name__ == "CBAMSafe"
    assert model.cbam.training and model.training
    assert len(report.replaced) == 5


def test_a_recognised_root_module_is_returned_converted():
    block = randomize_for_verification(PaperCBAM(32, 4), seed=2).eval()
    converted, report = make_export_safe(block, torch.randn(2, 32, 9, 7))
    assert type(converted).__name__ == "CBAMSafe" and report.replaced[0].path == ""
    assert report.model_check["passed"]


@pytest.mark.parametrize("name,count", [("resnet50_bam", 3), ("gsop_resnet50", 4), ("smt_t", 5), ("ha_cnn", 3)])
def test_deploykit_reference_networks_become_their_safe_twins(name, count):
    reference = randomize_for_verification(networks.create(name, "reference", **SMALL_ARGS[name]), seed=4).eval()
    h, w = small_size(name)
    x = torch.randn(2, 3, h, w)
    converted, report = make_export_safe(reference, x)
    assert len(report.replaced) == count and not report.not_replaced, report.summary()
    assert all(c.source == "deploykit reference" for c in report.replaced)
    assert report.model_check["passed"]
    safe = networks.create(name, "safe", **SMALL_ARGS[name]).eval()
    safe.load_state_dict(reference.state_dict())
    with torch.no_grad():
        assert torch.allclose(converted(x), safe(x), atol=1e-5)
    # Converting a network that is already export-safe changes nothing.
    _, again = make_export_safe(safe)
    assert not again.replaced and len(again.already_safe) == count


def test_not_a_module_is_a_type_error():
    with pytest.raises(TypeError, match="nn.Module"):
        make_export_safe({"state": 1})
