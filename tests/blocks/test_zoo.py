"""Every registered block: the export-safe twin is the reference, in PyTorch and after ONNX export.

Parametrized over the registry (plus SMT's self-attention option), so a new block is covered by adding it.
Block-specific checks (the authors' key lists, official formulations, fp16 at realistic scale) live in
test_<block>.py beside this file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from deploykit import blocks
from deploykit.backends.ort import OrtRunner
from deploykit.export.exporters import export_onnx
from deploykit.onnx_utils.graph import count_shape_nodes
from tests.blocks.helpers import registry_twins

CASES = [(name, {}) for name in blocks.names()] + [("sam", {"ca_attention": 0})]


def case_id(name: str, overrides: dict) -> str:
    return name + "".join(f"-{k}{v}" for k, v in overrides.items())


IDS = [case_id(name, kw) for name, kw in CASES]


def rel_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    return float((expected - actual).abs().max() / expected.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_twin_has_the_reference_keys_and_loads_strictly(name, overrides):
    ref = blocks.create(name, "reference", **overrides)
    safe = blocks.create(name, "safe", **overrides)
    ref_state, safe_state = ref.state_dict(), safe.state_dict()
    assert list(ref_state) == list(safe_state)
    assert all(ref_state[k].shape == safe_state[k].shape for k in ref_state)
    safe.load_state_dict(ref_state, strict=True)
    assert len(ref_state) > 0


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
@pytest.mark.parametrize("size", [None, (41, 17)], ids=["default", "41x17"])
def test_twin_equals_reference(name, overrides, size):
    ref, safe = registry_twins(name, **overrides)
    h, w = size or (None, None)
    x = blocks.example_input(name, 3, height=h, width=w, seed=1, **overrides)
    with torch.no_grad():
        out_safe = safe(x)
        out_ref = ref(x)
    assert out_safe.shape == x.shape
    if out_ref.shape != x.shape:
        # Only where the official map is larger than the input (HA-CNN at odd sizes, documented in the block
        # file): the twin is the official map's top-left H x W window, the value at every input pixel.
        assert size is not None and blocks.spec(name).extra.get("reference_needs_even_hw")
        out_ref = out_ref[..., : x.shape[2], : x.shape[3]]
    err = rel_error(out_ref, out_safe)
    print(f"{name} {size}: relative error {err:.2e}")
    assert err <= 1e-5


class _MutationRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.mutating: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.is_mutable:
            self.mutating.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_twin_has_no_inplace_ops(name, overrides):
    _, safe = registry_twins(name, **overrides)
    x = blocks.example_input(name, 2, **overrides)
    with torch.no_grad(), _MutationRecorder() as rec:
        safe(x)
    assert not rec.mutating, f"in-place ops in the export-safe twin: {sorted(rec.mutating)}"


def _ort(path, x: np.ndarray) -> np.ndarray:
    with OrtRunner(path) as runner:
        return runner.infer({"input": x})["output"]


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_twin_exports_with_dynamic_batch_and_matches_ort(tmp_path, name, overrides, exporter):
    ref, safe = registry_twins(name, **overrides)
    x = blocks.example_input(name, 2, **overrides)
    path = tmp_path / "model.onnx"
    export_onnx(safe, (x,), path, exporter=exporter, input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: ("batch", 1, 16)}})
    assert count_shape_nodes(path) == 0
    for batch in (1, 3):
        xb = blocks.example_input(name, batch, seed=batch, **overrides)
        with torch.no_grad():
            expected = ref(xb).numpy()
        actual = _ort(path, xb.numpy())
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


@pytest.mark.parametrize("name,overrides", CASES, ids=IDS)
def test_twin_exports_with_dynamic_batch_and_spatial_size(tmp_path, name, overrides):
    ref, safe = registry_twins(name, **overrides)
    x = blocks.example_input(name, 2, height=16, width=12, **overrides)
    path = tmp_path / "model.onnx"
    export_onnx(safe, (x,), path, exporter="dynamo", input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: ("batch", 1, 16), 2: ("height", 4, 128), 3: ("width", 4, 128)}})
    assert count_shape_nodes(path) == 0
    for h, w in ((14, 14), (23, 9)):
        xb = blocks.example_input(name, 2, height=h, width=w, seed=h, **overrides)
        actual = _ort(path, xb.numpy())
        with torch.no_grad():
            safe_out = safe(xb).numpy()
        np.testing.assert_allclose(actual, safe_out, rtol=1e-4, atol=1e-4 * float(np.abs(safe_out).max()))


@pytest.mark.parametrize("name,args", [
    ("se", {"channels": 8, "reduction": 16}),
    ("se", {"channels": 64, "reduction": 0}),
    ("cbam", {"gate_channels": 8, "reduction_ratio": 16}),
    ("bam", {"gate_channel": 8, "reduction_ratio": 16}),
])
def test_a_reduction_that_leaves_no_hidden_channels_is_refused_when_built(name, args):
    # The authors' modules would build a 0-wide layer that fails at the first forward (or divide by zero).
    for variant in ("reference", "safe"):
        with pytest.raises(ValueError, match="leaves no hidden channels"):
            blocks.create(name, variant, **args)
