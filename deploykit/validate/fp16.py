"""fp16 readiness: which tensors of the fp32 graph leave the range fp16 can hold, and the keep-list that follows.

The fp32 graph runs in ONNX Runtime (graph optimizations off, so every tensor exists as the graph names it)
with a few reduction nodes appended to every float intermediate: its size, counts of finite values, of values
below each fp16 limit and of nonzero values, and its largest finite |value|. Only these scalars are outputs,
so ONNX Runtime frees each intermediate after its last reader; exposing the intermediates themselves kept all
of them alive to the end of the run (ViT-B/16: 470 MB more at the peak). A tensor

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
    finite = a.size
    if not np.isfinite(top):  # an Inf or NaN somewhere (max propagates NaN): rank the finite values only
        mask = np.isfinite(a)
        finite = int(np.count_nonzero(mask))
        top = a[mask].max() if finite else 0.0
        return _verdict(a.size, finite, 0, 0, 0, float(top))
    return _verdict(a.size, finite, int(np.count_nonzero(a < FP16_MIN_NORMAL)),
                    int(np.count_nonzero(a < FP16_MIN_SUBNORMAL)), int(np.count_nonzero(a)), float(top))


def _verdict(size: int, finite: int, below_normal: int, below_subnormal: int, nonzero: int,
             max_abs: float) -> tuple[str | None, float, float, float, int]:
    """classify_counts() from a tensor's counts: values with |x| < 2**-14 and < 2**-24 (zeros included, NaN
    not), nonzero values, finite values, and the largest finite |x| (0 if none). The counts below the limits
    and the nonzero count are only read when every value is finite."""
    if not size:
        return None, 0.0, 0.0, 0.0, 0
    bad = size - finite
    if bad:
        return "non_finite", max_abs, 0.0, 0.0, bad
    if nonzero:
        zeros = size - nonzero
        tiny = (below_normal - zeros) / nonzero   # 0 < |x| < min normal
        zero = (below_subnormal - zeros) / nonzero
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
    """Run the fp32 graph with range statistics of its float intermediates on one feed or several;
    (out-of-range tensors, tensors checked). A tensor out of range for any feed is reported once, with its worst range.

    Args:
        skeleton / stripped: the in-memory model whose large weights `weights.strip` dropped, and their names;
            None to load the model from `model_path` again.
        weight_scan: `scan_weights` of the full model, run before it was stripped (None: run it here).
    """
    from onnx import TensorProto

    from deploykit.backends.ort import OrtRunner

    model_path = Path(model_path)
    float_types = (TensorProto.FLOAT, TensorProto.DOUBLE)
    model, written = _augmented(model_path, skeleton, list(stripped))
    if weight_scan is None:
        weight_scan = scan_weights(model.graph)
    graph = model.graph
    existing = {o.name for o in graph.output}
    producers = {name: node for node in graph.node for name in node.output if name}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            if name:
                consumers.setdefault(name, []).append(_node_name(node))
    scanned = [(name, info.elem_types[name]) for node in graph.node if node.op_type != "Constant"
               for name in node.output
               if name and info.elem_types.get(name, 0) in float_types and name not in existing]
    stats = _append_range_stats(graph, scanned)
    worst: dict[str, TensorRange] = {}
    seen: set[str] = set()
    runner = None
    if written is not None:
        try:
            written.write_bytes(model.SerializeToString())
            runner = OrtRunner(written, optimization="none").activate()  # the weights are read here
        except Exception:  # noqa: BLE001 - a read-only folder, or references ORT refuses: the old way below
            runner = None
        finally:
            written.unlink(missing_ok=True)
        if runner is None:
            model, _ = _augmented(model_path, None, [])
            stats = _append_range_stats(model.graph, scanned)
    if runner is None and model.ByteSize() < MAX_BYTES:
        runner = OrtRunner(model.SerializeToString(), optimization="none").activate()
    del model
    if runner is not None:
        with runner:
            for feed in [feeds] if isinstance(feeds, Feed) else feeds:
                values = runner.infer(feed.arrays)
                results = [(name, classify_counts(value), int(np.asarray(value).size))
                           for name, value in values.items()  # the model's own outputs, as they come
                           if name in producers and np.asarray(value).dtype.kind == "f"]
                for name, outputs in stats.items():
                    size, finite, below_normal, below_subnormal, nonzero, top = (values[o] for o in outputs)
                    results.append((name, _verdict(int(size), int(finite), int(below_normal), int(below_subnormal),
                                                   int(nonzero), float(top)), int(size)))
                del values
                for name, (kind, max_abs, tiny, zero, bad), size in results:
                    seen.add(name)
                    if kind and _worse(kind, max_abs, tiny, worst.get(name)):
                        node = producers[name]
                        worst[name] = TensorRange(name, kind, node.op_type, _node_name(node), consumers.get(name, []),
                                                  max_abs, tiny, zero, size, bad)
    weight_found, weight_checked = weight_scan
    found, checked = list(worst.values()) + list(weight_found), len(seen) + weight_checked
    found.sort(key=lambda t: t.kind != "non_finite")  # the broken tensors first
    return found, checked


_STATS = ("size", "finite", "below_normal", "below_subnormal", "nonzero", "max_abs")


def _append_range_stats(graph, tensors: list[tuple[str, int]]) -> dict[str, tuple[str, ...]]:
    """Append to `graph`, for each (float tensor, elem type), the nodes computing what `_verdict` needs, and
    expose only their scalar results; {tensor: its output names in `_STATS` order}.

    Every reduction runs over all axes with no axes given, which every opset reads the same way (ReduceMax took
    axes as an attribute before opset 18, ReduceSum as an input from 13), and works for any rank, 0 included.
    The ops need opset 9 (Where, float Less/Greater). NaN fails every comparison, so it is neither finite nor
    counted below a limit, and the largest |x| is taken over the finite values only (ReduceMax's NaN handling
    is not relied on). Counts are int64 sums of cast masks: exact at any size."""
    from onnx import TensorProto, helper, numpy_helper

    taken = {name for node in graph.node for name in (*node.input, *node.output)}
    taken |= {t.name for t in graph.initializer} | {i.name for i in graph.input} | {o.name for o in graph.output}
    taken |= {node.name for node in graph.node}
    prefix = "deploykit_fp16_scan"
    while any(name.startswith(prefix) for name in taken):
        prefix += "_"
    limits = {}
    for elem, dtype in ((TensorProto.FLOAT, np.float32), (TensorProto.DOUBLE, np.float64)):
        for label, value in (("inf", np.inf), ("normal", FP16_MIN_NORMAL), ("subnormal", FP16_MIN_SUBNORMAL),
                             ("zero", 0.0)):
            name = f"{prefix}/{label}_{elem}"
            limits[elem, label] = name
            graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
    stats: dict[str, tuple[str, ...]] = {}
    for i, (tensor, elem) in enumerate(tensors):
        at = f"{prefix}/{i}"
        nodes = [helper.make_node("Abs", [tensor], [f"{at}/abs"]),
                 helper.make_node("Size", [tensor], [f"{at}/size"]),
                 helper.make_node("Less", [f"{at}/abs", limits[elem, "inf"]], [f"{at}/is_finite"]),
                 helper.make_node("Where", [f"{at}/is_finite", f"{at}/abs", limits[elem, "zero"]], [f"{at}/finite_abs"]),
                 helper.make_node("ReduceMax", [f"{at}/finite_abs"], [f"{at}/max_abs"], keepdims=0),
                 helper.make_node("Less", [f"{at}/abs", limits[elem, "normal"]], [f"{at}/is_below_normal"]),
                 helper.make_node("Less", [f"{at}/abs", limits[elem, "subnormal"]], [f"{at}/is_below_subnormal"]),
                 helper.make_node("Greater", [f"{at}/abs", limits[elem, "zero"]], [f"{at}/is_nonzero"])]
        for stat in ("finite", "below_normal", "below_subnormal", "nonzero"):
            nodes += [helper.make_node("Cast", [f"{at}/is_{stat}"], [f"{at}/{stat}_int"], to=TensorProto.INT64),
                      helper.make_node("ReduceSum", [f"{at}/{stat}_int"], [f"{at}/{stat}"], keepdims=0)]
        for node in nodes:
            node.name = node.output[0]
        graph.node.extend(nodes)
        outputs = tuple(f"{at}/{stat}" for stat in _STATS)
        graph.output.extend(helper.make_tensor_value_info(o, elem if stat == "max_abs" else TensorProto.INT64, [])
                            for o, stat in zip(outputs, _STATS))
        stats[tensor] = outputs
    return stats


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
