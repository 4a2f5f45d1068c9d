"""fp16 readiness: which tensors of the fp32 graph leave the range fp16 can hold, and the keep-list that follows.

The fp32 graph runs in ONNX Runtime (graph optimizations off, so every tensor exists as the graph names it)
with every float intermediate exposed as an output, in segments of consecutive nodes: ONNX Runtime keeps every
output of a run alive to its end, so one session over the whole graph held all intermediates at once (ViT-B/16:
470 MB); a segment holds only its own, and the tensors later segments read are carried from run to run. A tensor

- overflows when some |value| exceeds 65504, the largest finite fp16 (it would become Inf);
- underflows when most of its nonzero values are below 2**-14 = 6.1e-5, the smallest normal fp16: they
  become subnormals with fewer significant bits, or zero below 2**-24;
- is non-finite when it holds NaN or Inf already in fp32: no precision choice can fix it, and it is reported
  first (a range scan that skipped such values would call a broken model fp16-ready).

Float weights (initializers and the values of Constant nodes) are judged the same way, except that a single-value constant (an epsilon such as 1e-5) is
exempt from the underflow rule while fp16 still holds it within 1% (1e-5 becomes 1.0014e-5): such constants
are added to or compared with larger values, and flagging every epsilon would bury the real findings. Keeping a tensor in fp32 means keeping the node that produces it and
the nodes that read it in fp32, so the keep-list is both; `deploykit.export.fp16.convert_to_fp16` takes it as
`fp32_nodes`, and ops already in its DEFAULT_FP32_OPS are marked as covered.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from deploykit.validate.checks import Check
from deploykit.validate.inputs import Feed
from deploykit.validate.structure import weights

CATEGORY = "fp16"
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0 ** -14
FP16_MIN_SUBNORMAL = 2.0 ** -24
UNDERFLOW_FRACTION = 0.5  # "most" nonzero values below the normal range
SCALAR_TOLERANCE = 0.01  # scalar weights fp16 rounds by less than this are not underflow findings
MAX_BYTES = 1_800_000_000  # a protobuf above 2 GB cannot be serialized for the augmented session
SEGMENT_TENSORS = 48  # scanned tensors per segment: ViT-B/16 runs in 10 segments, about a block each


@dataclass
class TensorRange:
    """How one tensor fits fp16.

    Attributes:
        tensor: tensor name.
        kind: "non_finite", "overflow" or "underflow".
        producer_op / producer: the op type and node name that produced it ("initializer" for weights).
        consumers: names of the nodes that read it.
        max_abs: largest finite |value|.
        tiny_fraction: share of nonzero values below 2**-14.
        zero_fraction: share of nonzero values below 2**-24 (they become 0 in fp16).
        size: element count.
        non_finite: NaN and Inf values in it.
    """

    tensor: str
    kind: str
    producer_op: str
    producer: str
    consumers: list[str]
    max_abs: float
    tiny_fraction: float
    zero_fraction: float
    size: int
    non_finite: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def classify(values: np.ndarray) -> tuple[str | None, float, float, float]:
    """(kind or None, max |finite value|, tiny fraction, flush-to-zero fraction) of one tensor."""
    kind, max_abs, tiny, zero, _ = classify_counts(values)
    return kind, max_abs, tiny, zero


def classify_counts(values: np.ndarray) -> tuple[str | None, float, float, float, int]:
    """classify() plus the count of NaN/Inf values."""
    a = np.abs(np.asarray(values)).ravel()   # in its own dtype: fp16's limits are far inside fp32's
    if not a.size:
        return None, 0.0, 0.0, 0.0, 0
    top = a.max()
    bad = 0
    if not np.isfinite(top):  # an Inf or NaN somewhere (max propagates NaN): rank the finite values only
        finite = np.isfinite(a)
        bad = int(a.size - np.count_nonzero(finite))
        a = a[finite]
        top = a.max() if a.size else 0.0
    if bad:
        return "non_finite", float(top), 0.0, 0.0, bad
    max_abs = float(top)
    nonzero = np.count_nonzero(a)
    if nonzero:
        tiny = np.count_nonzero(a < FP16_MIN_NORMAL) - (a.size - nonzero)   # 0 < |x| < min normal
        zero = np.count_nonzero(a < FP16_MIN_SUBNORMAL) - (a.size - nonzero)
        tiny, zero = tiny / nonzero, zero / nonzero
    else:
        tiny = zero = 0.0
    if max_abs > FP16_MAX:
        return "overflow", max_abs, tiny, zero, 0
    if nonzero and tiny > UNDERFLOW_FRACTION:
        return "underflow", max_abs, tiny, zero, 0
    return None, max_abs, tiny, zero, 0


def _fp16_relative_error(array) -> float:
    value = float(np.asarray(array, dtype=np.float64).ravel()[0])
    return abs(float(np.float16(value)) - value) / abs(value) if value else 0.0


def _node_name(node) -> str:
    return node.name or node.output[0]


def scan_weights(graph) -> tuple[list[TensorRange], int]:
    """The weights fp16 conversion would store (initializers, Constant values) judged like tensors; (findings,
    weights checked). Needs the weights' bytes: run it before `weights.strip`."""
    from onnx import TensorProto, numpy_helper

    float_types = (TensorProto.FLOAT, TensorProto.DOUBLE)
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(_node_name(node))
    found, checked = [], 0
    for name, origin, tensor in weights(graph):
        if tensor.data_type not in float_types:
            continue
        checked += 1
        try:
            array = numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 - an undecodable tensor is the structure checks' finding
            continue
        kind, max_abs, tiny, zero, bad = classify_counts(array)
        if kind == "underflow" and array.size == 1 and _fp16_relative_error(array) < SCALAR_TOLERANCE:
            continue  # a scalar epsilon fp16 still holds closely: see the module docstring
        if kind:
            found.append(TensorRange(name, kind, "initializer", origin, consumers.get(name, []),
                                     max_abs, tiny, zero, int(array.size), bad))
    return found, checked


