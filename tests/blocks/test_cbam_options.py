"""CBAM's options for published ports (spatial kernel size, squeeze width, bare spatial conv): the reference
against the paper's formula, the twin against the reference and on ONNX Runtime; official keys unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deploykit import blocks
from deploykit.blocks.cbam import CBAM, CBAMSafe
from tests.blocks.helpers import export_dynamic_hw, run_ort, seeded_twins


def formula(x, sd, k, bn):
    """Woo et al. eq. 2-3 with avg + max pools; spatial input (max, mean) as the official code."""
    w1, b1, w2, b2 = (sd[f"ChannelGate.mlp.{i}.{p}"] for i in (1, 3) for p in ("weight", "bias"))

    def mlp(v):
        return torch.relu(v @ w1.t() + b1) @ w2.t() + b2

    x = x * torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))[:, :, None, None]
    pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
    s = F.conv2d(pooled, sd["SpatialGate.spatial.conv.weight"], sd.get("SpatialGate.spatial.conv.bias"),
                 padding=k // 2)
    if bn:
        mean, var = sd["SpatialGate.spatial.bn.running_mean"], sd["SpatialGate.spatial.bn.running_var"]
        s = (s - mean) / torch.sqrt(var + 1e-5) * sd["SpatialGate.spatial.bn.weight"] + sd["SpatialGate.spatial.bn.bias"]
    return x * torch.sigmoid(s)


@pytest.mark.parametrize("k,bn,bias", [(7, True, False), (3, True, False), (5, False, False), (7, False, True)])
def test_options_match_the_formula(k, bn, bias):
    ref, twin = seeded_twins(CBAM, CBAMSafe, 30, rd_channels=8, spatial_kernel_size=k, spatial_bn=bn,
                             spatial_bias=bias, seed=2)
    sd = ref.state_dict()
    assert sd["ChannelGate.mlp.1.weight"].shape == (8, 30) and sd["SpatialGate.spatial.conv.weight"].shape[-1] == k
    assert ("SpatialGate.spatial.bn.weight" in sd) == bn and ("SpatialGate.spatial.conv.bias" in sd) == bias
    x = torch.randn(2, 30, 9, 11) * 3
    with torch.no_grad():
        expected = formula(x, sd, k, bn)
        torch.testing.assert_close(ref(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(twin(x), expected, atol=1e-5, rtol=1e-5)


def test_defaults_keep_the_official_keys():
    keys = sorted(blocks.create("cbam").state_dict())
    assert keys == sorted(["ChannelGate.mlp.1.weight", "ChannelGate.mlp.1.bias", "ChannelGate.mlp.3.weight",
                           "ChannelGate.mlp.3.bias", "SpatialGate.spatial.conv.weight",
                           "SpatialGate.spatial.bn.weight", "SpatialGate.spatial.bn.bias",
                           "SpatialGate.spatial.bn.running_mean", "SpatialGate.spatial.bn.running_var",
                           "SpatialGate.spatial.bn.num_batches_tracked"])


def test_even_kernel_is_refused():
    with pytest.raises(ValueError, match="odd"):
        CBAM(32, spatial_kernel_size=4)


def test_bare_spatial_conv_twin_on_onnx_runtime(tmp_path):
    ref, twin = seeded_twins(CBAM, CBAMSafe, 64, 16, spatial_kernel_size=3, spatial_bn=False, spatial_bias=True,
                             seed=5)
    path = tmp_path / "cbam.onnx"
    export_dynamic_hw(twin, 64, path, "dynamo")
    x = torch.randn(3, 64, 13, 19)
    with torch.no_grad():
        torch.testing.assert_close(run_ort(path, x), ref(x), atol=1e-5, rtol=1e-4)
