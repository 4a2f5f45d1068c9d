"""Selective Kernel unit: timm key layout, the paper's SK unit re-derived here, a second port's layout, fp16."""

from __future__ import annotations

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from deploykit import blocks
from deploykit.blocks.init import randomize_for_verification
from deploykit.blocks.sk import SKConv, SKConvSafe, convert_dexter_layout
from deploykit.export.exporters import export_onnx
from deploykit.onnx_utils.graph import count_shape_nodes
from tests.blocks.helpers import bn_eval, fp16_outputs, max_rel_error, seeded_twins

_BN = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
# timm SelectiveKernel (skresnext50_32x4d conv2): two ConvNormAct paths and SelectiveKernelAttn.
TIMM_KEYS = ([f"paths.{i}.{key}" for i in (0, 1) for key in ["conv.weight"] + [f"bn.{b}" for b in _BN]]
             + ["attn.fc_reduce.weight"] + [f"attn.bn.{b}" for b in _BN] + ["attn.fc_select.weight"])


def _pair(channels: int = 64, **kwargs) -> tuple[SKConv, SKConvSafe]:
    return seeded_twins(SKConv, SKConvSafe, channels, seed=7, **kwargs)


def paper_sk_unit(x: torch.Tensor, state: dict, groups: int = 32, stride: int = 1) -> torch.Tensor:
    """Split (3x3 and dilated 3x3, grouped) -> fuse (pool, fc, BN, ReLU) -> select (fc, softmax over the two
    branches), from the paper and the official prototxt, in float64."""
    sd = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    x = x.double()
    branches = []
    for i, dilation in enumerate((1, 2)):
        u = F.conv2d(x, sd[f"paths.{i}.conv.weight"], stride=stride, padding=dilation, dilation=dilation,
                     groups=groups)
        branches.append(torch.clamp(bn_eval(u, sd, f"paths.{i}.bn."), min=0))
    s = (branches[0] + branches[1]).mean((2, 3), keepdim=True)
    z = torch.clamp(bn_eval(F.conv2d(s, sd["attn.fc_reduce.weight"]), sd, "attn.bn."), min=0)
    logits = F.conv2d(z, sd["attn.fc_select.weight"]).flatten(1)       # (B, 2C): branch 0 first
    c = branches[0].shape[1]
    z0, z1 = logits[:, :c], logits[:, c:]
    top = torch.maximum(z0, z1)
    e0, e1 = torch.exp(z0 - top), torch.exp(z1 - top)
    a0, a1 = e0 / (e0 + e1), e1 / (e0 + e1)
    return branches[0] * a0[:, :, None, None] + branches[1] * a1[:, :, None, None]


@pytest.mark.parametrize("cls", [SKConv, SKConvSafe])
def test_state_dict_keys_are_timm_selective_kernel_keys(cls):
    module = cls(128)
    assert list(module.state_dict()) == TIMM_KEYS
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes["paths.0.conv.weight"] == shapes["paths.1.conv.weight"] == (128, 4, 3, 3)   # groups 32
    assert shapes["attn.fc_reduce.weight"] == (32, 128, 1, 1)
    assert shapes["attn.fc_select.weight"] == (256, 32, 1, 1)


@pytest.mark.parametrize("channels,d", [(128, 32), (256, 32), (512, 32), (1024, 64)])
def test_attention_width_matches_the_official_sknet50_prototxt(channels, d):
    # B_fc1 num_output of conv2_x ... conv5_x in implus/SKNet models/sknet50.prototxt.
    assert SKConv(channels).attn.fc_reduce.out_channels == d


def test_attn_channels_override_and_bad_groups():
    assert SKConv(96, attn_channels=48).attn.fc_reduce.out_channels == 48
    with pytest.raises(ValueError, match="divisible"):
        SKConv(48)


@pytest.mark.parametrize("size,stride", [((14, 14), 1), ((41, 17), 1), ((41, 17), 2), ((7, 9), 2)])
def test_reference_and_twin_equal_the_paper_sk_unit(size, stride):
    ref, safe = _pair(64, stride=stride)
    x = torch.randn(3, 64, *size, generator=torch.Generator().manual_seed(size[0]))
    expected = paper_sk_unit(x, ref.state_dict(), stride=stride)
    with torch.no_grad():
        got_ref, got_safe = ref(x), safe(x)
    assert got_ref.shape == got_safe.shape == expected.shape
    if stride == 1:
        assert got_safe.shape == x.shape
    assert max_rel_error(got_ref, expected) <= 1e-5
    assert max_rel_error(got_safe, expected) <= 1e-5


def test_reference_branch_weights_are_a_softmax_over_the_two_branches():
    ref, _ = _pair(64)
    x = torch.randn(2, 64, 9, 9)
    with torch.no_grad():
        paths = torch.stack([p(x) for p in ref.paths], 1)
        weights = ref.attn(paths)
    assert tuple(weights.shape) == (2, 2, 64, 1, 1)
    torch.testing.assert_close(weights.sum(1), torch.ones(2, 64, 1, 1))


