"""Tiny ONNX graphs for the TensorRT tests, generated with onnx.helper (no torch), in export's layout.

Each maker writes `<models>/<name>/1/model.onnx` and returns its path; `write_export_sidecar` adds a
deploykit.json shaped like the one `deploykit export` writes (a `profile` and the `config.input` ranges).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(model: onnx.ModelProto, models: Path, name: str) -> Path:
    path = Path(models) / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _model(nodes, inputs, outputs, initializers=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "tiny", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def conv_relu(models: Path, name: str = "tiny", *, dynamic: bool = True, channels: int = 3, size: int = 8,
              seed: int = 0) -> Path:
    """input [batch, C, height, width] -> Conv 3x3 (C -> 4, pad 1) -> Relu -> output."""
    rng = np.random.default_rng(seed)
    weight = numpy_helper.from_array(rng.standard_normal((4, channels, 3, 3)).astype(np.float32), "weight")
    bias = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bias")
    dims_in = ["batch", channels, "height", "width"] if dynamic else [1, channels, size, size]
    dims_out = ["batch", 4, "height", "width"] if dynamic else [1, 4, size, size]
    nodes = [helper.make_node("Conv", ["input", "weight", "bias"], ["conv_out"], name="conv0", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv_out"], ["output"], name="relu0")]
    model = _model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims_in)],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims_out)], [weight, bias])
    return _save(model, models, name)


def fp16_of(fp32_path: Path) -> Path:
    """The mixed fp16 graph export writes beside an fp32 one: models/<name>_fp16/1/model.onnx."""
    from deploykit.export.fp16 import convert_to_fp16

    fp32_path = Path(fp32_path)
    model = convert_to_fp16(onnx.load(str(fp32_path)))
    return _save(model, fp32_path.parent.parent.parent, f"{fp32_path.parent.parent.name}_fp16")


def qdq_conv(models: Path, name: str = "tiny_qdq") -> Path:
    """Explicitly quantized: QuantizeLinear/DequantizeLinear on the input and the weight, then Conv."""
    rng = np.random.default_rng(1)
    tensors = [
        numpy_helper.from_array(np.array(0.05, np.float32), "x_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "x_zero"),
        numpy_helper.from_array(rng.integers(-20, 20, (4, 3, 3, 3)).astype(np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.02, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zero"], ["x_q"], name="q_in"),
        helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w_dq"], name="dq_w"),
        helper.make_node("Conv", ["x_dq", "w_dq"], ["output"], name="conv0", pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                   [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])], tensors)
    return _save(model, models, name)


def two_inputs(models: Path, name: str = "tiny_pair") -> Path:
    """a [batch, 3, 8, 8] + b [batch, 3, 8, 8] -> sum: profiles over two inputs."""
    dims = ["batch", 3, 8, 8]
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"], name="add0")]
    model = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, dims),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, dims)],
                   [helper.make_tensor_value_info("sum", TensorProto.FLOAT, dims)])
    return _save(model, models, name)


def unsupported_op(models: Path, name: str = "tiny_custom") -> Path:
    """A node of a custom domain that no parser knows (for parser-error paths)."""
    nodes = [helper.make_node("Relu", ["input"], ["mid"], name="relu0"),
             helper.make_node("FancyOp", ["mid"], ["output"], name="fancy1", domain="com.example")]
    model = helper.make_model(
        helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    path = Path(models) / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))  # the checker would reject the unknown op: that is the point
    return path


def write_export_sidecar(onnx_path: Path, *, batch=(1, 2, 4), height=(8, 8, 16), width=(8, 8, 16), channels: int = 3,
                         with_profile: bool = True) -> Path:
    """A deploykit.json like export's: `profile` (whole shapes) and `config.input` ranges."""
    b, h, w = batch, height, width
    content = {
        "model": onnx_path.parent.parent.name,
        "config": {"input": {"name": "input", "batch": {"min": b[0], "opt": b[1], "max": b[2]},
                             "height": {"min": h[0], "opt": h[1], "max": h[2]},
                             "width": {"min": w[0], "opt": w[1], "max": w[2]}}},
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, channels, -1, -1]}],
    }
    if with_profile:
        content["profile"] = {"input": {"min": [b[0], channels, h[0], w[0]], "opt": [b[1], channels, h[1], w[1]],
                                        "max": [b[2], channels, h[2], w[2]]}}
    path = onnx_path.parent / "deploykit.json"
    path.write_text(json.dumps(content, indent=2))
    return path
