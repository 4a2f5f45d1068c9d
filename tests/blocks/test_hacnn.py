"""HA-CNN soft attention: official keys, the official computation re-derived here, odd sizes, export, fp16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deploykit import blocks
from deploykit.blocks.hacnn import SoftAttn, SoftAttnSafe
from deploykit.export.exporters import export_onnx
from deploykit.onnx_utils.graph import count_shape_nodes
from tests.blocks.helpers import bn_eval, fp16_outputs, max_rel_error, run_ort, seeded_twins

# Written out from torchreid/models/hacnn.py: SoftAttn = SpatialAttn + ChannelAttn + ConvBlock, each ConvBlock
# a biased conv and a BatchNorm2d.
_CONV_BLOCK = ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
               "bn.num_batches_tracked"]
OFFICIAL_KEYS = [f"{block}.{key}" for block in ("spatial_attn.conv1", "spatial_attn.conv2", "channel_attn.conv1",
                                                "channel_attn.conv2", "conv") for key in _CONV_BLOCK]


def _pair(in_channels: int = 32) -> tuple[SoftAttn, SoftAttnSafe]:
    return seeded_twins(SoftAttn, SoftAttnSafe, in_channels, seed=3)


# --- the official computation, written from the paper/official module with plain tensor algebra (float64) ---

def _conv_block(x: torch.Tensor, sd: dict, prefix: str, stride: int = 1, padding: int = 0) -> torch.Tensor:
    y = F.conv2d(x, sd[prefix + "conv.weight"], sd[prefix + "conv.bias"], stride=stride, padding=padding)
    return torch.clamp(bn_eval(y, sd, prefix + "bn."), min=0)


def _bilinear_align_corners(s: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Separable bilinear resize with corner alignment as explicit interpolation matrices."""
    def weights(n_in: int, n_out: int) -> torch.Tensor:
        pos = torch.arange(n_out, dtype=torch.float64) * (n_in - 1) / max(n_out - 1, 1)
        return (1 - (pos[:, None] - torch.arange(n_in, dtype=torch.float64)[None, :]).abs()).clamp(min=0)
    return weights(s.shape[2], out_h) @ s @ weights(s.shape[3], out_w).T


def official_soft_attention(x: torch.Tensor, state: dict) -> torch.Tensor:
    """Official SoftAttn in float64: its map is 2 * ceil(H/2) x 2 * ceil(W/2)."""
    sd = {k: v.double() for k, v in state.items() if v.is_floating_point()}
    x = x.double()
    s = _conv_block(x.mean(1, keepdim=True), sd, "spatial_attn.conv1.", stride=2, padding=1)
    s = _bilinear_align_corners(s, 2 * s.shape[2], 2 * s.shape[3])
    s = _conv_block(s, sd, "spatial_attn.conv2.")
    c = _conv_block(x.mean((2, 3), keepdim=True), sd, "channel_attn.conv1.")
    c = _conv_block(c, sd, "channel_attn.conv2.")
    return torch.sigmoid(_conv_block(s * c, sd, "conv."))


@pytest.mark.parametrize("cls", [SoftAttn, SoftAttnSafe])
def test_state_dict_keys_are_the_official_ones(cls):
    module = cls(128)
    assert list(module.state_dict()) == OFFICIAL_KEYS
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    assert shapes["spatial_attn.conv1.conv.weight"] == (1, 1, 3, 3)
    assert shapes["channel_attn.conv1.conv.weight"] == (8, 128, 1, 1)   # reduction 16
    assert shapes["conv.conv.weight"] == (128, 128, 1, 1)


def test_registry_default_is_the_first_harmonious_attention_of_hacnn():
    module = blocks.create("hacnn", "safe")
    x = blocks.example_input("hacnn", 2)
    assert tuple(x.shape) == (2, 128, 40, 16)
    assert tuple(module.eval()(x).shape) == tuple(x.shape)