def _augmented(model_path: Path, skeleton, stripped: list[str]):
    """(the graph to expose intermediates of, a file written for it or None). With a stripped skeleton, its
    copy points at the weights' bytes inside the original file and is written beside it (ONNX Runtime reads
    external data only from the model's folder); otherwise the whole model is loaded again."""
    import onnx

    from deploykit.validate import weights as weight_store

    if skeleton is not None:
        model = onnx.ModelProto()
        model.CopyFrom(skeleton)
        try:
            offsets = weight_store.raw_data_offsets(model_path) if stripped else {}
        except (OSError, ValueError):
            offsets = None
        if offsets is not None and weight_store.point_at_file(model, stripped, offsets, model_path.name):
            return model, model_path.parent / f".deploykit-fp16-scan-{os.getpid()}-{id(model)}.onnx"
    return onnx.load(str(model_path)), None  # with external data: locations were checked before


def scan(model_path, info, feeds, *, skeleton=None, stripped=(), weight_scan=None) -> tuple[list[TensorRange], int]:
    """Run the fp32 graph with its float intermediates exposed, segment by segment, on one feed or several;
    (out-of-range tensors, tensors checked). A tensor out of range for any feed is reported once, with its worst
    range.

    Args:
        skeleton / stripped: the in-memory model whose large weights `weights.strip` dropped, and their names;
            None to load the model from `model_path` again.
        weight_scan: `scan_weights` of the full model, run before it was stripped (None: run it here).
    """
    from onnx import TensorProto

    model_path = Path(model_path)
    feeds = [feeds] if isinstance(feeds, Feed) else list(feeds)
    float_types = (TensorProto.FLOAT, TensorProto.DOUBLE)
    model, written = _augmented(model_path, skeleton, list(stripped))
    if weight_scan is None:
        weight_scan = scan_weights(model.graph)
    graph = model.graph
    existing = {o.name: None for o in graph.output}   # ordered: the model's outputs are reported first
    producers = {name: node for node in graph.node for name in node.output if name}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(_node_name(node))
    scanned = [name for node in graph.node if node.op_type != "Constant" for name in node.output
               if name and info.elem_types.get(name, 0) in float_types and name not in existing]
    order = [n for n in existing if n in producers] + scanned   # the order findings were always reported in
    segments = _segments(graph, set(scanned), info)
    values: list[dict] | None = None
    if written is not None:
        try:
            values = _run_segments(model, segments, scanned, feeds, written, info.elem_types)
        except Exception:  # noqa: BLE001 - a read-only folder, or references ORT refuses: the old way below
            values = None
        finally:
            written.unlink(missing_ok=True)
        if values is None:
            model, _ = _augmented(model_path, None, [])
    if values is None and model.ByteSize() < MAX_BYTES:
        values = _run_segments(model, segments, scanned, feeds, None, info.elem_types)
    del model
    worst: dict[str, TensorRange] = {}
    seen: set[str] = set()
    for results in values or []:
        for name in order:
            if name not in results:
                continue
            seen.add(name)
            (kind, max_abs, tiny, zero, bad), size = results[name]
            if kind and _worse(kind, max_abs, tiny, worst.get(name)):
                node = producers[name]
                worst[name] = TensorRange(name, kind, node.op_type, _node_name(node), consumers.get(name, []),
                                          max_abs, tiny, zero, size, bad)
    weight_found, weight_checked = weight_scan
    found, checked = list(worst.values()) + list(weight_found), len(seen) + weight_checked
    found.sort(key=lambda t: t.kind != "non_finite")  # the broken tensors first
    return found, checked


