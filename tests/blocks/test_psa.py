"""PSA (EPSANet): the official keys, the reversed concatenation, EPSABlock checkpoints, fp16 at scale 50."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator

from deploykit import blocks
from deploykit.backends.ort import OrtRunner
from deploykit.blocks.init import randomize_for_verification
from deploykit.blocks.psa import PSAModule
from deploykit.export.exporters import export_onnx
from deploykit.export.fp16 import convert_to_fp16
from tests.blocks.helpers import identity_bn_state, registry_twins

# murufeng/EPSANet PSAModule(64, 64): conv_1..conv_4, then the shared SEWeightModule(16) as `se`.
OFFICIAL_KEYS = ["conv_1.weight", "conv_2.weight", "conv_3.weight", "conv_4.weight",
                 "se.fc1.weight", "se.fc1.bias", "se.fc2.weight", "se.fc2.bias"]


def official_forward(m: PSAModule, x: torch.Tensor) -> torch.Tensor:
    """EPSANet's PSAModule.forward with functional ops: 5-D view, per-branch SE, softmax over dim 1, and the
    loop that puts each later branch in front of the output so far."""
    c = m.split_channel
    convs = (m.conv_1, m.conv_2, m.conv_3, m.conv_4)
    xs = [F.conv2d(x, conv.weight, stride=conv.stride, padding=conv.padding, groups=conv.groups) for conv in convs]
    b, _, h, w = xs[0].shape
    feats = torch.cat(xs, dim=1).view(b, 4, c, h, w)

    def se(t):
        s = F.adaptive_avg_pool2d(t, 1)
        s = F.relu(F.conv2d(s, m.se.fc1.weight, m.se.fc1.bias))
        return torch.sigmoid(F.conv2d(s, m.se.fc2.weight, m.se.fc2.bias))

    attention = torch.cat([se(t) for t in xs], dim=1).view(b, 4, c, 1, 1)
    weighted = feats * torch.softmax(attention, dim=1)
    out = None
    for i in range(4):
        piece = weighted[:, i, :, :]
        out = piece if out is None else torch.cat((piece, out), 1)
    return out


def test_keys_and_shapes_are_the_official_psamodule():
    state = blocks.create("psa").state_dict()
    assert list(state) == OFFICIAL_KEYS
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    # kernels 3, 5, 7, 9 with groups 1, 4, 8, 16; 64 -> 16 channels each; SE 16 -> 1 -> 16.
    assert [shapes[f"conv_{i}.weight"] for i in range(1, 5)] == [(16, 64, 3, 3), (16, 16, 5, 5), (16, 8, 7, 7),
                                                               (16, 4, 9, 9)]
    assert shapes["se.fc1.weight"] == (1, 16, 1, 1) and shapes["se.fc2.weight"] == (16, 1, 1, 1)


@pytest.mark.parametrize("variant", ["reference", "safe"])
@pytest.mark.parametrize("config,size", [
    ({}, (14, 14)),
    ({}, (41, 17)),
    ({"stride": 2}, (41, 17)),
    ({"inplans": 128, "planes": 256}, (9, 6)),
    ({"inplans": 128, "planes": 128, "conv_groups": (32, 32, 32, 32)}, (11, 7)),   # EPSANet "large"
], ids=["default", "41x17", "stride2-41x17", "128-256", "large-groups"])
def test_matches_the_official_forward_in_float64(variant, config, size):
    module = randomize_for_verification(blocks.create("psa", variant, **config), seed=2).eval().double()
    x = blocks.example_input("psa", 3, height=size[0], width=size[1], seed=4, **config).double()
    with torch.no_grad():
        expected = official_forward(module, x)
        actual = module(x)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("variant", ["reference", "safe"])
def test_output_concatenates_the_branches_in_reversed_order(variant):
    module = randomize_for_verification(blocks.create("psa", variant), seed=0).eval()
    with torch.no_grad():
        for conv in (module.conv_1, module.conv_2, module.conv_3):
            conv.weight.zero_()                       # only branch 4 carries signal
        x = blocks.example_input("psa", 2, seed=1)
        out = module(x)
        c = module.split_channel
        se = module.se
        s = [torch.sigmoid(se.fc2(torch.relu(se.fc1(torch.zeros(2, c, 1, 1)))))] * 3
        x4 = module.conv_4(x)
        s4 = torch.sigmoid(se.fc2(torch.relu(se.fc1(x4.mean(dim=(2, 3), keepdim=True)))))
        w4 = s4.exp() / (s4.exp() + sum(t.exp() for t in s))
    # Branch 4 is the first quarter of the output; the three zero branches fill the rest.
    torch.testing.assert_close(out[:, :c], x4 * w4, rtol=1e-5, atol=1e-6)
    assert float(out[:, :c].abs().max()) > 0 and float(out[:, c:].abs().max()) == 0


@pytest.mark.parametrize("variant", ["reference", "safe"])
def test_branch_weights_are_a_softmax_over_the_four_branches(variant):
    # With a zero SE every branch gets sigmoid(0) = 0.5, so each is weighted exactly 1/4.
    module = randomize_for_verification(blocks.create("psa", variant), seed=0).eval()
    with torch.no_grad():
        for p in module.se.parameters():
            p.zero_()
        x = blocks.example_input("psa", 2, seed=3)
        out = module(x)
        branches = [module.conv_4(x), module.conv_3(x), module.conv_2(x), module.conv_1(x)]
    torch.testing.assert_close(out, torch.cat(branches, dim=1) / 4, rtol=1e-5, atol=1e-6)


def _epsablock_state(psa_state: dict, gen: torch.Generator) -> dict:
    """A state dict laid out as the official EPSABlock(256, 64) (conv2 is the PSA module) with a downsample."""
    state = {"conv1.weight": torch.randn(64, 256, 1, 1, generator=gen),
             "conv3.weight": torch.randn(256, 64, 1, 1, generator=gen)}
    for name, c in (("bn1", 64), ("bn2", 64), ("bn3", 256)):
        state.update(identity_bn_state(name, c))
    state.update({f"conv2.{k}": v for k, v in psa_state.items()})
    return state


@pytest.mark.parametrize("variant", ["reference", "safe"])
def test_official_epsablock_checkpoint_loads(variant, tmp_path):
    trained = randomize_for_verification(PSAModule(64, 64), seed=5).eval()
    path = tmp_path / "epsanet50.pth.tar"
    state = _epsablock_state(trained.state_dict(), torch.Generator().manual_seed(0))
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    module = blocks.create("psa", variant).eval()
    report = blocks.load_checkpoint(module, path)
    assert report.converted_by == ["convert_epsablock_layout"] and report.stripped_prefix == "module."
    x = blocks.example_input("psa", 2, seed=6)
    with torch.no_grad():
        torch.testing.assert_close(module(x), trained(x), rtol=1e-5, atol=1e-6)


def test_plain_psamodule_state_with_dataparallel_prefix_loads():
    trained = randomize_for_verification(PSAModule(64, 64), seed=1)
    module = blocks.create("psa", "safe")
    report = blocks.load_checkpoint(module, {f"module.{k}": v for k, v in trained.state_dict().items()})
    assert report.converted_by == [] and report.stripped_prefix == "module."


def test_planes_below_64_are_refused_at_construction():
    # Official: the SE's hidden width planes // 4 // 16 is 0 and the first forward raises inside conv2d.
    with pytest.raises(ValueError, match="planes"):
        blocks.create("psa", inplans=32, planes=32)


def test_fp16_graph_is_accurate_at_activation_scale_50(tmp_path):
    ref, safe = registry_twins("psa", seed=0)
    x = (torch.rand(1, 64, 56, 56, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 50
    with torch.no_grad():
        expected = ref(x).numpy()
    path = tmp_path / "psa.onnx"
    export_onnx(safe, (x,), path, exporter="torchscript", input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: ("batch", 1, 8)}})
    fp16 = convert_to_fp16(onnx.load(str(path)))
    with OrtRunner(fp16.SerializeToString()) as runner:
        ort_out = runner.infer({"input": x.numpy()})["output"]
    typed_out = ReferenceEvaluator(fp16).run(None, {"input": x.numpy()})[0]   # every tensor in its declared type
    scale = float(np.abs(expected).max())
    for label, out in (("ort", ort_out), ("typed", typed_out)):
        err = float(np.abs(out - expected).max())
        print(f"psa fp16 {label}: max abs error {err:.4f} (output max {scale:.1f})")
        assert np.isfinite(out).all()
        assert err <= 2e-3 * scale
