"""Graph inspection: shape-computation subgraphs and what they feed.

A shape-computation node is a Shape or Size node, or a node whose every non-constant input is produced by
shape-computation nodes (the Gather/Concat/Mul/Div... arithmetic on sizes). Such subgraphs are what makes a
graph fragile in TensorRT (dynamic shape tensors, profile-dependent plans) and what the export-safe twins
avoid. The data-consuming nodes they feed (Reshape, Expand, Resize, ...) are the *consumers*.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHAPE_SOURCES = frozenset({"Shape", "Size"})


def subgraphs(node):
    """(attribute name, GraphProto) of every subgraph a node holds: If branches, Loop and Scan bodies."""
    for attr in node.attribute:
        if attr.type == attr.GRAPH:
            yield attr.name, attr.g
        elif attr.type == attr.GRAPHS:
            for sub in attr.graphs:
                yield attr.name, sub


@dataclass
class ShapeComputation:
    nodes: list = field(default_factory=list)       # onnx NodeProto, shape-computation nodes
    consumers: list = field(default_factory=list)   # data nodes fed by them

    @property
    def count(self) -> int:
        return len(self.nodes)

    def op_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        return counts

    def consumer_summary(self) -> list[str]:
        return [f"{n.op_type}:{n.name or n.output[0]}" for n in self.consumers]


def _constant_names(graph) -> set[str]:
    names = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            names.update(node.output)
    return names


def shape_computation(model_or_graph) -> ShapeComputation:
    """The shape-computation nodes of the main graph (subgraphs of If/Loop are not descended into)."""
    graph = getattr(model_or_graph, "graph", model_or_graph)
    constants = _constant_names(graph)
    shape_values: set[str] = set()
    result = ShapeComputation()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "Constant":
            continue
        inputs = [name for name in node.input if name]
        dynamic = [name for name in inputs if name not in constants]
        if node.op_type in SHAPE_SOURCES or (dynamic and all(name in shape_values for name in dynamic)):
            result.nodes.append(node)
            shape_values.update(node.output)
        elif any(name in shape_values for name in dynamic):
            result.consumers.append(node)
    return result


def count_shape_nodes(path_or_model) -> int:
    """Number of shape-computation nodes in an ONNX file or ModelProto."""
    import onnx

    model = onnx.load(str(path_or_model), load_external_data=False) if not hasattr(path_or_model, "graph") else path_or_model
    return shape_computation(model).count
