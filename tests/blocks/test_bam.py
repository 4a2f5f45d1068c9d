"""BAM-specific checks: official keys, the product of the branches (not the paper's sum), the official H x H
channel pool and where the reference departs from it, checkpoint loading, fp16 at realistic activation scale.

The generic zoo tests (keys equal between variants, strict load, parity, odd sizes, in-place ops, export under
both exporters) live in test_zoo.py.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deploykit.blocks import load_checkpoint
from deploykit.blocks.bam import BAM, BAMSafe
from tests.blocks.helpers import fp16_relative_error, fp16_session, registry_twins, seeded_twins

OFFICIAL_KEYS = [
    "channel_att.gate_c.gate_c_fc_0.weight",
    "channel_att.gate_c.gate_c_fc_0.bias",
    "channel_att.gate_c.gate_c_bn_1.weight",
    "channel_att.gate_c.gate_c_bn_1.bias",
    "channel_att.gate_c.gate_c_bn_1.running_mean",
    "channel_att.gate_c.gate_c_bn_1.running_var",
    "channel_att.gate_c.gate_c_bn_1.num_batches_tracked",
    "channel_att.gate_c.gate_c_fc_final.weight",
    "channel_att.gate_c.gate_c_fc_final.bias",
    "spatial_att.gate_s.gate_s_conv_reduce0.weight",
    "spatial_att.gate_s.gate_s_conv_reduce0.bias",
    "spatial_att.gate_s.gate_s_bn_reduce0.weight",
    "spatial_att.gate_s.gate_s_bn_reduce0.bias",
    "spatial_att.gate_s.gate_s_bn_reduce0.running_mean",
    "spatial_att.gate_s.gate_s_bn_reduce0.running_var",
    "spatial_att.gate_s.gate_s_bn_reduce0.num_batches_tracked",
    "spatial_att.gate_s.gate_s_conv_di_0.weight",
    "spatial_att.gate_s.gate_s_conv_di_0.bias",
    "spatial_att.gate_s.gate_s_bn_di_0.weight",
    "spatial_att.gate_s.gate_s_bn_di_0.bias",
    "spatial_att.gate_s.gate_s_bn_di_0.running_mean",
    "spatial_att.gate_s.gate_s_bn_di_0.running_var",
    "spatial_att.gate_s.gate_s_bn_di_0.num_batches_tracked",
    "spatial_att.gate_s.gate_s_conv_di_1.weight",
    "spatial_att.gate_s.gate_s_conv_di_1.bias",
    "spatial_att.gate_s.gate_s_bn_di_1.weight",
    "spatial_att.gate_s.gate_s_bn_di_1.bias",
    "spatial_att.gate_s.gate_s_bn_di_1.running_mean",
    "spatial_att.gate_s.gate_s_bn_di_1.running_var",
    "spatial_att.gate_s.gate_s_bn_di_1.num_batches_tracked",
    "spatial_att.gate_s.gate_s_conv_final.weight",
    "spatial_att.gate_s.gate_s_conv_final.bias",
]


def _pair(channels: int = 32, seed: int = 3, **kwargs) -> tuple[BAM, BAMSafe]:
    return seeded_twins(BAM, BAMSafe, channels, seed=seed, **kwargs)


def _bn(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], eps=1e-5)


def _branches(x: torch.Tensor, state: dict, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Official BAM branches (default config) from the weights alone; `pooled` is the (B, C) channel pool."""
    c = "channel_att.gate_c."
    h = F.linear(pooled, state[c + "gate_c_fc_0.weight"], state[c + "gate_c_fc_0.bias"])
    h = F.relu(_bn(h, state, c + "gate_c_bn_1"))
    channel = F.linear(h, state[c + "gate_c_fc_final.weight"], state[c + "gate_c_fc_final.bias"])
    s = "spatial_att.gate_s."
    y = F.conv2d(x, state[s + "gate_s_conv_reduce0.weight"], state[s + "gate_s_conv_reduce0.bias"])
    y = F.relu(_bn(y, state, s + "gate_s_bn_reduce0"))
    for i in range(2):
        y = F.conv2d(y, state[s + f"gate_s_conv_di_{i}.weight"], state[s + f"gate_s_conv_di_{i}.bias"],
                     padding=4, dilation=4)
        y = F.relu(_bn(y, state, s + f"gate_s_bn_di_{i}"))
    spatial = F.conv2d(y, state[s + "gate_s_conv_final.weight"], state[s + "gate_s_conv_final.bias"])
    return channel[:, :, None, None], spatial