class DexterStyleSK(nn.Module):
    """The ResearchingDexter/SKNet_pytorch `SKConv` layout and computation (written here from its structure):
    `conv.i` = Sequential(conv 3x3 dilation 1+i groups 32 no bias, BN, ReLU), `fc1` = Sequential(1x1 conv,
    BN, ReLU), `fc2` = 1x1 conv to 2C viewed as (B, 2, C) with a softmax over the branches."""

    def __init__(self, channels: int, r: int = 16, length: int = 32):
        super().__init__()
        d = max(channels // r, length)
        self.conv = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1 + i, dilation=1 + i, groups=32, bias=False),
                          nn.BatchNorm2d(channels), nn.ReLU())
            for i in range(2))
        self.fc1 = nn.Sequential(nn.Conv2d(channels, d, 1, bias=False), nn.BatchNorm2d(d), nn.ReLU())
        self.fc2 = nn.Conv2d(d, 2 * channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.conv]
        z = self.fc1((outs[0] + outs[1]).mean((2, 3), keepdim=True))
        weights = self.fc2(z).view(x.shape[0], 2, -1).softmax(dim=1)
        return outs[0] * weights[:, 0, :, None, None] + outs[1] * weights[:, 1, :, None, None]


def test_second_port_layout_loads_through_the_converter(tmp_path):
    other = randomize_for_verification(DexterStyleSK(64), seed=11).eval()
    path = tmp_path / "sknet_dexter.pth"
    torch.save({f"module.{k}": v for k, v in other.state_dict().items()}, path)
    for cls in (SKConv, SKConvSafe):
        module = cls(64).eval()
        report = blocks.load_checkpoint(module, path)
        assert report.converted_by == ["convert_dexter_layout"]
        x = torch.randn(2, 64, 13, 11, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            assert max_rel_error(module(x), other(x)) <= 1e-5


def test_converter_leaves_other_layouts_alone():
    assert convert_dexter_layout(SKConv(64).state_dict()) is None
    assert convert_dexter_layout({"fc.0.weight": torch.zeros(1)}) is None


def test_dynamic_batch_graph_has_no_shape_computation_and_fp16_is_accurate_at_pm50(tmp_path):
    ref, safe = _pair(64)
    path = tmp_path / "sk.onnx"
    export_onnx(safe, (torch.randn(2, 64, 14, 14),), path, exporter="dynamo", input_names=["input"],
                output_names=["output"], dynamic_axes={"input": {0: ("batch", 1, 64)}})
    assert count_shape_nodes(path) == 0
    assert "Softmax" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    x = (torch.rand(4, 64, 14, 14, generator=torch.Generator().manual_seed(6)) * 2 - 1) * 50
    got, expected = fp16_outputs(path, tmp_path / "sk_fp16.onnx", ref, x)
    assert max_rel_error(got, expected) <= 5e-3


@pytest.mark.parametrize("num_paths,select_bias", [(3, False), (4, True), (2, True)])
def test_more_paths_and_select_bias_match_a_softmax_over_the_branches(num_paths, select_bias):
    """M branches (dilation 1 + i), softmax over M of the select conv's logits, written out in float64."""
    ref, twin = _pair(64, num_paths=num_paths, select_bias=select_bias, attn_channels=16)
    sd = {k: v.double() for k, v in ref.state_dict().items() if v.is_floating_point()}
    assert len(ref.paths) == num_paths and ("attn.fc_select.bias" in sd) == select_bias
    x = torch.randn(2, 64, 10, 9)
    xd = x.double()
    us = [torch.clamp(bn_eval(F.conv2d(xd, sd[f"paths.{i}.conv.weight"], padding=1 + i, dilation=1 + i, groups=32),
                              sd, f"paths.{i}.bn."), min=0) for i in range(num_paths)]
    s = sum(us).mean((2, 3), keepdim=True)
    z = torch.clamp(bn_eval(F.conv2d(s, sd["attn.fc_reduce.weight"]), sd, "attn.bn."), min=0)
    logits = F.conv2d(z, sd["attn.fc_select.weight"], sd.get("attn.fc_select.bias")).view(2, num_paths, 64, 1, 1)
    expected = (torch.stack(us, 1) * torch.softmax(logits, 1)).sum(1)
    with torch.no_grad():
        assert max_rel_error(ref(x), expected) < 1e-5
        assert max_rel_error(twin(x), expected) < 1e-5


def test_three_path_twin_exports_with_dynamic_size(tmp_path):
    from tests.blocks.helpers import export_dynamic_hw, run_ort

    ref, twin = _pair(64, num_paths=3, select_bias=True)
    path = tmp_path / "sk3.onnx"
    export_dynamic_hw(twin, 64, path, "dynamo")
    x = torch.randn(3, 64, 11, 17)
    with torch.no_grad():
        assert max_rel_error(run_ort(path, x), ref(x)) < 1e-5
