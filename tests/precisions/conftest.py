"""Verification data for the precision tests: the tiny conv graph, seeded inputs, and PyTorch's outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tests.backends.conftest import tiny_conv_model, torch_reference


@pytest.fixture
def tiny_case(tmp_path):
    import onnx

    path = tmp_path / "tiny.onnx"
    w, b = tiny_conv_model(path)
    inputs = {(n, 3, 8, 8): np.random.default_rng(n).standard_normal((n, 3, 8, 8), dtype=np.float32) for n in (1, 3)}
    expected = {s: {"output": torch_reference(x, w, b)} for s, x in inputs.items()}
    return onnx.load(str(path)), inputs, expected
