"""Shuffle Attention: official keys and init, the official computation re-derived per channel, export, fp16."""

from __future__ import annotations

import math

import onnx
import pytest
import torch

from deploykit import blocks
from deploykit.blocks.shuffle import ShuffleAttention, ShuffleAttentionSafe
from deploykit.onnx_utils.graph import count_shape_nodes
from tests.blocks.helpers import export_dynamic_hw, fp16_outputs, max_rel_error, run_ort, seeded_twins

# wofmanaf/SA-Net models/sa_resnet.py sa_layer: four (1, C/2G, 1, 1) parameters, then GroupNorm(C/2G, C/2G).
OFFICIAL_KEYS = ["cweight", "cbias", "sweight", "sbias", "gn.weight", "gn.bias"]


def _pair(channel: int = 256, groups: int = 64) -> tuple[ShuffleAttention, ShuffleAttentionSafe]:
    return seeded_twins(ShuffleAttention, ShuffleAttentionSafe, channel, groups, seed=5)


def official_shuffle_attention(x: torch.Tensor, state: dict, groups: int) -> torch.Tensor:
    """Official sa_layer channel by channel, in float64: within each group of C/G channels the first half
    gets the channel gate, the second half the GroupNorm (one channel per group) gate; then the 2-group channel
    shuffle, output channel 2m + i <- channel i * C/2 + m."""
    sd = {k: v.double().flatten() for k, v in state.items()}
    x = x.double()
    c = x.shape[1]
    per_group = c // groups
    k_half = per_group // 2
    gated = []
    for ch in range(c):
        v = x[:, ch]
        j = ch % per_group
        mean = v.mean((1, 2), keepdim=True)
        if j < k_half:
            gate = torch.sigmoid(sd["cweight"][j] * mean + sd["cbias"][j])
        else:
            k = j - k_half
            var = ((v - mean) ** 2).mean((1, 2), keepdim=True)
            normed = (v - mean) / torch.sqrt(var + 1e-5) * sd["gn.weight"][k] + sd["gn.bias"][k]
            gate = torch.sigmoid(sd["sweight"][k] * normed + sd["sbias"][k])
        gated.append(v * gate)
    order = [i * (c // 2) + m for m in range(c // 2) for i in range(2)]
    return torch.stack([gated[p] for p in order], dim=1)


@pytest.mark.parametrize("cls", [ShuffleAttention, ShuffleAttentionSafe])
def test_state_dict_keys_shapes_and_init_are_official(cls):
    module = cls(256, 64)
    state = module.state_dict()
    assert list(state) == OFFICIAL_KEYS
    for name in ("cweight", "cbias", "sweight", "sbias"):
        assert tuple(state[name].shape) == (1, 2, 1, 1)
    assert tuple(state["gn.weight"].shape) == (2,)
    assert module.gn.num_groups == 2
    torch.testing.assert_close(state["cweight"], torch.zeros(1, 2, 1, 1))
    torch.testing.assert_close(state["sweight"], torch.zeros(1, 2, 1, 1))
    torch.testing.assert_close(state["cbias"], torch.ones(1, 2, 1, 1))
    torch.testing.assert_close(state["sbias"], torch.ones(1, 2, 1, 1))


@pytest.mark.parametrize("cls", [ShuffleAttention, ShuffleAttentionSafe])
def test_fresh_layer_scales_by_sigmoid_one_and_shuffles(cls):
    # Zero weights and unit biases: both gates are sigmoid(1); only the channel shuffle remains.
    x = torch.randn(2, 64, 5, 7)
    with torch.no_grad():
        y = cls(64, 8).eval()(x)
    expected = torch.stack([x[:, i * 32 + m] for m in range(32) for i in range(2)], 1) / (1 + math.exp(-1))
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("channel,groups,size", [
    (256, 64, (14, 14)),     # registry default, K = 2
    (256, 64, (41, 17)),
    (96, 16, (7, 9)),        # K = 3
    (64, 32, (6, 5)),        # K = 1
    (90, 15, (9, 4)),        # odd number of groups
    (256, 16, (9, 7)),       # K = 8
    (1024, 32, (5, 6)),      # K = 16, SA-ResNet-50 layer4's K
    (256, 64, (1, 1)),       # a 1x1 map (SA-ResNet-50's layer4 at a 32x32 input): GroupNorm gives 0
    (1024, 32, (1, 3)),
])
def test_reference_and_twin_equal_the_official_computation(channel, groups, size):
    ref, safe = _pair(channel, groups)
    x = torch.randn(2, channel, *size, generator=torch.Generator().manual_seed(channel + size[0])) * 3
    expected = official_shuffle_attention(x, ref.state_dict(), groups)
    with torch.no_grad():
        got_ref, got_safe = ref(x), safe(x)
    assert got_safe.shape == x.shape
    assert max_rel_error(got_ref, expected) <= 1e-5
    assert max_rel_error(got_safe, expected) <= 1e-5


@pytest.mark.parametrize("channel,groups", [(320, 64), (192, 64), (100, 64)])
def test_channel_must_split_into_two_equal_halves_per_group(channel, groups):
    # 192 / 64 = 3 channels per group: the official code runs but splits 2 + 1 and broadcasts its parameters.
    with pytest.raises(ValueError, match="2 \\* groups"):
        ShuffleAttention(channel, groups)


def test_sa_resnet_style_checkpoint_with_module_prefix_loads_strictly(tmp_path):
    ref, _ = _pair()
    path = tmp_path / "sa_layer.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    safe = ShuffleAttentionSafe(256, 64).eval()
    blocks.load_checkpoint(safe, path)
    x = torch.randn(2, 256, 8, 8)
    with torch.no_grad():
        assert max_rel_error(safe(x), ref(x)) <= 1e-5


@pytest.fixture(scope="module", params=[(256, 64), (256, 16)], ids=["K2", "K8"])
def exported(request, tmp_path_factory):
    """The twin (randomized weights), exported by both exporters with dynamic batch, H and W."""
    ref, safe = _pair(*request.param)
    root = tmp_path_factory.mktemp("shuffle")
    paths = {}
    for exporter in ("dynamo", "torchscript"):
        paths[exporter] = root / f"{exporter}.onnx"
        export_dynamic_hw(safe, 256, paths[exporter], exporter)
    return ref, safe, paths


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_twin_graph_has_no_reshape_and_no_shape_computation(exported, exporter):
    _, safe, paths = exported
    ops = {node.op_type for node in onnx.load(str(paths[exporter])).graph.node}
    assert count_shape_nodes(paths[exporter]) == 0
    assert not ops & {"Reshape", "Transpose", "Shape", "Expand"}
    x = torch.randn(3, 256, 41, 17, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        assert max_rel_error(run_ort(paths[exporter], x), safe(x)) <= 1e-5


@pytest.mark.parametrize("scale,tolerance", [(50.0, 2e-3), (400.0, 2e-3)])
def test_fp16_graph_is_accurate_and_finite(exported, tmp_path, scale, tolerance):
    # +-400 puts |x - mean| above 256, where an fp16 square would overflow: the InstanceNormalization that
    # computes the spatial half's statistics stays in fp32.
    ref, _, paths = exported
    x = (torch.rand(4, 256, 14, 14, generator=torch.Generator().manual_seed(6)) * 2 - 1) * scale
    got, expected = fp16_outputs(paths["dynamo"], tmp_path / "shuffle_fp16.onnx", ref, x)
    assert max_rel_error(got, expected) <= tolerance


def test_large_mean_channels_keep_their_deviations(exported):
    # Activations around 50 that vary by 0.1: a variance taken as E[x^2] - E[x]^2 would lose about 1e-4 of
    # 2500 against a variance of 0.01 and miss the official output by far more than this tolerance.
    ref, _, paths = exported
    x = 50 + 0.1 * torch.randn(2, 256, 14, 14, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = ref(x)
    for path in paths.values():
        assert max_rel_error(run_ort(path, x), expected) <= 1e-4


def test_graph_does_not_grow_with_k(tmp_path):
    # One Gather per channel half whatever K is: SA-ResNet-50's layer4 (K = 16) exports as few nodes as the
    # registry default (K = 2), where per-position strided slices would add about 20 nodes per position.
    nodes = []
    for channel, groups in ((256, 64), (256, 16), (512, 16)):     # K = 2, 8, 16
        _, safe = _pair(channel, groups)
        path = tmp_path / f"{channel}_{groups}.onnx"
        export_dynamic_hw(safe, channel, path, "dynamo")
        nodes.append(len(onnx.load(str(path)).graph.node))
    assert nodes[0] == nodes[1] == nodes[2] <= 40