def _outer_names(node) -> set[str]:
    """Every name a node reads, its subgraphs' included (a name they define themselves is harmless extra)."""
    from deploykit.onnx_utils.graph import subgraphs

    names = {n for n in node.input if n}
    for _, sub in subgraphs(node):
        for inner in sub.node:
            names |= _outer_names(inner)
    return names


def _segments(graph, scanned: set[str], info) -> list[list[int]]:
    """Node indices of each segment: consecutive nodes (graph.node is topologically sorted) holding about
    SEGMENT_TENSORS scanned tensors. One segment when a tensor a later segment reads has no known tensor type
    (a sequence, say), which a segment's input could not declare."""
    bounds, count = [[]], 0
    for i, node in enumerate(graph.node):
        if count >= SEGMENT_TENSORS:
            bounds.append([])
            count = 0
        bounds[-1].append(i)
        count += sum(1 for n in node.output if n in scanned)
    if len(bounds) > 1:
        defined_in = {n: k for k, seg in enumerate(bounds) for i in seg for n in graph.node[i].output if n}
        for k, seg in enumerate(bounds):
            for i in seg:
                for name in _outer_names(graph.node[i]):
                    if defined_in.get(name, k) < k and not info.elem_types.get(name, 0):
                        return [list(range(len(graph.node)))]
    return bounds


def _run_segments(model, segments: list[list[int]], scanned: list[str], feeds: list[Feed],
                  written: Path | None, elem_types: dict) -> list[dict]:
    """Run each segment as its own session on every feed; per feed {tensor: (classify_counts, size)} of the
    scanned tensors and the model's float outputs. With `written`, each segment is written there (its weights
    stay references into the original file) and read back by ONNX Runtime; otherwise passed as bytes."""
    from onnx import helper

    from deploykit.backends.ort import OrtRunner

    graph = model.graph
    scanned_set = set(scanned)
    graph_inputs = {i.name: i for i in graph.input}
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name: o for o in graph.output}
    uses = [set().union(*(_outer_names(graph.node[i]) for i in seg)) for seg in segments]
    last_use = {}
    for k, names in enumerate(uses):
        for name in names:
            last_use[name] = k
    carried: list[dict] = [dict(f.arrays) for f in feeds]
    results: list[dict] = [{} for _ in feeds]
    for k, seg in enumerate(segments):
        nodes = [graph.node[i] for i in seg]
        defined = [n for node in nodes for n in node.output if n]
        later = set().union(*uses[k + 1:]) if k + 1 < len(segments) else set()
        outputs = [n for n in defined if n in scanned_set or n in graph_outputs or n in later]
        if not outputs:
            continue   # nothing scanned, and nothing read later (ONNX Runtime refuses a graph without outputs)
        inputs = [n for n in sorted(uses[k] - set(defined)) if n in graph_inputs or
                  (n in carried[0] and n not in initializers)]
        part = helper.make_graph(
            nodes, f"{graph.name}_segment{k}",
            [graph_inputs[n] if n in graph_inputs else _value_info(n, carried[0][n]) for n in inputs],
            [graph_outputs[n] if n in graph_outputs else helper.make_tensor_value_info(n, elem_types.get(n, 0), None)
             for n in outputs],
            initializer=[initializers[n] for n in sorted(uses[k]) if n in initializers])
        segment = helper.make_model(part, opset_imports=model.opset_import, ir_version=model.ir_version,
                                    functions=model.functions)
        if written is not None:
            written.write_bytes(segment.SerializeToString())
            runner = OrtRunner(written, optimization="none").activate()   # the weights are read here
        else:
            runner = OrtRunner(segment.SerializeToString(), optimization="none").activate()
        del segment, part
        with runner:
            for values, found in zip(carried, results):
                out = runner.infer({n: values[n] for n in inputs if n in values})
                for name, value in out.items():
                    if (name in scanned_set or name in graph_outputs) and np.asarray(value).dtype.kind == "f":
                        found[name] = classify_counts(value), int(np.asarray(value).size)
                    if name in later:
                        values[name] = value
                for name in [n for n in values if last_use.get(n, -1) <= k]:
                    del values[name]   # nothing later reads it
    return results


def _value_info(name: str, value):
    """A segment input's declaration from the array a previous segment produced for it."""
    from onnx import helper

    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.asarray(value).dtype), None)


