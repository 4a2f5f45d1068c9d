"""Mixed-precision fp16 ONNX graphs made with onnxconverter-common (Microsoft's maintained converter).

fp16 weights and activations, fp32 inputs and outputs by default (Cast nodes at the boundary), and an fp32
keep-list for the ops whose fp16 versions lose range or precision: reductions that sum many values, softmax,
normalisations, exp/log. Individual nodes can be kept too (`fp32_nodes`: the export pipeline passes the
producers and readers of tensors whose measured fp32 range leaves fp16). This is the graph TensorRT 11 needs
for fp16 engines (strongly typed networks take precision from the graph; there is no FP16 builder flag).

Converter quirks are handled around the call, not inside the graph logic: an initializer shared between a
kept node and an fp16 node would get a single type (so kept nodes get their own copy first); an initializer
that also has a value_info entry (the dynamo exporter writes them) would be converted even when only kept
nodes read it, behind a Cast back to fp32 (so those entries are dropped first: an initializer declares its
own type); a graph output produced by a kept node would be re-declared fp16 (so it is cast back to fp32 when
I/O stays fp32, and the fp32 -> fp16 -> fp32 round trip is then skipped); a ConstantOfShape without a
`value` (an fp32 zero by default) would be re-declared fp16 while still making fp32 (so the default is
written out first, and the converter then converts it); a Cast to fp32 whose output it re-declares fp16 (a
shape-derived scalar) would keep making fp32 (so it is made to cast to fp16); and unnamed nodes would get
identically named boundary Casts (so every node gets a unique name first).

Weights are rounded to the nearest fp16, saturating at +-65504 instead of the converter's default 1e4, and
nonzero values below the smallest fp16 (2**-24) become +-2**-24 rather than zero, so an epsilon stays an
epsilon. Weights outside the fp16 range are found by the range scan, which keeps their readers in fp32.
"""

from __future__ import annotations

FP16_MAX = 65504.0
FP16_SMALLEST = 2.0 ** -24   # the smallest positive (subnormal) fp16

# Ops kept in fp32: sums over many elements, exponentials and statistics overflow or underflow in fp16.
DEFAULT_FP32_OPS = (
    "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL2", "ReduceProd",
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "Resize", "GridSample", "AffineGrid", "Range", "TopK", "NonMaxSuppression",
)


def convert_to_fp16(model, *, keep_io_types: bool = True, fp32_ops=DEFAULT_FP32_OPS, fp32_nodes=()):
    """Return an fp16 copy of `model` (onnx.ModelProto), keeping `fp32_ops` and the named nodes in fp32."""
    import warnings

    import onnx
    from onnxconverter_common import float16

    fp32_nodes = list(fp32_nodes)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    declared = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    _name_nodes(model)
    _outputs_not_read_inside(model)
    _explicit_constant_of_shape_values(model)
    _drop_initializer_value_info(model)
    if fp32_nodes:
        _private_initializers(model, set(fp32_nodes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about every clamped tiny initializer
        half = float16.convert_float_to_float16(
            model, keep_io_types=keep_io_types, op_block_list=list(fp32_ops), node_block_list=fp32_nodes,
            min_positive_val=FP16_SMALLEST, max_finite_val=FP16_MAX,
        )
    _casts_make_their_declared_type(half)
    if keep_io_types:
        _restore_output_types(half, declared)
    _skip_fp16_round_trips(half)
    return half


def _outputs_not_read_inside(model) -> None:
    """A graph output that nodes also read (a detector's `features` feeding its heads) gets an Identity of its own.

    With fp32 I/O the converter casts the output back to fp32 under the output's name, and the nodes reading that
    name would get the fp32 copy beside fp16 weights (an invalid graph); they now read the fp16 tensor instead.
    """
    import onnx

    outputs = {o.name for o in model.graph.output}
    read = {i for n in model.graph.node for i in n.input} & outputs
    for name in sorted(read):
        inner = f"{name}__deploykit_inner"
        for node in model.graph.node:
            node.output[:] = [inner if o == name else o for o in node.output]
            node.input[:] = [inner if i == name else i for i in node.input]
        model.graph.node.append(onnx.helper.make_node("Identity", [inner], [name], name=f"{name}__deploykit_output"))


def _name_nodes(model) -> None:
    """Name every unnamed node after its first output (the name `fp32_nodes` already uses for it), unique."""
    used = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = node.output[0] if node.output and node.output[0] else f"{node.op_type}_{i}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def _explicit_constant_of_shape_values(model) -> None:
    """Write out ConstantOfShape's default value (one fp32 zero) so the converter sees and converts it."""
    import numpy as np
    from onnx import helper, numpy_helper

    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float32))))


