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


def stored(model, name):
    init = next(i for i in model.graph.initializer if i.name == name)
    return TensorProto.DataType.Name(init.data_type), numpy_helper.to_array(init)


def weighted(k: np.ndarray, *, value_info: bool):
    """y = relu(x * k) with `k` a weight; the dynamo exporter also lists weights in value_info."""
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["t"], name="mul"), helper.make_node("Relu", ["t"], ["y"], name="relu")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], [numpy_helper.from_array(k, "k")],
        value_info=[helper.make_tensor_value_info("k", TensorProto.FLOAT, [3])] if value_info else [])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


@pytest.mark.parametrize("value_info", [False, True])
def test_a_kept_node_keeps_its_weights_in_fp32(value_info):
    # Weights past the fp16 range and below its smallest value, read only by a kept node: stored and used as
    # fp32. With value_info the converter used to store them as fp16 behind a Cast back to fp32.
    k = np.array([2e5, 3.0, 1e-8], np.float32)
    half = convert_to_fp16(weighted(k, value_info=value_info), fp32_nodes=["mul", "relu"])
    dtype, values = stored(half, "k")
    assert dtype == "FLOAT" and values.tolist() == k.tolist()
    x = np.array([[1e-3, 1e-3, 1e-3], [2.0, -1.0, 4.0]], np.float32)
    np.testing.assert_allclose(run(half, x), np.maximum(x * k, 0), rtol=1e-6)


def test_fp16_weights_are_rounded_to_the_nearest_fp16_saturating_at_its_max():
    # The converter's default clamps every |weight| above 1e4 to 1e4; fp16 itself holds up to 65504.
    k = np.array([2e4, 6e4, 1e6], np.float32)
    dtype, values = stored(convert_to_fp16(weighted(k, value_info=True)), "k")
    assert dtype == "FLOAT16"
    assert values.tolist() == [np.float16(2e4), np.float16(6e4), 65504.0]
    # Nonzero weights below the smallest fp16 stay nonzero (an epsilon must not become zero).
    tiny = np.array([1e-9, -1e-9, 0.0], np.float32)
    assert stored(convert_to_fp16(weighted(tiny, value_info=False)), "k")[1].tolist() == [2 ** -24, -2 ** -24, 0.0]


def test_a_kept_node_that_makes_a_graph_output_is_not_rounded_through_fp16():
    # y = x * x with x = 300: 90000 is past fp16, so a round trip through fp16 would make it Inf.
    model = graph([helper.make_node("Mul", ["x", "x"], ["y"], name="square")])
    x = np.array([[300.0, 1e-4, 2.0]], np.float32)
    half = convert_to_fp16(model, fp32_nodes=["square"])
    np.testing.assert_array_equal(run(half, x), x * x)
    assert not [n for n in half.graph.node if n.op_type == "Cast"]  # no Cast left on the way out


def test_kept_nodes_in_a_row_pass_fp32_between_them():
    # t = x * x overflows fp16 and is read by another kept node and by an fp16 node (Sign, which Inf does
    # not change): the kept reader must get fp32 t, not t rounded through fp16 (Inf).
    model = graph([
        helper.make_node("Mul", ["x", "x"], ["t"], name="square"),
        helper.make_node("Div", ["t", "x"], ["u"], name="back"),       # kept: t / x = x
        helper.make_node("Sign", ["t"], ["s"], name="sign"),           # fp16: 1
        helper.make_node("Sub", ["u", "x"], ["d"], name="diff"),       # fp16: 0
        helper.make_node("Mul", ["d", "s"], ["y"], name="y"),          # fp16: 0
    ])
    x = np.array([[300.0, 500.0, -250.0]], np.float32)
    out = run(convert_to_fp16(model, fp32_nodes=["square", "back"]), x)
    np.testing.assert_array_equal(out, np.zeros_like(x))


@pytest.mark.parametrize("keep", [[], ["total"]])
def test_a_cast_to_fp32_of_a_shape_scalar_feeds_fp16_arithmetic(keep):
    # SimAM's `n = h * w - 1` as the dynamo exporter writes it: an int64 size Cast to fp32 (declared fp32 in
    # value_info), dividing a sum. The converter re-declares the Cast's output fp16 but leaves `to` at fp32.
    # y = x / (sum(x) / (n - 1)) with n the row count.
    model = graph([
        helper.make_node("Constant", [], ["one"], name="one", value=numpy_helper.from_array(np.array([1], np.int64))),
        helper.make_node("Shape", ["x"], ["s"], name="shape", start=0, end=1),
        helper.make_node("Sub", ["s", "one"], ["n1"], name="minus_one"),
        helper.make_node("Squeeze", ["n1"], ["n1s"], name="squeeze"),
        helper.make_node("Cast", ["n1s"], ["scalar"], name="scalar_tensor", to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["x"], ["total"], name="total", keepdims=1),
        helper.make_node("Div", ["total", "scalar"], ["mean"], name="mean"),
        helper.make_node("Div", ["x", "mean"], ["y"], name="y"),
    ])
    model.graph.value_info.extend([helper.make_tensor_value_info("scalar", TensorProto.FLOAT, []),
                                   helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 1])])
    onnx.checker.check_model(model, full_check=True)
    x = np.linspace(0.5, 3, 12, dtype=np.float32).reshape(4, 3)
    half = convert_to_fp16(model, fp32_nodes=keep)
    onnx.checker.check_model(half, full_check=True)
    np.testing.assert_allclose(run(half, x), x / (x.sum() / 3), rtol=2e-3)
