"""A zoo of tiny ONNX models, generated with onnx.helper, one per edge case `deploykit validate` must judge.

Each builder returns a ModelProto (or writes files, for cases that need more than one); `write(model, folder)`
saves it as folder/model.onnx. Names say what the model exercises. The tests assert every finding and exit
code on these, so no test depends on hand-made bytes or on a model downloaded from anywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

vi = h.make_tensor_value_info


def model(nodes, inputs, outputs, inits=(), opset: int = 18, ir: int = 10, extra_opsets=(), functions=()):
    graph = h.make_graph(list(nodes), "zoo", list(inputs), list(outputs), initializer=list(inits))
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset), *extra_opsets], ir_version=ir,
                     functions=list(functions), producer_name="deploykit-tests")
    return m


def write(m, folder: Path, name: str = "model.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save(m, str(path))
    return path


def const(name: str, array) -> onnx.TensorProto:
    return nh.from_array(np.asarray(array), name)


def _weights(shape, seed=0, scale=0.3):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ------------------------------------------------------------------------------------------ clean ones
def conv_relu(batch: int | str = 1, channels: int = 3, size: int = 8, opset: int = 18):
    """x -> Conv(3x3, pad 1) -> Relu: every op, attribute and type TensorRT supports."""
    return model(
        [h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
         h.make_node("Relu", ["c"], ["y"], name="relu")],
        [vi("x", T.FLOAT, [batch, channels, size, size])], [vi("y", T.FLOAT, [batch, 4, size, size])],
        [const("w", _weights((4, channels, 3, 3))), const("b", _weights((4,), 1))], opset=opset)


def relu(dims, opset: int = 18, elem=T.FLOAT):
    return model([h.make_node("Relu", ["x"], ["y"], name="relu")], [vi("x", elem, dims)], [vi("y", elem, dims)],
                 opset=opset)


def two_inputs():
    """a[N,4] + b[N,4] -> y: several inputs, symbolic batch shared."""
    return model([h.make_node("Add", ["a", "b"], ["y"], name="add")],
                 [vi("a", T.FLOAT, ["N", 4]), vi("b", T.FLOAT, ["N", 4])], [vi("y", T.FLOAT, ["N", 4])])


# ------------------------------------------------------------------------------------- operator support
def det_unsupported():
    """Det: the support matrix marks it N for every version."""
    return model([h.make_node("Det", ["x"], ["y"], name="det0")], [vi("x", T.FLOAT, [2, 3, 3])],
                 [vi("y", T.FLOAT, [2])])


def swish_opset24():
    """Swish: absent from the 10.x matrix, added by the TensorRT 11.0 parser; opset 24 is fine for both."""
    return model([h.make_node("Swish", ["x"], ["y"], name="swish0")], [vi("x", T.FLOAT, [2, 3])],
                 [vi("y", T.FLOAT, [2, 3])], opset=24)


def custom_domain():
    """com.microsoft.Gelu: ONNX Runtime runs it, TensorRT needs a plugin."""
    return model([h.make_node("Gelu", ["x"], ["y"], name="msgelu", domain="com.microsoft")],
                 [vi("x", T.FLOAT, [2, 3])], [vi("y", T.FLOAT, [2, 3])],
                 extra_opsets=[h.make_opsetid("com.microsoft", 1)])


def local_function_with_det():
    """A model-local function whose body holds Det: the parser imports the body, so Det is the finding."""
    body = [h.make_node("Det", ["fx"], ["fy"], name="det_in_fn")]
    fn = h.make_function("mylib", "MyDet", ["fx"], ["fy"], body, [h.make_opsetid("", 18)])
    return model([h.make_node("MyDet", ["x"], ["y"], name="call", domain="mylib")],
                 [vi("x", T.FLOAT, [2, 3, 3])], [vi("y", T.FLOAT, [2])],
                 extra_opsets=[h.make_opsetid("mylib", 1)], functions=[fn])


def if_with_det():
    """Det inside an If branch: subgraphs are audited too."""
    then_g = h.make_graph([h.make_node("Det", ["x"], ["t"], name="det_then")], "then", [], [vi("t", T.FLOAT, [2])])
    else_g = h.make_graph([h.make_node("ReduceSum", ["x", "ax"], ["e"], name="sum_else", keepdims=0)], "else", [],
                          [vi("e", T.FLOAT, [2])])
    return model([h.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
                 [vi("c", T.BOOL, []), vi("x", T.FLOAT, [2, 3, 3])], [vi("y", T.FLOAT, [2])],
                 [const("ax", np.array([1, 2], np.int64))])


# ---------------------------------------------------------------------------------------- restrictions
def resize(mode: str = "cubic"):
    return model([h.make_node("Resize", ["x", "", "s"], ["y"], name="up", mode=mode)],
                 [vi("x", T.FLOAT, [1, 1, 4, 4])], [vi("y", T.FLOAT, [1, 1, 8, 8])],
                 [const("s", np.array([1, 1, 2, 2], np.float32))])


def maxpool_dilated():
    return model([h.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2], dilations=[2, 2])],
                 [vi("x", T.FLOAT, [1, 1, 8, 8])], [vi("y", T.FLOAT, [1, 1, 6, 6])])


def maxpool_indices():
    return model([h.make_node("MaxPool", ["x"], ["y", "idx"], name="pool", kernel_shape=[2, 2])],
                 [vi("x", T.FLOAT, [1, 1, 8, 8])], [vi("y", T.FLOAT, [1, 1, 7, 7]), vi("idx", T.INT64, [1, 1, 7, 7])])


def avgpool_1d():
    return model([h.make_node("AveragePool", ["x"], ["y"], name="pool1d", kernel_shape=[3])],
                 [vi("x", T.FLOAT, [1, 1, 8])], [vi("y", T.FLOAT, [1, 1, 6])])


def topk_unsorted():
    return model([h.make_node("TopK", ["x", "k"], ["v", "i"], name="topk", sorted=0)],
                 [vi("x", T.FLOAT, [1, 10])], [vi("v", T.FLOAT, [1, 3]), vi("i", T.INT64, [1, 3])],
                 [const("k", np.array([3], np.int64))])


def reduce_axes_input():
    """ReduceSum whose axes arrive at run time: the parser needs them as an initializer."""
    return model([h.make_node("ReduceSum", ["x", "axes"], ["y"], name="rsum", keepdims=1)],
                 [vi("x", T.FLOAT, [1, 4, 8, 8]), vi("axes", T.INT64, [1])], [vi("y", T.FLOAT, ["a", "b", "c", "d"])])


def qdq_nonzero_zero_point():
    return model([h.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="quant"),
                  h.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="dequant")],
                 [vi("x", T.FLOAT, [1, 4])], [vi("y", T.FLOAT, [1, 4])],
                 [const("s", np.array(0.1, np.float32)), const("zp", np.array(3, np.int8))])


# ---------------------------------------------------------------------------------------------- dtypes
def float64_add():
    return model([h.make_node("Add", ["x", "c"], ["y"], name="add64")], [vi("x", T.DOUBLE, [1, 4])],
                 [vi("y", T.DOUBLE, [1, 4])], [const("c", np.ones((1, 4), np.float64))])


def identity_of(elem):
    """x -> Identity -> y of an element type TensorRT has no equivalent for (string, complex, uint16)."""
    return model([h.make_node("Identity", ["x"], ["y"], name="ident")], [vi("x", elem, [2])], [vi("y", elem, [2])])


def uint8_inside():
    return model([h.make_node("Cast", ["x"], ["u8"], name="to_u8", to=T.UINT8),
                  h.make_node("Cast", ["u8"], ["y"], name="to_f32", to=T.FLOAT)],
                 [vi("x", T.FLOAT, [1, 4])], [vi("y", T.FLOAT, [1, 4])])


def int64_io():
    return model([h.make_node("Add", ["x", "c"], ["y"], name="add_i64")], [vi("x", T.INT64, [1, 4])],
                 [vi("y", T.INT64, [1, 4])], [const("c", np.arange(4, dtype=np.int64).reshape(1, 4))])


def matmul_int32():
    """MatMul on INT32: ONNX Runtime runs it; the matrix lists MatMul for FP32/FP16/BF16 only."""
    return model([h.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                 [vi("a", T.INT32, [2, 3]), vi("b", T.INT32, [3, 2])], [vi("y", T.INT32, [2, 2])])


# ------------------------------------------------------------------------------------ shapes, profiles
def shape_computation():
    """x[N,4,8,8] -> Reshape(x, Concat(Gather(Shape(x), 0), [-1])): the classic dynamic-batch flatten."""
    return model(
        [h.make_node("Shape", ["x"], ["shp"], name="shape"),
         h.make_node("Gather", ["shp", "zero"], ["n"], name="take_batch", axis=0),
         h.make_node("Unsqueeze", ["n", "axes0"], ["n1"], name="as_list"),
         h.make_node("Concat", ["n1", "minus1"], ["target"], name="target_shape", axis=0),
         h.make_node("Reshape", ["x", "target"], ["y"], name="flatten")],
        [vi("x", T.FLOAT, ["N", 4, 8, 8])], [vi("y", T.FLOAT, ["N", 256])],
        [const("zero", np.array(0, np.int64)), const("axes0", np.array([0], np.int64)),
         const("minus1", np.array([-1], np.int64))])


# ------------------------------------------------------------------------------------- weights, files
def conv_with_weights(w):
    return model([h.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1])],
                 [vi("x", T.FLOAT, [1, 2, 4, 4])], [vi("y", T.FLOAT, [1, 2, 4, 4])], [const("w", w)])


def nan_weights():
    w = _weights((2, 2, 1, 1))
    w[0, 1, 0, 0] = np.nan
    return conv_with_weights(w)


def inf_weights():
    w = _weights((2, 2, 1, 1))
    w[1, 0, 0, 0] = np.inf
    return conv_with_weights(w)


def initializer_as_input():
    m = conv_with_weights(_weights((2, 2, 1, 1)))
    m.graph.input.append(vi("w", T.FLOAT, [2, 2, 1, 1]))
    return m


def external_weights(folder: Path, location: str, *, write_bytes: bool = True, truncate: bool = False) -> Path:
    """A 1x1 conv whose weights live in `location` (relative to the model unless absolute)."""
    w = _weights((2, 2, 1, 1))
    m = conv_with_weights(w)
    init = m.graph.initializer[0]
    raw = w.tobytes()
    init.ClearField("float_data")
    init.raw_data = b""
    init.data_location = T.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        entry = init.external_data.add()
        entry.key, entry.value = key, value
    folder.mkdir(parents=True, exist_ok=True)
    if write_bytes:
        target = Path(location) if Path(location).is_absolute() else folder / location
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw[: len(raw) // 2] if truncate else raw)
    path = folder / "model.onnx"
    path.write_bytes(m.SerializeToString())
    return path


# ----------------------------------------------------------------------------------- inputs, outputs
def no_inputs():
    return model([h.make_node("Constant", [], ["c"], name="const", value=const("v", np.ones(3, np.float32))),
                  h.make_node("Identity", ["c"], ["y"], name="ident")], [], [vi("y", T.FLOAT, [3])])


def log_of_input():
    """Log of standard-normal inputs: about half the outputs are NaN."""
    return model([h.make_node("Log", ["x"], ["y"], name="log")], [vi("x", T.FLOAT, [1, 64])],
                 [vi("y", T.FLOAT, [1, 64])])


# ------------------------------------------------------------------------------------------------ fp16
def scale_chain(up: float, down: float):
    """x -> Mul(up) 'scale_up' -> Relu 'relu' -> Mul(down) 'scale_down' -> y (an identity-like chain)."""
    return model(
        [h.make_node("Mul", ["x", "up"], ["big"], name="scale_up"),
         h.make_node("Relu", ["big"], ["big_relu"], name="relu"),
         h.make_node("Mul", ["big_relu", "down"], ["y"], name="scale_down")],
        [vi("x", T.FLOAT, [1, 4, 8, 8])], [vi("y", T.FLOAT, [1, 4, 8, 8])],
        [const("up", np.array(up, np.float32)), const("down", np.array(down, np.float32))])


def fp16_overflow():
    return scale_chain(1e6, 1e-6)


def fp16_underflow():
    return scale_chain(1e-7, 1e7)


# ------------------------------------------------------------------------- weights outside initializers
def conv_with_constant_weights(w):
    """A 1x1 conv whose weights come from a Constant node (as the onnx package's light model zoo stores them)."""
    return model([h.make_node("Constant", [], ["w"], name="weights", value=const("wv", w)),
                  h.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1])],
                 [vi("x", T.FLOAT, [1, 2, 4, 4])], [vi("y", T.FLOAT, [1, 2, 4, 4])])