def _drop_initializer_value_info(model) -> None:
    """Remove value_info entries that only repeat an initializer's type (see the module docstring)."""
    graph = model.graph
    weights = {i.name for i in graph.initializer}
    kept = [v for v in graph.value_info if v.name not in weights]
    if len(kept) != len(graph.value_info):
        del graph.value_info[:]
        graph.value_info.extend(kept)


def _private_initializers(model, kept: set[str]) -> None:
    """Give kept nodes their own copy of initializers that fp16 nodes also read."""
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, set[bool]] = {}
    for node in graph.node:
        for name in node.input:
            if name in inits:
                readers.setdefault(name, set()).add((node.name or node.output[0]) in kept)
    for node in graph.node:
        if (node.name or node.output[0]) not in kept:
            continue
        for i, name in enumerate(node.input):
            if name in inits and readers[name] == {True, False}:
                copy_name = f"{name}__fp32"
                if copy_name not in inits:
                    copy = type(inits[name])()
                    copy.CopyFrom(inits[name])
                    copy.name = copy_name
                    graph.initializer.append(copy)
                    inits[copy_name] = copy
                node.input[i] = copy_name


def _casts_make_their_declared_type(model) -> None:
    """A Cast to fp32 whose output the converter re-declared fp16 now casts to fp16.

    The dynamo exporter turns a Python number computed from shapes (SimAM's `n = h * w - 1`, written
    `scalar_tensor`) into an int64 -> fp32 Cast with an fp32 value_info. The converter re-declares that value
    fp16, as every fp32 value an fp16 node reads, but leaves the Cast's `to`, so the graph contradicts itself and
    ONNX Runtime refuses it. Its readers are fp16 nodes, so the Cast makes fp16 directly.
    """
    from onnx import TensorProto

    graph = model.graph
    declared = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    outputs = {o.name for o in graph.output}
    for node in graph.node:
        if (node.op_type == "Cast" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs
                and declared.get(node.output[0]) == TensorProto.FLOAT16):
            for attr in node.attribute:
                if attr.name == "to" and attr.i == TensorProto.FLOAT:
                    attr.i = TensorProto.FLOAT16


def _restore_output_types(model, declared: dict[str, int]) -> None:
    """Cast any graph output the converter re-declared back to its original (fp32) type."""
    from onnx import helper

    graph = model.graph
    for out in graph.output:
        want = declared.get(out.name)
        have = out.type.tensor_type.elem_type
        if want is None or want == have:
            continue
        inner = f"{out.name}__as_converted"
        for node in graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        graph.node.append(helper.make_node("Cast", [inner], [out.name], to=want, name=f"{out.name}__restore_type"))
        out.type.tensor_type.elem_type = want


def _skip_fp16_round_trips(model) -> None:
    """Read fp32 values directly where the graph casts them to fp16 and straight back to fp32.

    The converter puts a Cast to fp16 after every kept node and a Cast to fp32 before every kept reader, so
    fp32 values travelling between kept nodes (or to an fp32 graph output) would be rounded to fp16 on the
    way: the precision and range the keep-list is for would be lost. The Cast back becomes an Identity of
    the fp32 value; a Cast to fp16 that no one reads any more is removed.
    """
    from onnx import TensorProto, helper, shape_inference

    graph = model.graph
    elem_types = {v.name: v.type.tensor_type.elem_type
                  for v in [*graph.input, *graph.value_info, *graph.output, *shape_inference.infer_shapes(model).graph.value_info]}
    elem_types.update({i.name: i.data_type for i in graph.initializer})
    producer = {o: n for n in graph.node for o in n.output}

    def cast_to(node) -> int | None:
        if node.op_type != "Cast" or node.domain not in ("", "ai.onnx"):
            return None
        return next((a.i for a in node.attribute if a.name == "to"), None)

    changed = False
    for i, node in enumerate(graph.node):
        if cast_to(node) != TensorProto.FLOAT:
            continue
        down = producer.get(node.input[0])
        if down is None or cast_to(down) != TensorProto.FLOAT16 or elem_types.get(down.input[0]) != TensorProto.FLOAT:
            continue
        graph.node[i].CopyFrom(helper.make_node("Identity", [down.input[0]], list(node.output), name=node.name))
        changed = True
    if changed:
        read = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        unread = [n for n in graph.node if cast_to(n) == TensorProto.FLOAT16 and not any(o in read for o in n.output)]
        for n in unread:
            graph.node.remove(n)
