"""convert_to_fp16 on graphs that trip onnxconverter-common: each must load in ONNX Runtime and compute
what numpy computes from the fp32 definition."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deploykit.export.fp16 import convert_to_fp16


def run(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def graph(nodes, named=True):
    if not named:
        for node in nodes:
            node.name = ""
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize("keep", [[], ["fill"], ["add"]])
def test_constant_of_shape_with_its_default_value(keep):
    # No `value` attribute: ONNX defines the fill as one fp32 zero. y = x * x + 0.
    model = graph([
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill"),
        helper.make_node("Mul", ["x", "x"], ["x2"], name="square"),
        helper.make_node("Add", ["x2", "c"], ["y"], name="add"),
    ])
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(4, 3)
    out = run(convert_to_fp16(model, fp32_nodes=keep), x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x * x, rtol=1e-3)


def test_constant_of_shape_with_a_value():
    model = graph([
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("ConstantOfShape", ["s"], ["c"], name="fill",
                         value=numpy_helper.from_array(np.array([0.25], np.float32))),
        helper.make_node("Add", ["x", "c"], ["y"], name="add"),
    ])
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(run(convert_to_fp16(model), x), x + 0.25, rtol=1e-3)


def test_unnamed_nodes_reading_one_input():
    # Two unnamed readers of the graph input: the converter would give both boundary Casts one name.
    model = graph([
        helper.make_node("Mul", ["x", "x"], ["x2"]),
        helper.make_node("Add", ["x2", "x"], ["y"]),
    ], named=False)
    x = np.linspace(-2, 2, 9, dtype=np.float32).reshape(3, 3)
    np.testing.assert_allclose(run(convert_to_fp16(model), x), x * x + x, rtol=1e-3, atol=1e-3)


def test_unnamed_node_can_still_be_kept_by_its_output_name():
    # The pipeline names kept nodes by their first output when they have no name; a kept node computes in fp32.
    big = np.float32(300.0)
    model = graph([
        helper.make_node("Mul", ["x", "x"], ["x2"]),          # 300^2 = 90000 overflows fp16
        helper.make_node("Div", ["x2", "x"], ["y"]),
    ], named=False)
    x = np.full((1, 3), big, np.float32)
    out = run(convert_to_fp16(model, fp32_nodes=["x2", "y"]), x)
    np.testing.assert_allclose(out, x, rtol=1e-3)
