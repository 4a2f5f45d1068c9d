"""Structure checks: the ONNX checker, shape inference, versions, inputs/outputs, external data, initializers.

External data is checked before anything reads it: every location must be a relative path that stays inside
the model's directory (no '..', no absolute paths, no symlink leading out) and must exist with the bytes it
claims; anything else is refused with UserInputError (exit 2) so a model file cannot make deploykit read
files outside its own folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.validate.checks import Check
from deploykit.validate.graphinfo import elem_type_name

CATEGORY = "structure"


def _first_line(exc: Exception, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {(text[0] if text else '')[:limit]}"


def _all_tensors(graph):
    """Initializers and tensor attributes, subgraphs included: everything that may point at external data."""
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == attr.TENSOR:
                yield attr.t
            elif attr.type == attr.TENSORS:
                yield from attr.tensors
            elif attr.type == attr.GRAPH:
                yield from _all_tensors(attr.g)
            elif attr.type == attr.GRAPHS:
                for sub in attr.graphs:
                    yield from _all_tensors(sub)


def external_data(model, model_path: Path) -> Check | None:
    """Refuse external-data locations outside the model's directory; None when the model has no external data.

    Raises:
        UserInputError: a location is absolute, climbs out of the directory, is missing, or is too short.
    """
    base = model_path.parent.resolve()
    files: dict[str, int] = {}
    for tensor in _all_tensors(model.graph):
        if tensor.data_location != tensor.EXTERNAL:
            continue
        entry = {e.key: e.value for e in tensor.external_data}
        location = entry.get("location", "")
        where = f"initializer '{tensor.name}' stores its data in '{location}'"
        hint = "keep external data files beside the model (onnx.save(..., location='weights.bin'))"
        if not location:
            raise UserInputError(f"{where}: the location is empty", hint=hint)
        if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
            raise UserInputError(f"{where}: absolute paths are refused", hint=hint)
        target = (base / location).resolve()
        if target != base and base not in target.parents:
            raise UserInputError(f"{where}, which is outside the model's directory {base}; refused", hint=hint)
        if not target.is_file():
            raise UserInputError(f"{where}, which does not exist", hint="copy the weights file beside the model")
        size = target.stat().st_size
        try:
            offset = int(entry.get("offset", 0) or 0)
            length = int(entry["length"]) if entry.get("length") else None
        except ValueError:
            raise UserInputError(f"{where} with a non-numeric offset or length",
                                 hint="export the model's external data again, or re-save it with onnx") from None
        if offset < 0 or offset > size or (length is not None and (length < 0 or offset + length > size)):
            raise UserInputError(f"{where} at offset {offset}, length {length}, but the file has {size} bytes",
                                 hint="the weights file is truncated or belongs to another model")
        files[str(target.relative_to(base))] = size
    if not files:
        return None
    return Check("external_data", True,
                 "external data stays inside the model's directory: "
                 + ", ".join(f"{f} ({s} bytes)" for f, s in files.items()),
                 severity="info", category=CATEGORY, data={"files": files})


def checker(model_path: Path) -> Check:
    import onnx

    try:
        onnx.checker.check_model(str(model_path), full_check=True)
        return Check("onnx_checker", True, "onnx.checker (full check) found no problem", category=CATEGORY)
    except Exception as exc:  # noqa: BLE001 - the checker's findings are the verdict
        return Check("onnx_checker", False, _first_line(exc), category=CATEGORY,
                     fix="re-export the model; the ONNX checker's message names the node and the rule broken")


def shape_inference(model) -> Check:
    import onnx

    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        return Check("shape_inference", True, "strict shape and type inference succeeded", category=CATEGORY)
    except Exception as exc:  # noqa: BLE001
        return Check("shape_inference", False, _first_line(exc), category=CATEGORY,
                     fix="a node's inputs disagree with its type or shape constraints; re-export the model")


def versions(model) -> Check:
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    producer = " ".join(p for p in (model.producer_name, model.producer_version) if p) or "unknown producer"
    detail = f"IR {model.ir_version}, opsets " + ", ".join(f"{d}:{v}" for d, v in opsets.items()) + f"; {producer}"
    return Check("ir_opset", True, detail, severity="info", category=CATEGORY,
                 data={"ir_version": int(model.ir_version), "opsets": opsets, "producer": producer})


def describe_tensor(value_info) -> dict:
    ttype = value_info.type.tensor_type
    dims = []
    if ttype.HasField("shape"):
        for d in ttype.shape.dim:
            dims.append(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?"))
    else:
        dims = None
    return {"name": value_info.name, "dtype": _dtype_name(ttype.elem_type), "shape": dims,
            "dynamic": dims is None or any(not isinstance(d, int) for d in dims)}


def _dtype_name(elem_type: int) -> str:
    """numpy-style names ("float32") where numpy has the type, else the ONNX name in lower case."""
    from onnx import helper

    try:
        name = helper.tensor_dtype_to_np_dtype(elem_type).name
        return name if name != "object" else elem_type_name(elem_type).lower()
    except Exception:  # noqa: BLE001 - bfloat16, float8 and undefined types
        return elem_type_name(elem_type).lower()


def io(model, input_names: list[str]) -> Check:
    by_name = {vi.name: vi for vi in model.graph.input}
    inputs = [describe_tensor(by_name[n]) for n in input_names]
    outputs = [describe_tensor(vi) for vi in model.graph.output]

    def text(t):
        shape = "?" if t["shape"] is None else "x".join(str(d) for d in t["shape"])
        return f"{t['name']} {shape} {t['dtype']}"

    dynamic = [t["name"] for t in inputs if t["dynamic"]]
    detail = (f"inputs: {', '.join(text(t) for t in inputs)}; outputs: {', '.join(text(t) for t in outputs)}"
              + (f"; dynamic: {', '.join(dynamic)}" if dynamic else "; all inputs static"))
    return Check("io", True, detail, severity="info", category=CATEGORY, data={"inputs": inputs, "outputs": outputs})


def initializers(model, model_path: Path) -> list[Check]:
    """NaN/Inf weights (error), duplicate names (error), weights also listed as graph inputs (warning)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor

    float_types = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    base = str(model_path.parent)
    bad, names, dupes, count = [], set(), [], 0
    for init in model.graph.initializer:
        count += 1
        if init.name in names:
            dupes.append(init.name)
        names.add(init.name)
        if init.data_type not in float_types:
            continue
        tensor = init
        if init.data_location == init.EXTERNAL:
            tensor = TensorProto()
            tensor.CopyFrom(init)
            load_external_data_for_tensor(tensor, base)  # locations were checked by external_data() first
        try:
            arr = numpy_helper.to_array(tensor).astype(np.float64)
        except Exception:  # noqa: BLE001 - an undecodable tensor is the checker's finding, not a crash here
            continue
        nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        if nan or inf:
            bad.append({"name": init.name, "nan": nan, "inf": inf, "size": int(arr.size)})
    checks = []
    if bad:
        listed = ", ".join(f"'{b['name']}' ({b['nan']} NaN, {b['inf']} Inf of {b['size']})" for b in bad[:6])
        checks.append(Check("initializers", False, f"non-finite weights: {listed}", category=CATEGORY,
                            data={"non_finite": bad},
                            fix="the weights were corrupted or diverged in training; re-export from a good checkpoint"))
    if dupes:
        checks.append(Check("initializer_names", False, f"initializer names used twice: {', '.join(dupes[:6])}",
                            category=CATEGORY, data={"duplicates": dupes}, fix="re-export the model"))
    overridable = [vi.name for vi in model.graph.input if vi.name in names]
    if overridable:
        checks.append(Check(
            "initializer_inputs", False,
            f"{len(overridable)} initializer(s) are also graph inputs ({', '.join(overridable[:6])}): callers may "
            "override the weights, and TensorRT and ONNX Runtime treat them differently",
            severity="warning", category=CATEGORY, data={"names": overridable},
            fix="remove them from graph.input (onnxsim does, or export with keep_initializers_as_inputs=False)"))
    if not bad and not dupes:
        checks.insert(0, Check("initializers", True, f"{count} initializer(s), every float weight finite",
                               category=CATEGORY, data={"count": count}))
    return checks