def constant_of_shape_bias(value: float):
    """y = x + ConstantOfShape([1, 4], value): the bias's value lives in the node's attribute."""
    return model([h.make_node("ConstantOfShape", ["bias_shape"], ["bias"], name="fill",
                              value=const("fill_value", np.array([value], np.float32))),
                  h.make_node("Add", ["x", "bias"], ["y"], name="add")],
                 [vi("x", T.FLOAT, [1, 4])], [vi("y", T.FLOAT, [1, 4])],
                 [const("bias_shape", np.array([1, 4], np.int64))])


def constant_scale_chain(up: float, down: float):
    """scale_chain with its two scales in Constant nodes instead of initializers."""
    return model(
        [h.make_node("Constant", [], ["up"], name="c_up", value=const("upv", np.array(up, np.float32))),
         h.make_node("Constant", [], ["down"], name="c_down", value=const("downv", np.array(down, np.float32))),
         h.make_node("Mul", ["x", "up"], ["big"], name="scale_up"),
         h.make_node("Mul", ["big", "down"], ["y"], name="scale_down")],
        [vi("x", T.FLOAT, [1, 4, 8, 8])], [vi("y", T.FLOAT, [1, 4, 8, 8])])


def ir3_initializer_as_input():
    """IR 3 (the onnx light model zoo's version), whose rules require every initializer in graph.input."""
    w = _weights((2, 2, 1, 1))
    return model([h.make_node("Conv", ["x", "w"], ["y"], name="conv", kernel_shape=[1, 1])],
                 [vi("x", T.FLOAT, [1, 2, 4, 4]), vi("w", T.FLOAT, [2, 2, 1, 1])], [vi("y", T.FLOAT, [1, 2, 4, 4])],
                 [const("w", w)], opset=8, ir=3)


def unregistered_custom_op():
    """mycorp.Frobnicate: a custom-domain op nothing implements (no ONNX Runtime kernel, no TensorRT plugin)."""
    return model([h.make_node("Frobnicate", ["x"], ["y"], name="frob", domain="mycorp")],
                 [vi("x", T.FLOAT, [2, 3])], [vi("y", T.FLOAT, [2, 3])],
                 extra_opsets=[h.make_opsetid("mycorp", 1)])
