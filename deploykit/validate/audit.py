"""TensorRT readiness without TensorRT: the graph against the ONNX-TensorRT parser's support lists.

Everything here reads the ONNX graph and the data file (deploykit/data/tensorrt_onnx_support.json, see
`deploykit.validate.support`); nothing imports TensorRT. Each finding is a `Check` in category "tensorrt"
with a severity and a suggested fix:

    trt_opset               the ai.onnx opset is outside the parser's range                    error
    trt_unsupported_op      the matrix lists the op as not supported (N)                        error
    trt_unlisted_op         the op is not in the matrix at all (no importer: a plugin is needed) error
    trt_custom_domain_op    an op outside ai.onnx that the parser does not import natively      error
    trt_restriction         an attribute/input/output the matrix's restrictions rule out        per rule
    trt_dtype               a tensor type TensorRT rejects (error) or handles with limits        error/warning/info
    trt_op_dtype            an op applied to a type its row does not list                       warning
    trt_shape_computation   Shape/Size arithmetic feeding Reshape/Expand/Resize...              warning
    trt_dynamic_profile     dynamic input dims with no optimization profile to build with       warning

A finding that holds for several TensorRT versions is one check naming all of them (`data.versions`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from deploykit.validate.checks import Check
from deploykit.validate.graphinfo import DEFAULT_DOMAINS, GraphInfo, elem_type_name
from deploykit.validate.support import MATRIX_TYPE_NAMES, SupportTable, load_raw, load_tables

CATEGORY = "tensorrt"
QUANTIZED = ("INT8", "INT4", "FLOAT8E4M3FN", "FLOAT4E2M1")
MAX_LISTED = 6  # node names shown in a detail line; --json carries them all


@dataclass
class _Group:
    """Nodes sharing one finding, and the versions it applies to."""

    severity: str
    message: str
    fix: str
    versions: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)


def _names(items: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def _versions_text(tables: list[SupportTable], keys: list[str]) -> str:
    by_key = {t.key: t for t in tables}
    return ", ".join(f"{k} (read for {by_key[k].tensorrt})" for k in keys)


def _safe_export_hint(block: str | None, variant: str | None) -> str | None:
    """The export-safe twin, when the model is known to come from a deploykit block."""
    if block and variant != "safe":
        return f"export the export-safe twin: deploykit export --block {block} --variant safe"
    if block:
        return f"the export-safe '{block}' should avoid this: re-export it with the current deploykit"
    return None


def audit(info: GraphInfo, tables: list[SupportTable], *, block: str | None = None, variant: str | None = None,
          profile_status: tuple[str, str, str] | None = None) -> list[Check]:
    """All TensorRT findings for one model.

    Args:
        info: the inspected model (graphinfo.inspect_model).
        tables: the support tables to audit against (10.x, 11.x or both).
        block / variant: the deploykit block the model came from (the sidecar manifest or --block), so a fix
            can name the export-safe twin.
        profile_status: (severity, detail, fix) about optimization profiles for dynamic inputs, from the caller
            (which knows the sidecar and --profile flags); None when every input is static.
    """
    checks: list[Check] = []
    checks += _opset(info, tables)
    checks += _operators(info, tables, block, variant)
    checks += _restrictions(info, tables)
    checks += _dtypes(info)
    checks += _op_dtypes(info, tables)
    checks += _shape_computation(info, block, variant)
    if profile_status is not None:
        severity, detail, fix = profile_status
        checks.append(Check("trt_dynamic_profile", severity == "info", detail, severity=severity, category=CATEGORY,
                            fix=fix or None))
    if not any(not c.passed and c.severity == "error" for c in checks):
        checks.insert(0, Check("trt_parser_support", True,
                               "every op, attribute and type is in the support lists of "
                               + ", ".join(t.label for t in tables), severity="info", category=CATEGORY,
                               data={"versions": [t.key for t in tables]}))
    return checks


# --------------------------------------------------------------------------------------------- opset
def _opset(info: GraphInfo, tables: list[SupportTable]) -> list[Check]:
    opset = info.opset("")
    if opset is None:
        return []
    out = []
    for table in tables:
        span = f"opset {table.opset_min}-{table.opset_max}"
        data = {"opset": opset, "versions": [table.key], "range": [table.opset_min, table.opset_max]}
        if opset > table.opset_max:
            out.append(Check(
                "trt_opset", False, f"ai.onnx opset {opset} is newer than {table.label} supports ({span})",
                severity="error", category=CATEGORY, data=data,
                fix=f"re-export with opset {table.opset_max} or lower (deploykit export --opset "
                    f"{min(table.opset_max, 23)}), or convert it with onnx.version_converter.convert_version"))
        elif opset < table.opset_min:
            out.append(Check(
                "trt_opset", False, f"ai.onnx opset {opset} is older than {table.label} supports ({span})",
                severity="error", category=CATEGORY, data=data,
                fix=f"convert it to opset {table.opset_min} or newer with onnx.version_converter.convert_version"))
    return out


# ----------------------------------------------------------------------------------------- operators
def _operators(info: GraphInfo, tables: list[SupportTable], block, variant) -> list[Check]:
    groups: "OrderedDict[tuple[str, str, str], _Group]" = OrderedDict()
    for ref in info.nodes:
        node = ref.node
        key_fn = (node.domain, node.op_type)
        if key_fn in info.functions:
            continue  # a model-local function: the parser imports its body, which is walked too
        for table in tables:
            kind, message = _op_status(node.domain, node.op_type, table)
            if kind is None:
                continue
            gkey = (kind, node.domain, node.op_type)
            group = groups.get(gkey)
            if group is None:
                group = groups[gkey] = _Group("error", message, "")
            if table.key not in group.versions:
                group.versions.append(table.key)
            if ref.label not in group.nodes:
                group.nodes.append(ref.label)
    out = []
    for (kind, domain, op), group in groups.items():
        others = [t for t in tables if t.key not in group.versions]
        where = _versions_text(tables, group.versions)
        qualified = f"{domain}.{op}" if domain not in DEFAULT_DOMAINS else op
        if kind == "trt_custom_domain_op":
            detail = f"{qualified} ({len(group.nodes)} node(s): {_names(group.nodes)}) is a custom-domain op that " \
                     f"TensorRT {where} does not import"
            fix = f"register a TensorRT plugin (IPluginV3) named '{op}', or export without custom ops"
        elif kind == "trt_unsupported_op":
            detail = f"{op} ({len(group.nodes)} node(s): {_names(group.nodes)}) is marked unsupported in the " \
                     f"support matrix of TensorRT {where}"
        else:
            detail = f"{op} ({len(group.nodes)} node(s): {_names(group.nodes)}) is not in the support matrix of " \
                     f"TensorRT {where}: the parser has no importer for it"
        if kind != "trt_custom_domain_op":
            safe = _safe_export_hint(block, variant)
            fix = f"replace {op} with supported ops{f' ({safe})' if safe else ''}, or register a TensorRT plugin " \
                  f"named '{op}'"
        if others:
            fix += f"; or target {', '.join(t.label for t in others)}, whose parser supports it"
        out.append(Check(kind, False, detail, severity="error", category=CATEGORY, fix=fix,
                         data={"op": op, "domain": domain, "nodes": group.nodes, "versions": group.versions}))
    return out


def _op_status(domain: str, op: str, table: SupportTable) -> tuple[str | None, str]:
    if domain not in DEFAULT_DOMAINS:
        if op in table.custom_operators.get(domain, ()):
            return None, ""
        return "trt_custom_domain_op", ""
    row = table.operators.get(op)
    if row is None:
        return "trt_unlisted_op", ""
    if not row.supported:
        return "trt_unsupported_op", ""
    return None, ""


# -------------------------------------------------------------------------------------- restrictions
def _attr(node, name):
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return None


def _as_text(value):
    return value.decode() if isinstance(value, bytes) else value


def _violation(rule: dict, node, info: GraphInfo) -> str | None:
    """Why `node` breaks `rule`, or None."""
    check = rule["check"]
    if check == "attr_in":
        value = _attr(node, rule["attr"])
        value = rule.get("default") if value is None else _as_text(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if value not in rule["values"]:
            return f"{rule['attr']}={value!r} (supported: {', '.join(map(str, rule['values']))})"
    elif check == "attr_len_in":
        value = _attr(node, rule["attr"])
        if value is not None and len(value) not in rule["values"]:
            return f"{rule['attr']} has {len(value)} dims (supported: {' or '.join(map(str, rule['values']))})"
    elif check == "attr_all_ones":
        value = _attr(node, rule["attr"])
        if value is not None and any(int(v) != 1 for v in value):
            return f"{rule['attr']}={list(value)}"
    elif check == "attr_absent":
        present = [a for a in rule["attrs"] if _attr(node, a) is not None]
        if present:
            return f"sets {', '.join(present)}"
    elif check == "output_absent":
        i = rule["index"]
        if len(node.output) > i and node.output[i]:
            return f"output {i} ('{node.output[i]}') is used"
    elif check == "input_absent":
        i = rule["index"]
        if len(node.input) > i and node.input[i]:
            return f"input {i} ('{node.input[i]}') is given"
    elif check in ("input_constant", "input_constant_false", "input_zero", "input_const_below"):
        i = rule["index"]
        if len(node.input) <= i or not node.input[i]:
            return None  # optional input left out: the default applies
        name = node.input[i]
        if name not in info.constants:
            return f"input {i} ('{name}') is computed at run time"
        value = info.constant_value(name)
        if value is None:
            return None  # constant but unreadable here (external data): cannot judge, do not accuse
        if check == "input_constant_false" and bool(value.any()):
            return f"input {i} ('{name}') is true"
        if check == "input_zero" and bool((value != 0).any()):
            return f"input {i} ('{name}') is not all zeros"
        if check == "input_const_below" and value.size and int(value.max()) >= rule["limit"]:
            return f"input {i} ('{name}') is {int(value.max())}, not below {rule['limit']}"
    elif check == "input_rank_in":
        dims = info.shapes.get(node.input[rule["index"]]) if len(node.input) > rule["index"] else None
        if dims is not None and len(dims) not in rule["values"]:
            return f"input {rule['index']} has rank {len(dims)}"
    elif check == "input_static":
        dims = info.shapes.get(node.input[rule["index"]]) if len(node.input) > rule["index"] else None
        if dims is not None and any(not isinstance(d, int) for d in dims):
            return f"input {rule['index']} has dynamic dims {dims}"
    else:  # pragma: no cover - a rule kind the code does not know means the data file is newer than the code
        raise ValueError(f"unknown rule check {check!r} in the TensorRT support data")
    return None


def _restrictions(info: GraphInfo, tables: list[SupportTable]) -> list[Check]:
    groups: "OrderedDict[tuple[str, str], _Group]" = OrderedDict()
    for table in tables:
        by_op: dict[str, list[dict]] = {}
        for rule in table.rules:
            by_op.setdefault(rule["op"], []).append(rule)
        for ref in info.nodes:
            node = ref.node
            if node.domain not in DEFAULT_DOMAINS:
                continue
            for rule in by_op.get(node.op_type, ()):
                why = _violation(rule, node, info)
                if why is None:
                    continue
                gkey = (node.op_type, rule["text"])
                group = groups.get(gkey)
                if group is None:
                    group = groups[gkey] = _Group(rule.get("severity", "error"), rule["text"], _rule_fix(rule),
                                                  data={"check": rule["check"], "why": []})
                if table.key not in group.versions:
                    group.versions.append(table.key)
                if ref.label not in group.nodes:
                    group.nodes.append(ref.label)
                    group.data["why"].append(why)
    out = []
    for (op, text), g in groups.items():
        detail = f"{op} {_names(g.nodes)}: {text} ({g.data['why'][0]}) in TensorRT {_versions_text(tables, g.versions)}"
        out.append(Check("trt_restriction", g.severity == "info", detail, severity=g.severity, category=CATEGORY,
                         fix=g.fix, data={"op": op, "rule": text, "nodes": g.nodes, "versions": g.versions, **g.data}))
    return out


def _rule_fix(rule: dict) -> str:
    check = rule["check"]
    if check == "attr_in":
        return f"re-export with {rule['attr']} set to one of: {', '.join(map(str, rule['values']))}"
    if check == "attr_all_ones":
        return f"use {rule['attr']} of 1 (or replace the op)"
    if check == "attr_len_in":
        return "reshape to a 2-D or 3-D spatial layout around the op"
    if check in ("output_absent", "input_absent"):
        return "re-export without that input/output (it has no TensorRT importer)"
    if check == "input_zero":
        return "quantize symmetrically: zero points of 0"
    if check == "input_constant_false":
        return "export in inference mode (training_mode false, as an initializer)"
    if check == "input_const_below":
        return f"keep the input a constant below {rule['limit']}"
    if check in ("input_rank_in", "input_static"):
        return "reshape the input around the op, or export with static shapes"
    if check.startswith("input_"):
        return ("make it a build-time constant: fold constants (onnxsim, or polygraphy surgeon sanitize "
                "--fold-constants) or export with static values")
    if check == "attr_absent":
        return "remove the attribute, or accept TensorRT's behaviour"
    return "re-export the model to avoid it"


# --------------------------------------------------------------------------------------------- dtypes
def _dtypes(info: GraphInfo) -> list[Check]:
    raw = load_raw()
    supported = set(raw["dtypes"]["supported"])
    limited = raw["dtypes"]["limited"]
    notes = raw["dtypes"].get("notes", {})
    graph = info.model.graph
    io_names = set(info.graph_inputs) | {o.name for o in graph.output}
    seen: dict[str, list[str]] = OrderedDict()
    for name, elem_type in info.elem_types.items():
        if elem_type:
            seen.setdefault(elem_type_name(elem_type), []).append(name)
    for ref in info.nodes:  # Cast targets inside subgraphs are not in the main graph's value_info
        if ref.node.op_type == "Cast" and ref.node.output and ref.node.output[0] not in info.elem_types:
            to = _attr(ref.node, "to")
            if to:
                seen.setdefault(elem_type_name(int(to)), []).append(ref.node.output[0])
    out = []
    for type_name, tensors in seen.items():
        if type_name not in supported:
            out.append(Check(
                "trt_dtype", False, f"{type_name} tensors ({_names(tensors)}): TensorRT has no {type_name} type",
                severity="error", category=CATEGORY, data={"dtype": type_name, "tensors": tensors},
                fix="keep this part outside the engine (pre/post-processing) or cast to a supported type "
                    "(float32, float16, int32, int64, bool)"))
        elif type_name == "UINT8":
            inner = [t for t in tensors if t not in io_names]
            if inner:
                out.append(Check("trt_dtype", False,
                                 f"UINT8 tensors inside the graph ({_names(inner)}): {limited['UINT8']}",
                                 severity="warning", category=CATEGORY, data={"dtype": type_name, "tensors": inner},
                                 fix="cast to int32 or float right after the input"))
        elif type_name in QUANTIZED:
            loose = [t for t in tensors if not _in_qdq(t, info)]
            if loose:
                out.append(Check("trt_dtype", False, f"{type_name} tensors outside Q/DQ ({_names(loose)}): "
                                 f"{limited[type_name]}", severity="warning", category=CATEGORY,
                                 data={"dtype": type_name, "tensors": loose},
                                 fix="express the quantization with QuantizeLinear/DequantizeLinear pairs"))
        elif type_name in limited:
            out.append(Check("trt_dtype", False, f"{type_name} tensors ({_names(tensors)}): {limited[type_name]}",
                             severity="warning", category=CATEGORY, data={"dtype": type_name, "tensors": tensors},
                             fix="export in float32 (call .float() on the module and inputs before export)"
                             if type_name == "DOUBLE" else None))
        elif type_name in notes:
            at_io = [t for t in tensors if t in io_names]
            if at_io:
                out.append(Check("trt_dtype", True, f"{type_name} inputs/outputs ({_names(at_io)}): {notes[type_name]}",
                                 severity="info", category=CATEGORY, data={"dtype": type_name, "tensors": at_io}))
    return out


def _in_qdq(name: str, info: GraphInfo) -> bool:
    producer = info.producers.get(name)
    if producer is not None and producer.op_type == "QuantizeLinear":
        return True
    consumers = info.consumers.get(name, [])
    return bool(consumers) and all(c.op_type in ("QuantizeLinear", "DequantizeLinear") for c in consumers)


def _op_dtypes(info: GraphInfo, tables: list[SupportTable]) -> list[Check]:
    groups: "OrderedDict[tuple[str, str], _Group]" = OrderedDict()
    for ref in info.nodes:
        node = ref.node
        if node.domain not in DEFAULT_DOMAINS or not node.input or not node.input[0]:
            continue
        type_name = elem_type_name(info.elem_types.get(node.input[0], 0))
        matrix_type = MATRIX_TYPE_NAMES.get(type_name)
        if matrix_type is None:
            continue  # unknown, DOUBLE (cast down) or a type the dtype check already rejects
        for table in tables:
            row = table.operators.get(node.op_type)
            if row is None or not row.supported or not row.types or matrix_type in row.types:
                continue
            group = groups.setdefault((node.op_type, matrix_type), _Group(
                "warning", "", f"cast the input to one of {', '.join(row.types)} before the op",
                data={"listed": list(row.types)}))
            if table.key not in group.versions:
                group.versions.append(table.key)
            if ref.label not in group.nodes:
                group.nodes.append(ref.label)
    return [Check("trt_op_dtype", False,
                  f"{op} on {dtype} ({_names(g.nodes)}): not among the types TensorRT "
                  f"{_versions_text(tables, g.versions)} lists for {op} ({', '.join(g.data['listed'])})",
                  severity="warning", category=CATEGORY, fix=g.fix,
                  data={"op": op, "dtype": dtype, "nodes": g.nodes, "versions": g.versions, **g.data})
            for (op, dtype), g in groups.items()]


# ---------------------------------------------------------------------------------- shape computation
def _shape_computation(info: GraphInfo, block, variant) -> list[Check]:
    from deploykit.onnx_utils.graph import shape_computation

    found = shape_computation(info.model)
    if not found.count:
        return [Check("trt_shape_computation", True, "no Shape/Size arithmetic in the graph", severity="info",
                      category=CATEGORY, data={"count": 0, "consumers": []})]
    ops = ", ".join(f"{op} x{n}" for op, n in sorted(found.op_counts().items()))
    consumers = [{"op": n.op_type, "name": n.name or n.output[0]} for n in found.consumers]
    fed = ", ".join(f"{c['op']} '{c['name']}'" for c in consumers[:MAX_LISTED])
    more = f" and {len(consumers) - MAX_LISTED} more" if len(consumers) > MAX_LISTED else ""
    detail = (f"{found.count} shape-computation node(s) ({ops}) compute sizes at run time and feed "
              f"{len(consumers)} node(s): {fed}{more}; TensorRT builds them as shape tensors, which makes plans "
              "profile-dependent and blocks some fusions")
    safe = _safe_export_hint(block, variant)
    fold = "fold them away with static shapes (onnxsim, or polygraphy surgeon sanitize --fold-constants)"
    fix = (f"{safe}; or {fold}" if safe
           else f"{fold}; for deploykit blocks, export the export-safe twin (--variant safe)")
    return [Check("trt_shape_computation", False, detail, severity="warning", category=CATEGORY, fix=fix,
                  data={"count": found.count, "ops": found.op_counts(), "consumers": consumers})]


def tables_for(which: str) -> list[SupportTable]:
    """"10", "11" or "both" -> the support tables to audit against."""
    tables = load_tables()
    keys = {"10": ["10.x"], "11": ["11.x"], "both": list(tables)}[which]
    return [tables[k] for k in keys]
