"""A tiny generated ONNX model (Conv -> Relu -> GlobalAveragePool, dynamic batch) and its torch reference."""

from __future__ import annotations

import numpy as np
import pytest


def tiny_conv_model(path, seed: int = 0):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["conv"], ["relu"]),
         helper.make_node("GlobalAveragePool", ["relu"], ["output"])],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, 1, 1])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return w, b


def torch_reference(x, w, b):
    import torch
    import torch.nn.functional as F

    y = F.relu(F.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), padding=1))
    return y.mean(dim=(2, 3), keepdim=True).numpy()


@pytest.fixture
def tiny_onnx(tmp_path):
    path = tmp_path / "tiny.onnx"
    w, b = tiny_conv_model(path)
    return path, w, b


@pytest.fixture
def no_openvino(monkeypatch):
    """Make `import openvino` fail as it does where the package is not installed."""
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)
