"""What an ONNX graph tells the TensorRT build: its inputs and outputs, and the precision it carries.

A strongly typed TensorRT network runs every tensor in the type the graph gives it, so the graph's own
precision *is* the engine's precision: fp16 tensors or casts make an fp16 (mixed) engine, Q/DQ nodes an int8
one. This module reads that from the graph (weights are not loaded) so the build can refuse a mismatch with
`--precision` before TensorRT is involved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.onnx_utils.graph import subgraphs

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class GraphTensor:
    """A graph input or output.

    Attributes:
        name: tensor name.
        dtype: numpy-style element type name ("float32").
        dims: sizes, -1 where the size is dynamic.
        dim_names: the symbolic name of each dynamic dim ("batch"), "" where static or unnamed.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    dim_names: tuple[str, ...]

    @property
    def dynamic(self) -> bool:
        return any(d < 0 for d in self.dims)

    def describe(self) -> str:
        shown = [str(d) if d >= 0 else (n or "?") for d, n in zip(self.dims, self.dim_names)]
        return f"'{self.name}' ({'x'.join(shown)}, {self.dtype})"


@dataclass
class OnnxSummary:
    """The facts of one ONNX file the build needs.

    Attributes:
        path: the file.
        inputs / outputs: graph inputs (initializers excluded) and outputs.
        precision: "int8" (Q/DQ nodes), "fp16", "bf16" or "fp32": what a strongly typed build produces.
        qdq_nodes: number of QuantizeLinear/DequantizeLinear nodes (subgraphs and functions included).
        half_tensors: fp16 or bf16 initializers, casts, constants and typed values found.
        node_names: main-graph node names in order (TensorRT's parser reports nodes by this index).
        node_ops: main-graph node op types in the same order.
    """

    path: Path
    inputs: list[GraphTensor]
    outputs: list[GraphTensor]
    precision: str
    qdq_nodes: int = 0
    half_tensors: int = 0
    node_names: list[str] = field(default_factory=list)
    node_ops: list[str] = field(default_factory=list)

    def input(self, name: str) -> GraphTensor:
        for tensor in self.inputs:
            if tensor.name == name:
                return tensor
        raise KeyError(name)


def _tensor(value_info, np_name) -> GraphTensor:
    ttype = value_info.type.tensor_type
    dims, names = [], []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value") and dim.dim_value > 0:
            dims.append(int(dim.dim_value))
            names.append("")
        else:
            dims.append(-1)
            names.append(dim.dim_param if dim.HasField("dim_param") else "")
    return GraphTensor(value_info.name, np_name(ttype.elem_type), tuple(dims), tuple(names))


def _walk_nodes(graph):
    """Every node of a graph and of the subgraphs in its attributes (If/Loop/Scan bodies)."""
    for node in graph.node:
        yield node
        for _name, sub in subgraphs(node):
            yield from _walk_nodes(sub)


def summarize(path: str | Path) -> OnnxSummary:
    """Read an ONNX file (without its external weights) and summarise it for the build.

    Raises:
        UserInputError: the file is missing or is not an ONNX model.
    """
    import onnx
    from onnx import TensorProto, helper

    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError as exc:
        raise UserInputError(f"ONNX model {path} does not exist",
                             hint="pass the path of an existing .onnx file, e.g. one `deploykit export` wrote") from exc
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a corrupt file
        raise UserInputError(f"{path} is not a readable ONNX model: {exc.__class__.__name__}: {exc}",
                             hint="pass an ONNX model file, e.g. one `deploykit export` wrote") from exc
    graph = model.graph
    if not graph.output:
        raise UserInputError(f"{path} is not a usable ONNX model: its graph has no outputs",
                             hint="export the model again with deploykit export")

    def np_name(elem_type: int) -> str:
        if elem_type == TensorProto.BFLOAT16:  # numpy has no bfloat16; name it as Triton does
            return "bfloat16"
        try:
            return helper.tensor_dtype_to_np_dtype(elem_type).name
        except Exception:  # noqa: BLE001 - undefined or exotic element types
            return TensorProto.DataType.Name(elem_type).lower()

    initializers = {init.name for init in graph.initializer}
    inputs = [_tensor(vi, np_name) for vi in graph.input if vi.name not in initializers]
    outputs = [_tensor(vi, np_name) for vi in graph.output]

    half = (TensorProto.FLOAT16, TensorProto.BFLOAT16)
    half_count = {TensorProto.FLOAT16: 0, TensorProto.BFLOAT16: 0}

    def count(elem_type: int) -> None:
        if elem_type in half_count:
            half_count[elem_type] += 1

    for init in graph.initializer:
        count(init.data_type)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        count(vi.type.tensor_type.elem_type)
    nodes = list(_walk_nodes(graph))
    for function in model.functions:
        nodes.extend(function.node)
    qdq = 0
    for node in nodes:
        if node.op_type in QDQ_OPS:
            qdq += 1
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i in half:
                count(attr.i)
            elif attr.type == attr.TENSOR:
                count(attr.t.data_type)

    if qdq:
        precision = "int8"
    elif half_count[TensorProto.FLOAT16]:
        precision = "fp16"
    elif half_count[TensorProto.BFLOAT16]:
        precision = "bf16"
    else:
        precision = "fp32"
    return OnnxSummary(
        path=path, inputs=inputs, outputs=outputs, precision=precision, qdq_nodes=qdq,
        half_tensors=sum(half_count.values()),
        node_names=[node.name for node in graph.node], node_ops=[node.op_type for node in graph.node],
    )
