"""One pass over an ONNX model that the audit and the fp16 check both read: tensor types and shapes (after
shape inference), constant values, which node produces and which nodes consume each tensor, and every node
including those inside If/Loop/Scan bodies and model-local functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deploykit.onnx_utils.graph import subgraphs

# ai.onnx is spelt "" or "ai.onnx"
DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass
class NodeRef:
    """A node and where it sits.

    Attributes:
        node: the onnx NodeProto.
        where: "" for the main graph, else e.g. "If 'cond0' then_branch" or "function 'mylib.Foo'".
    """

    node: object
    where: str = ""

    @property
    def label(self) -> str:
        name = self.node.name or (self.node.output[0] if self.node.output else "?")
        return f"{name} (in {self.where})" if self.where else name


@dataclass
class GraphInfo:
    """Facts about one model; built by `inspect_model`.

    Attributes:
        model: the model after (non-strict) shape inference when that worked, else the loaded model.
        inferred: shape inference succeeded.
        elem_types: tensor name -> TensorProto element type (0 when unknown).
        shapes: tensor name -> dims (int, or str for a symbolic dim, or None when unknown); absent when rank unknown.
        constants: names whose value is known at build time (initializers and Constant outputs).
        producers: tensor name -> producing node (main graph).
        consumers: tensor name -> consuming nodes (main graph).
        graph_inputs: names of real inputs (initializers excluded).
        nodes: every node (main graph, subgraphs, local function bodies that are called).
        functions: (domain, name) -> FunctionProto.
    """

    model: object
    inferred: bool
    elem_types: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, list] = field(default_factory=dict)
    constants: dict[str, object] = field(default_factory=dict)
    producers: dict[str, object] = field(default_factory=dict)
    consumers: dict[str, list] = field(default_factory=dict)
    graph_inputs: list[str] = field(default_factory=list)
    nodes: list[NodeRef] = field(default_factory=list)
    functions: dict[tuple[str, str], object] = field(default_factory=dict)

    def opset(self, domain: str = "") -> int | None:
        for entry in self.model.opset_import:
            if entry.domain == domain or (domain in DEFAULT_DOMAINS and entry.domain in DEFAULT_DOMAINS):
                return int(entry.version)
        return None

    def constant_value(self, name: str):
        """The numpy value of a build-time constant, or None (not constant, external, or unreadable)."""
        from onnx import numpy_helper

        source = self.constants.get(name)
        if source is None:
            return None
        try:
            if hasattr(source, "data_location"):  # TensorProto
                if source.data_location == source.EXTERNAL:
                    return None
                return numpy_helper.to_array(source)
            return _constant_node_value(source)
        except Exception:  # noqa: BLE001 - an unreadable constant is reported as unknown, not as a crash
            return None


def _constant_node_value(node):
    import numpy as np
    from onnx import numpy_helper

    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name == "value_float":
            return np.asarray(attr.f, dtype=np.float32)
        if attr.name == "value_floats":
            return np.asarray(list(attr.floats), dtype=np.float32)
        if attr.name == "value_int":
            return np.asarray(attr.i, dtype=np.int64)
        if attr.name == "value_ints":
            return np.asarray(list(attr.ints), dtype=np.int64)
    return None


def _dims(value_info) -> list | None:
    ttype = value_info.type.tensor_type
    if not ttype.HasField("shape"):
        return None
    out = []
    for dim in ttype.shape.dim:
        if dim.HasField("dim_value"):
            out.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            out.append(dim.dim_param)
        else:
            out.append(None)
    return out


def _walk(graph, where: str, out: list[NodeRef], functions: dict, seen_functions: set) -> None:
    for node in graph.node:
        out.append(NodeRef(node, where))
        label = node.name or node.op_type
        for attr_name, sub in subgraphs(node):
            _walk(sub, f"{node.op_type} '{label}' {attr_name}", out, functions, seen_functions)
        key = (node.domain, node.op_type)
        if key in functions and key not in seen_functions:
            seen_functions.add(key)
            func = functions[key]
            _walk(func, f"function '{func.domain}.{func.name}'", out, functions, seen_functions)


def inspect_model(model) -> GraphInfo:
    """Build a GraphInfo; shape inference failing (a broken graph) leaves types partly unknown, never raises."""
    import onnx

    try:
        inferred_model = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
        inferred = True
    except Exception:  # noqa: BLE001 - the structure checks report why; the audit works with what is declared
        inferred_model, inferred = model, False
    graph = inferred_model.graph
    info = GraphInfo(model=inferred_model, inferred=inferred)
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        info.elem_types[vi.name] = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
        dims = _dims(vi) if vi.type.HasField("tensor_type") else None
        if dims is not None:
            info.shapes[vi.name] = dims
    initializer_names = set()
    for init in graph.initializer:
        initializer_names.add(init.name)
        info.elem_types[init.name] = init.data_type
        info.shapes[init.name] = [int(d) for d in init.dims]
        info.constants[init.name] = init
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in DEFAULT_DOMAINS and node.output:
            info.constants[node.output[0]] = node
        for name in node.output:
            if name:
                info.producers[name] = node
        for name in node.input:
            if name:
                info.consumers.setdefault(name, []).append(node)
    info.graph_inputs = [vi.name for vi in graph.input if vi.name not in initializer_names]
    info.functions = {(f.domain, f.name): f for f in inferred_model.functions}
    _walk(graph, "", info.nodes, info.functions, set())
    return info


def elem_type_name(elem_type: int) -> str:
    """TensorProto element type -> its name ("FLOAT", "INT64", ...; "UNDEFINED" for 0)."""
    from onnx import TensorProto

    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"TYPE_{elem_type}"
