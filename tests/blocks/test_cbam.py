"""CBAM-specific checks: official keys and layout, an independent re-computation of the official forward,
checkpoint loading (DataParallel prefix, timm layout), and fp16 behaviour at realistic activation scale.

The generic zoo tests (keys equal between variants, strict load, parity, odd sizes, in-place ops, export under
both exporters) live in test_zoo.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deploykit.blocks import load_checkpoint
from deploykit.blocks.cbam import CBAM, CBAMSafe
from tests.blocks.helpers import fp16_relative_error, fp16_session, registry_twins, seeded_twins

ALL_POOLS = ("avg", "max", "lp", "lse")


def _pair(**kwargs) -> tuple[CBAM, CBAMSafe]:
    return seeded_twins(CBAM, CBAMSafe, seed=3, **{"gate_channels": 32, "reduction_ratio": 8, **kwargs})


def _official_formula(x: torch.Tensor, state: dict, pool_types, no_spatial: bool) -> torch.Tensor:
    """The official CBAM forward written out with functional ops from the weights alone."""
    w1, b1 = state["ChannelGate.mlp.1.weight"], state["ChannelGate.mlp.1.bias"]
    w2, b2 = state["ChannelGate.mlp.3.weight"], state["ChannelGate.mlp.3.bias"]
    flat = x.flatten(2)                                             # (B, C, HW)
    pools = {
        "avg": flat.mean(-1),
        "max": flat.max(-1).values,
        "lp": flat.pow(2).sum(-1).sqrt(),                           # lp_pool2d, p = 2, window = whole map
        "lse": torch.logsumexp(flat, dim=-1),
    }
    logits = sum(F.linear(F.relu(F.linear(pools[p], w1, b1)), w2, b2) for p in pool_types)
    out = x * torch.sigmoid(logits)[:, :, None, None]
    if no_spatial:
        return out
    compressed = torch.stack([out.max(dim=1).values, out.mean(dim=1)], dim=1)   # max first
    s = F.conv2d(compressed, state["SpatialGate.spatial.conv.weight"], padding=3)
    s = F.batch_norm(s, state["SpatialGate.spatial.bn.running_mean"], state["SpatialGate.spatial.bn.running_var"],
                     state["SpatialGate.spatial.bn.weight"], state["SpatialGate.spatial.bn.bias"], eps=1e-5)
    return out * torch.sigmoid(s)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_official_keys_and_shapes():
    model = CBAM(64)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        "ChannelGate.mlp.1.weight": (4, 64),
        "ChannelGate.mlp.1.bias": (4,),
        "ChannelGate.mlp.3.weight": (64, 4),
        "ChannelGate.mlp.3.bias": (64,),
        "SpatialGate.spatial.conv.weight": (1, 2, 7, 7),
        "SpatialGate.spatial.bn.weight": (1,),
        "SpatialGate.spatial.bn.bias": (1,),
        "SpatialGate.spatial.bn.running_mean": (1,),
        "SpatialGate.spatial.bn.running_var": (1,),
        "SpatialGate.spatial.bn.num_batches_tracked": (),
    }
    bn = model.SpatialGate.spatial.bn
    assert (bn.eps, bn.momentum) == (1e-5, 0.01)
    assert model.SpatialGate.spatial.conv.bias is None
    assert model.SpatialGate.spatial.conv.padding == (3, 3)
    assert list(CBAM(64, no_spatial=True).state_dict()) == [k for k in shapes if k.startswith("ChannelGate.")]


def test_unknown_pool_type_is_rejected():
    with pytest.raises(ValueError, match="pool_types"):
        CBAM(32, pool_types=("avg", "stochastic"))


@pytest.mark.parametrize("pool_types,no_spatial", [
    (("avg", "max"), False), (ALL_POOLS, False), (("lse",), True), (("lp", "avg"), False),
])
@pytest.mark.parametrize("size", [(14, 14), (41, 17), (1, 1)])
def test_matches_official_formula(pool_types, no_spatial, size):
    ref, safe = _pair(pool_types=pool_types, no_spatial=no_spatial)
    x = torch.randn(2, 32, *size, generator=torch.Generator().manual_seed(1)) * 4
    with torch.no_grad():
        expected = _official_formula(x, ref.state_dict(), pool_types, no_spatial)
        # The block must actually attend: the gates move the output well away from x.
        assert _rel(expected, x) > 0.05
        assert _rel(ref(x), expected) < 1e-5
        assert _rel(safe(x), expected) < 1e-5


def test_checkpoint_with_dataparallel_prefix(tmp_path):
    ref, _ = _pair()
    path = tmp_path / "cbam.pth"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    safe = CBAMSafe(32, 8).eval()
    report = load_checkpoint(safe, path)
    assert report.stripped_prefix == "module."
    x = torch.randn(1, 32, 9, 13)
    with torch.no_grad():
        assert _rel(safe(x), ref(x)) < 1e-5


@pytest.mark.parametrize("mlp_bias", [False, True])
def test_timm_layout_loads_and_computes_timm_forward(mlp_bias):
    gen = torch.Generator().manual_seed(7)
    c, r = 32, 4
    timm_state = {
        "channel.fc1.weight": torch.randn(r, c, 1, 1, generator=gen) * 0.3,
        "channel.fc2.weight": torch.randn(c, r, 1, 1, generator=gen) * 0.3,
        "spatial.conv.conv.weight": torch.randn(1, 2, 7, 7, generator=gen) * 0.2,
        "spatial.conv.bn.weight": torch.tensor([1.3]),
        "spatial.conv.bn.bias": torch.tensor([-0.2]),
        "spatial.conv.bn.running_mean": torch.tensor([0.4]),
        "spatial.conv.bn.running_var": torch.tensor([1.7]),
        "spatial.conv.bn.num_batches_tracked": torch.tensor(100),
    }
    if mlp_bias:
        timm_state["channel.fc1.bias"] = torch.randn(r, generator=gen)
        timm_state["channel.fc2.bias"] = torch.randn(c, generator=gen)
    x = torch.randn(2, c, 11, 6, generator=gen) * 3

    # timm's CbamModule forward: 1x1-conv MLP per pool, summed; spatial pool is (mean, max).
    def mlp(p):
        h = F.relu(F.conv2d(p, timm_state["channel.fc1.weight"], timm_state.get("channel.fc1.bias")))
        return F.conv2d(h, timm_state["channel.fc2.weight"], timm_state.get("channel.fc2.bias"))

    y = x * torch.sigmoid(mlp(x.mean((2, 3), keepdim=True)) + mlp(x.amax((2, 3), keepdim=True)))
    s = F.conv2d(torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1),
                 timm_state["spatial.conv.conv.weight"], padding=3)
    s = F.batch_norm(s, timm_state["spatial.conv.bn.running_mean"], timm_state["spatial.conv.bn.running_var"],
                     timm_state["spatial.conv.bn.weight"], timm_state["spatial.conv.bn.bias"], eps=1e-5)
    expected = y * torch.sigmoid(s)

    for cls in (CBAM, CBAMSafe):
        model = cls(c, reduction_ratio=c // r).eval()
        report = load_checkpoint(model, {f"module.{k}": v for k, v in timm_state.items()})
        assert report.converted_by == ["convert_timm_layout"]
        with torch.no_grad():
            assert _rel(model(x), expected) < 1e-5


@pytest.fixture(scope="module")
def fp16_sessions(tmp_path_factory):
    """The twin exported with dynamic batch, H and W, converted to fp16: the default config by dynamo, all four
    pool types by TorchScript (so both exporters are covered; TorchScript is also the faster one)."""
    out = {}
    configs = (("default", "dynamo", {}), ("all_pools", "torchscript", {"pool_types": ALL_POOLS}))
    for label, exporter, kwargs in configs:
        ref, safe = registry_twins("cbam", seed=5, **kwargs)
        out[label] = (ref, *fp16_session(safe, tmp_path_factory.mktemp("cbam") / f"{label}.onnx", exporter))
    return out


def test_dynamic_hw_graph_has_no_shape_computation(fp16_sessions):
    assert [n for _, _, n in fp16_sessions.values()] == [0, 0]


@pytest.mark.parametrize("label,tol", [("default", 1e-2), ("all_pools", 4e-2)])
@pytest.mark.parametrize("size", [(14, 14), (41, 17)])
def test_fp16_graph_at_activation_scale_50(fp16_sessions, label, tol, size):
    ref, sess, _ = fp16_sessions[label]
    x = torch.rand(4, 64, *size, generator=torch.Generator().manual_seed(2)) * 100 - 50
    err = fp16_relative_error(sess, ref, x)
    assert err < tol, f"fp16 max error {err:.2e} relative to max |output|"
    if label == "all_pools":
        # The official lp formulation (mean of squares times H*W) overflows fp16 at this scale;
        # the twin's L2 reduction does not (checked above).
        official_lp = F.lp_pool2d(x.half(), 2, size, stride=size)
        assert not torch.isfinite(official_lp).all()