def _worse(kind: str, max_abs: float, tiny: float, old: TensorRange | None) -> bool:
    """Whether a new out-of-range finding replaces `old`: non-finite beats overflow beats underflow, then the
    larger excess."""
    if old is None or kind != old.kind:
        return old is None or _RANK[kind] < _RANK[old.kind]
    if kind == "non_finite":
        return False
    return max_abs > old.max_abs if kind == "overflow" else tiny > old.tiny_fraction


def keep_list(found: list[TensorRange]) -> list[str]:
    """Node names to keep in fp32: producers and readers of every out-of-range tensor, in first-seen order.
    Non-finite tensors are left out: fp32 does not fix them."""
    out: list[str] = []
    for t in found:
        if t.kind == "non_finite":
            continue
        for name in ([] if t.producer_op == "initializer" else [t.producer]) + t.consumers:
            if name not in out:
                out.append(name)
    return out


def _origin(t: TensorRange) -> str:
    if t.producer_op != "initializer":
        return f"from {t.producer_op} '{t.producer}'"
    return "weight" if t.producer == "initializer" else f"weight ({t.producer})"


def readiness(model_path, info, feeds, **scan_args) -> Check:
    """The fp16 check on one feed (usually the opt shape) or several (every --inputs file); `scan_args` go to
    `scan` (the stripped skeleton and the weights' findings)."""
    from deploykit.export.fp16 import DEFAULT_FP32_OPS

    feeds = [feeds] if isinstance(feeds, Feed) else list(feeds)
    found, checked = scan(model_path, info, feeds, **scan_args)
    where = ", ".join(f.name for f in feeds)
    shapes = ", ".join(dict.fromkeys(f.label for f in feeds))
    if not found:
        return Check("fp16_range", True, f"{checked} float tensors at {where} all fit fp16 (|x| <= 65504, "
                                         "mostly above 6.1e-5)", severity="warning", category=CATEGORY,
                     data={"checked": checked, "shape": shapes, "tensors": [], "keep_nodes": []})
    broken = [t for t in found if t.kind == "non_finite"]
    if broken:
        listed = "; ".join(f"'{t.tensor}' {_origin(t)} ({t.non_finite} NaN/Inf of {t.size})" for t in broken[:5])
        more = f" and {len(broken) - 5} more" if len(broken) > 5 else ""
        return Check("fp16_range", False, f"{len(broken)} of {checked} float tensors at {where} hold NaN or Inf "
                                          f"already in fp32, so fp16 readiness cannot be judged: {listed}{more}",
                     severity="warning", category=CATEGORY,
                     fix="find where the NaN/Inf start (the first tensor listed, or non-finite weights) and fix the "
                         "model or its weights; no fp32 keep-list helps",
                     data={"checked": checked, "shape": shapes, "tensors": [t.as_dict() for t in found],
                           "keep_nodes": [], "non_finite": [t.tensor for t in broken]})
    nodes = keep_list(found)
    op_of = {r.node.name or r.node.output[0]: r.node.op_type for r in info.nodes if r.node.output}
    keep_ops = sorted({op_of.get(n, "?") for n in nodes})
    uncovered = [n for n in nodes if op_of.get(n) not in DEFAULT_FP32_OPS]
    parts = []
    for t in found[:5]:
        why = (f"max |x| {t.max_abs:.3g} > 65504" if t.kind == "overflow"
               else f"{t.tiny_fraction:.0%} of nonzero |x| < 6.1e-5")
        origin = _origin(t)
        parts.append(f"'{t.tensor}' {origin} ({t.kind}: {why})")
    more = f" and {len(found) - 5} more" if len(found) > 5 else ""
    detail = (f"{len(found)} of {checked} float tensors at {where} leave the fp16 range: "
              + "; ".join(parts) + more + f"; keep in fp32: {', '.join(nodes[:8])}"
              + (" ..." if len(nodes) > 8 else ""))
    covered = [n for n in nodes if n not in uncovered]
    fix = (f"keep these nodes in fp32 when converting: convert_to_fp16(model, fp32_nodes={uncovered!r})"
           if uncovered else "deploykit's default fp32 keep-list (DEFAULT_FP32_OPS) already covers them")
    if covered and uncovered:
        fix += f" ({len(covered)} more are already covered by DEFAULT_FP32_OPS)"
    return Check("fp16_range", False, detail, severity="warning", category=CATEGORY, fix=fix,
                 data={"checked": checked, "shape": shapes, "tensors": [t.as_dict() for t in found],
                       "keep_nodes": nodes, "keep_ops": keep_ops, "not_in_default_keep_list": uncovered})