def _official_forward(x: torch.Tensor, state: dict) -> torch.Tensor:
    """The official forward as written, including its square H x H channel-pool window."""
    h = x.size(2)
    pooled = F.avg_pool2d(x, h, stride=h).flatten(1)
    channel, spatial = _branches(x, state, pooled)
    return (1 + torch.sigmoid(channel * spatial)) * x


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_official_keys_and_layers():
    model = BAM(64)
    assert list(model.state_dict()) == OFFICIAL_KEYS
    gate_c, gate_s = model.channel_att.gate_c, model.spatial_att.gate_s
    assert isinstance(gate_c.gate_c_bn_1, torch.nn.BatchNorm1d)
    assert tuple(gate_c.gate_c_fc_0.weight.shape) == (4, 64)
    assert tuple(gate_s.gate_s_conv_final.weight.shape) == (1, 4, 1, 1)
    for i in range(2):
        conv = getattr(gate_s, f"gate_s_conv_di_{i}")
        assert (conv.kernel_size, conv.padding, conv.dilation) == ((3, 3), (4, 4), (4, 4))
    # Every conv and Linear has a bias, as upstream.
    assert all(m.bias is not None for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))


def test_branch_options_follow_official_naming():
    keys = list(BAM(64, num_layers=2, dilation_conv_num=3).state_dict())
    assert "channel_att.gate_c.gate_c_fc_1.weight" in keys and "channel_att.gate_c.gate_c_bn_2.weight" in keys
    assert "spatial_att.gate_s.gate_s_conv_di_2.weight" in keys
    ref, safe = _pair(num_layers=2, dilation_conv_num=3)
    x = torch.randn(2, 32, 13, 10)
    with torch.no_grad():
        assert _rel(safe(x), ref(x)) < 1e-5


@pytest.mark.parametrize("size", [(14, 14), (7, 7), (1, 1)])
def test_equals_official_forward_on_square_inputs(size):
    ref, safe = _pair()
    x = torch.randn(3, 32, *size, generator=torch.Generator().manual_seed(4)) * 3
    with torch.no_grad():
        expected = _official_forward(x, ref.state_dict())
        assert _rel(ref(x), expected) < 1e-5
        assert _rel(safe(x), expected) < 1e-5


@pytest.mark.parametrize("size", [(14, 14), (41, 17), (17, 41), (14, 20)])
def test_product_of_branches_with_global_pool(size):
    ref, safe = _pair()
    x = torch.randn(2, 32, *size, generator=torch.Generator().manual_seed(5)) * 3
    with torch.no_grad():
        channel, spatial = _branches(x, ref.state_dict(), x.mean((2, 3)))
        expected = (1 + torch.sigmoid(channel * spatial)) * x
        paper_sum = (1 + torch.sigmoid(channel + spatial)) * x
        assert _rel(expected, x) > 0.05              # the gates are not trivial
        assert _rel(paper_sum, expected) > 1e-2      # so the product is distinguishable from the sum
        assert _rel(ref(x), expected) < 1e-5
        assert _rel(safe(x), expected) < 1e-5


def test_official_square_pool_failure_modes():
    """Documented departures: the official H x H window fails for H > W and is silently wrong for H < W < 2H."""
    ref, safe = _pair()
    state = ref.state_dict()
    with torch.no_grad():
        with pytest.raises(RuntimeError):
            _official_forward(torch.randn(1, 32, 41, 17), state)
        with pytest.raises(RuntimeError):  # two pooled columns: the Linear rejects 2C features
            _official_forward(torch.randn(1, 32, 17, 41), state)
        x = torch.randn(2, 32, 14, 20, generator=torch.Generator().manual_seed(6)) * 3
        official = _official_forward(x, state)
        # What the official window pooled: the leftmost 14 columns only.
        channel_first_cols, spatial = _branches(x, state, x[..., :14].mean((2, 3)))
        assert _rel(official, (1 + torch.sigmoid(channel_first_cols * spatial)) * x) < 1e-5
        assert _rel(safe(x), official) > 1e-3
        assert _rel(ref(x), safe(x)) < 1e-5


def test_checkpoint_with_dataparallel_prefix(tmp_path):
    ref, _ = _pair()
    path = tmp_path / "bam.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    safe = BAMSafe(32).eval()
    report = load_checkpoint(safe, path)
    assert report.stripped_prefix == "module."
    x = torch.randn(1, 32, 15, 9)
    with torch.no_grad():
        assert _rel(safe(x), ref(x)) < 1e-5


@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory):
    """The twin exported by dynamo with dynamic batch, H and W, converted to fp16."""
    ref, safe = registry_twins("bam", seed=5)
    sess, shape_nodes = fp16_session(safe, tmp_path_factory.mktemp("bam") / "bam.onnx", "dynamo")
    return ref, sess, shape_nodes


def test_dynamic_hw_graph_has_no_shape_computation(fp16_model):
    assert fp16_model[2] == 0


@pytest.mark.parametrize("size", [(14, 14), (41, 17), (56, 56)])
def test_fp16_graph_at_activation_scale_50(fp16_model, size):
    ref, sess, _ = fp16_model
    x = torch.rand(4, 64, *size, generator=torch.Generator().manual_seed(2)) * 100 - 50
    err = fp16_relative_error(sess, ref, x)
    assert err < 5e-3, f"fp16 max error {err:.2e} relative to max |output|"
