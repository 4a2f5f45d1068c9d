"""SE's options for published variants (activation, gate, bias, squeeze width): the reference against the
formula written out, the twin against the reference, the twin on ONNX Runtime; defaults unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deploykit import blocks
from deploykit.blocks.se import SEModule, SEModuleSafe
from tests.blocks.helpers import export_dynamic_hw, run_ort, seeded_twins

ACTS = {"relu": torch.relu, "relu6": F.relu6, "silu": lambda t: t * torch.sigmoid(t),
        "gelu": lambda t: 0.5 * t * (1 + torch.erf(t / 2 ** 0.5)),
        "gelu_tanh": lambda t: 0.5 * t * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (t + 0.044715 * t ** 3))),
        "hardswish": lambda t: t * torch.clamp(t + 3, 0, 6) / 6}
GATES = {"sigmoid": torch.sigmoid, "hardsigmoid": lambda t: torch.clamp(t + 3, 0, 6) / 6}


def formula(x, sd, act, gate):
    z = x.mean(dim=(2, 3))
    w1, w2 = sd["fc1.weight"][:, :, 0, 0], sd["fc2.weight"][:, :, 0, 0]
    h = ACTS[act](z @ w1.t() + sd.get("fc1.bias", 0))
    return x * GATES[gate](h @ w2.t() + sd.get("fc2.bias", 0))[:, :, None, None]


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("gate", list(GATES))
@pytest.mark.parametrize("bias", [True, False])
def test_options_match_the_formula_reference_and_twin(act, gate, bias):
    ref, twin = seeded_twins(SEModule, SEModuleSafe, 40, rd_channels=12, activation=act, gate=gate, bias=bias, seed=3)
    assert ref.fc1.out_channels == 12 and (ref.fc1.bias is not None) == bias
    x = torch.randn(2, 40, 9, 7) * 4 + torch.randn(1, 40, 1, 1) * 3     # pooled values reach ReLU6's clip
    with torch.no_grad():
        expected = formula(x, ref.state_dict(), act, gate)
        torch.testing.assert_close(ref(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(twin(x), expected, atol=1e-5, rtol=1e-5)


def test_defaults_are_the_paper_block_with_unchanged_keys():
    module = blocks.create("se")
    assert sorted(module.state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]
    assert module.activation == "relu" and module.gate == "sigmoid" and module.fc1.out_channels == 64 // 16
    assert type(module.relu).__name__ == "ReLU" and type(module.sigmoid).__name__ == "Sigmoid"


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="activation must be one of"):
        SEModule(16, activation="tanh")
    with pytest.raises(ValueError, match="gate one of"):
        SEModule(16, gate="softmax")
    with pytest.raises(ValueError, match="rd_channels"):
        SEModule(16, rd_channels=0)


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_hardsigmoid_silu_twin_on_onnx_runtime(exporter, tmp_path):
    ref, twin = seeded_twins(SEModule, SEModuleSafe, 64, rd_channels=24, activation="silu", gate="hardsigmoid",
                             seed=4)
    path = tmp_path / "se.onnx"
    export_dynamic_hw(twin, 64, path, exporter)
    x = torch.randn(3, 64, 17, 11) * 4
    with torch.no_grad():
        torch.testing.assert_close(run_ort(path, x), ref(x), atol=1e-5, rtol=1e-4)
