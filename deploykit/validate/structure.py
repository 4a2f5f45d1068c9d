"""Structure checks: the ONNX checker, shape inference, versions, inputs/outputs, external data, initializers.

External data is checked before anything reads it: every location must be a relative path that stays inside
the model's directory (no '..', no absolute paths, no symlinks: onnx refuses them) and must exist with the bytes it
claims; anything else is refused with UserInputError (exit 2) so a model file cannot make deploykit read
files outside its own folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.onnx_utils.graph import subgraphs
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
        for _name, sub in subgraphs(node):
            yield from _all_tensors(sub)


def weights(graph):
    """(name, origin, TensorProto) of every weight a graph stores: initializers, and the values of Constant and
    ConstantOfShape nodes (the onnx package's model zoo and many converters store weights that way), subgraphs
    included. `origin` is "initializer" or e.g. "Constant 'c0'"."""
    from onnx import numpy_helper

    import numpy as np

    for init in graph.initializer:
        yield init.name, "initializer", init
    for node in graph.node:
        if node.op_type in ("Constant", "ConstantOfShape") and node.domain in ("", "ai.onnx") and node.output:
            origin = f"{node.op_type} '{node.name or node.output[0]}'"
            for attr in node.attribute:
                tensor = None
                if attr.name == "value" and attr.type == attr.TENSOR:
                    tensor = attr.t
                elif attr.name == "value_float":
                    tensor = numpy_helper.from_array(np.array(attr.f, np.float32))
                elif attr.name == "value_floats":
                    tensor = numpy_helper.from_array(np.array(list(attr.floats), np.float32))
                if tensor is not None:
                    yield node.output[0], origin, tensor
        for _name, sub in subgraphs(node):
            yield from weights(sub)


def _symlink_in(base: Path, location: str) -> tuple[str, str] | None:
    """The first symlink on the way from `base` to `location`, as (link path, what it points to)."""
    path = base
    for part in Path(location).parts:
        path = path / part
        if path.is_symlink():
            return str(path.relative_to(base)), os.readlink(path)
    return None


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
        link = _symlink_in(base, location)
        outside = target != base and base not in target.parents
        if link is not None:
            # onnx itself refuses to read external data through a symlink, inside the folder or not.
            where += f", a symlink: '{link[0]}' -> '{link[1]}', resolving to {target}"
            raise UserInputError(f"{where}" + (f", outside the model's directory {base}" if outside else "")
                                 + "; external data read through a symlink is refused",
                                 hint="copy the file the symlink points to beside the model instead of linking to it")
        if outside:
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


def checker(model_path: Path, check_path: Path | None = None) -> Check:
    """The full ONNX checker on `check_path` (a by-offset copy of the model beside it, whose weights are not
    loaded again; see deploykit.validate.weights) or on the model file itself."""
    import onnx

    try:
        onnx.checker.check_model(str(check_path or model_path), full_check=True)
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
    """NaN/Inf weights (error; initializers and Constant/ConstantOfShape values), duplicate initializer names
    (error), weights also listed as graph inputs (a warning from IR 4 on; IR 3 requires them there)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor

    float_types = {TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    base = str(model_path.parent)
    bad, names, dupes, count = [], set(), [], 0
    for init in model.graph.initializer:
        if init.name in names:
            dupes.append(init.name)
        names.add(init.name)
    for name, origin, init in weights(model.graph):
        count += 1
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
            bad.append({"name": name, "origin": origin, "nan": nan, "inf": inf, "size": int(arr.size)})
    checks = []
    if bad:
        listed = ", ".join(f"'{b['name']}'{'' if b['origin'] == 'initializer' else ' from ' + b['origin']} "
                           f"({b['nan']} NaN, {b['inf']} Inf of {b['size']})" for b in bad[:6])
        checks.append(Check("initializers", False, f"non-finite weights: {listed}", category=CATEGORY,
                            data={"non_finite": bad},
                            fix="the weights were corrupted or diverged in training; re-export from a good checkpoint"))
    if dupes:
        checks.append(Check("initializer_names", False, f"initializer names used twice: {', '.join(dupes[:6])}",
                            category=CATEGORY, data={"duplicates": dupes}, fix="re-export the model"))
    overridable = [vi.name for vi in model.graph.input if vi.name in names]
    if overridable and model.ir_version < 4:
        # IR 3 requires every initializer to be a graph input too: removing them would break the model.
        checks.append(Check(
            "initializer_inputs", False,
            f"{len(overridable)} initializer(s) are also graph inputs ({', '.join(overridable[:6])}), as IR "
            f"{model.ir_version} requires; callers may still override the weights",
            severity="info", category=CATEGORY, data={"names": overridable, "ir_version": int(model.ir_version)},
            fix="nothing to do at IR 3; to make the weights fixed, first raise the model to IR >= 4 "
                "(onnx.version_converter, or re-export), then remove them from graph.input"))
    elif overridable:
        checks.append(Check(
            "initializer_inputs", False,
            f"{len(overridable)} initializer(s) are also graph inputs ({', '.join(overridable[:6])}): callers may "
            "override the weights, and TensorRT and ONNX Runtime treat them differently",
            severity="warning", category=CATEGORY, data={"names": overridable, "ir_version": int(model.ir_version)},
            fix="remove them from graph.input (onnxsim does, or export with keep_initializers_as_inputs=False)"))
    if not bad and not dupes:
        checks.insert(0, Check("initializers", True, f"{count} weight(s), every float weight finite",
                               category=CATEGORY, data={"count": count}))
    return checks