@pytest.mark.parametrize("size", [(40, 16), (14, 14), (8, 6)])
def test_reference_and_twin_equal_the_official_computation_at_even_sizes(size):
    ref, safe = _pair()
    x = torch.randn(3, 32, *size, generator=torch.Generator().manual_seed(1))
    expected = official_soft_attention(x, ref.state_dict())
    with torch.no_grad():
        got_ref, got_safe = ref(x), safe(x)
    assert got_ref.shape == got_safe.shape == x.shape
    assert max_rel_error(got_ref, expected) <= 1e-5
    assert max_rel_error(got_safe, expected) <= 1e-5
    assert max_rel_error(got_safe, got_ref) <= 1e-5


@pytest.mark.parametrize("size", [(41, 17), (7, 9), (5, 6)])
def test_odd_sizes_official_map_is_one_pixel_larger_and_twin_returns_its_input_window(size):
    ref, safe = _pair()
    h, w = size
    x = torch.randn(2, 32, h, w, generator=torch.Generator().manual_seed(2))
    expected = official_soft_attention(x, ref.state_dict())
    with torch.no_grad():
        got_ref, got_safe = ref(x), safe(x)
    # The documented official quirk: 2 * ceil(H / 2) x 2 * ceil(W / 2), so x * map fails for odd sizes.
    assert tuple(got_ref.shape[2:]) == (h + h % 2, w + w % 2)
    assert max_rel_error(got_ref, expected) <= 1e-5
    with pytest.raises(RuntimeError):
        _ = x * got_ref
    # The twin keeps the input's size and equals the official map at every input pixel.
    assert got_safe.shape == x.shape
    assert max_rel_error(got_safe, expected[:, :, :h, :w]) <= 1e-5


def test_map_is_a_gate_in_half_open_interval_from_one_half_to_one():
    _, safe = _pair()
    x = torch.randn(2, 32, 12, 10, generator=torch.Generator().manual_seed(4)) * 5
    with torch.no_grad():
        y = safe(x)
    assert float(y.min()) >= 0.5 and float(y.max()) <= 1.0


def test_checkpoint_with_dataparallel_prefix_loads_strictly(tmp_path):
    ref, _ = _pair(64)
    path = tmp_path / "soft_attn.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    safe = SoftAttnSafe(64).eval()
    report = blocks.load_checkpoint(safe, path)
    assert report.stripped_prefix == "module."
    x = torch.randn(2, 64, 20, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert max_rel_error(safe(x), ref(x)) <= 1e-5


def test_in_channels_must_be_divisible_by_the_reduction():
    with pytest.raises(ValueError, match="divisible"):
        SoftAttn(40)


def _export(module, x, path, exporter: str, dynamic_hw: bool):
    axes = {0: ("batch", 1, 64)}
    if dynamic_hw:
        axes.update({2: ("height", 4, 256), 3: ("width", 4, 256)})
    export_onnx(module, (x,), path, exporter=exporter, input_names=["input"], output_names=["output"],
                dynamic_axes={"input": axes})
    return path


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_exported_twin_with_dynamic_size_crops_odd_inputs_at_run_time(tmp_path, exporter):
    _, safe = _pair()
    path = _export(safe, torch.randn(2, 32, 14, 14), tmp_path / "hacnn.onnx", exporter, dynamic_hw=True)
    for b, h, w in [(3, 41, 17), (1, 40, 16), (2, 9, 22)]:
        x = torch.randn(b, 32, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            expected = safe(x)
        got = run_ort(path, x)
        assert got.shape == x.shape
        assert max_rel_error(got, expected) <= 1e-5
    # The upsample weights are built from cumulative sums of ones: no size is read even with dynamic H x W.
    assert count_shape_nodes(path) == 0


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_dynamic_batch_graph_has_no_shape_computation_and_fp16_is_accurate_at_pm50(tmp_path, exporter):
    ref, safe = _pair(64)
    path = _export(safe, torch.randn(2, 64, 40, 16), tmp_path / "hacnn.onnx", exporter, dynamic_hw=False)
    assert count_shape_nodes(path) == 0
    x = (torch.rand(4, 64, 40, 16, generator=torch.Generator().manual_seed(6)) * 2 - 1) * 50
    got, expected = fp16_outputs(path, tmp_path / "hacnn_fp16.onnx", ref, x)
    assert float((got - expected).abs().max()) <= 2e-3   # the map lies in [0.5, 1)
