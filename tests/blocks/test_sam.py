"""SMT scale-aware modulation: the official keys, the head interleave, and fp16 at realistic scale."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from deploykit import blocks
from deploykit.backends.ort import OrtRunner
from deploykit.blocks.init import randomize_for_verification
from deploykit.export.exporters import export_onnx
from deploykit.export.fp16 import convert_to_fp16
from tests.blocks.helpers import registry_twins

# AFeng-x/SMT models/smt.py Attention(dim=64, ca_num_heads=4, qkv_bias=True, ca_attention=1)
OFFICIAL_CA_KEYS = sorted(
    ["proj.weight", "proj.bias", "v.weight", "v.bias", "s.weight", "s.bias"]
    + [f"local_conv_{i}.{p}" for i in range(1, 5) for p in ("weight", "bias")]
    + ["proj0.weight", "proj0.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
       "bn.num_batches_tracked", "proj1.weight", "proj1.bias"]
)
OFFICIAL_SA_KEYS = sorted(["proj.weight", "proj.bias", "q.weight", "q.bias", "kv.weight", "kv.bias",
                           "local_conv.weight", "local_conv.bias"])


def test_keys_match_the_official_attention():
    assert sorted(blocks.create("sam").state_dict()) == OFFICIAL_CA_KEYS
    assert sorted(blocks.create("sam", ca_attention=0).state_dict()) == OFFICIAL_SA_KEYS
    shapes = {k: tuple(v.shape) for k, v in blocks.create("sam").state_dict().items()}
    assert shapes["local_conv_4.weight"] == (16, 1, 9, 9) and shapes["proj0.weight"] == (128, 4, 1, 1)


def modulation_by_loops(m, x):
    """Scale-aware modulation written channel by channel from the paper: head i = channel slice i with a
    (3+2i)x(3+2i) depthwise conv; head i's channel j feeds proj0's group j as its i-th input."""
    b, c, h, w = x.shape
    heads, d = m.ca_num_heads, c // m.ca_num_heads
    tokens = x.flatten(2).transpose(1, 2)
    v = tokens @ m.v.weight.t() + m.v.bias
    s = (tokens @ m.s.weight.t() + m.s.bias).transpose(1, 2).reshape(b, c, h, w)
    mixed = torch.empty_like(s)
    for i in range(heads):
        conv = getattr(m, f"local_conv_{i + 1}")
        out_i = F.conv2d(s[:, i * d:(i + 1) * d], conv.weight, conv.bias, padding=1 + i, groups=d)
        for j in range(d):
            mixed[:, j * heads + i] = out_i[:, j]
    mod = m.proj1(F.gelu(m.bn(m.proj0(mixed))))
    y = mod.flatten(2).transpose(1, 2) * v
    y = y @ m.proj.weight.t() + m.proj.bias
    return y.transpose(1, 2).reshape(b, c, h, w)


@pytest.mark.parametrize("variant", ["reference", "safe"])
def test_modulation_matches_a_loop_formulation(variant):
    ref = randomize_for_verification(blocks.create("sam"), seed=3).eval()
    module = blocks.create("sam", variant).eval()
    module.load_state_dict(ref.state_dict())
    x = blocks.example_input("sam", 2, height=9, width=13)
    with torch.no_grad():
        torch.testing.assert_close(module(x), modulation_by_loops(ref, x), rtol=1e-4, atol=1e-5)


def test_official_token_interface_is_kept():
    ref = randomize_for_verification(blocks.create("sam"), seed=1).eval()
    x = blocks.example_input("sam", 2, height=7, width=5)
    tokens = x.flatten(2).transpose(1, 2)
    with torch.no_grad():
        out = ref.forward_tokens(tokens, 7, 5)
        torch.testing.assert_close(out.transpose(1, 2).reshape(x.shape), ref(x))


@pytest.mark.parametrize("ca_attention,scale,bound", [
    (1, 50.0, 1e-2),
    # Self-attention: SMT feeds it LayerNorm'ed tokens (|x| ~ 4); at +-50 the logits reach thousands and fp16
    # q/k rounding alone moves a peaked softmax by a few percent, so the bound there is looser (no overflow).
    (0, 4.0, 1e-2),
    (0, 50.0, 5e-2),
])
def test_fp16_graph_stays_accurate_at_realistic_scale(tmp_path, ca_attention, scale, bound):
    """Activations up to about +-50: the fp16 graph of the twin stays finite and close to fp32 PyTorch."""
    ref, safe = registry_twins("sam", seed=0, ca_attention=ca_attention)
    x = blocks.example_input("sam", 2, height=28, width=28, scale=scale / 4)  # |x| reaches ~scale
    assert 0.8 * scale < float(x.abs().max()) < 1.6 * scale
    path = tmp_path / "sam.onnx"
    export_onnx(safe, (x,), path, exporter="dynamo", input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: ("batch", 1, 8)}})
    half = convert_to_fp16(onnx.load(str(path)))
    with OrtRunner(half.SerializeToString()) as runner:
        out16 = runner.infer({"input": x.numpy()})["output"]
    with torch.no_grad():
        expected = ref(x).numpy()
    assert np.isfinite(out16).all()
    rel = np.abs(out16 - expected).max() / np.abs(expected).max()
    print(f"sam ca_attention={ca_attention} |x|~{scale}: fp16 relative error {rel:.2e}")
    assert rel < bound
