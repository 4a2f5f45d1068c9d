"""Validation checks and the report they fill.

Each check records name, pass/fail and a one-line detail. Unusable input (not a file, not ONNX, truncated
protobuf, symbolic dims with nothing to size them) raises UserInputError (exit 2) instead of becoming a check.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.repository import MANIFEST_NAME


@dataclass
class Check:
    name: str
    passed: bool
    detail: str = ""
    severity: str = "error"   # error checks decide the verdict; warning/info ones do not
    data: dict | None = None

    def as_dict(self) -> dict:
        d = {"name": self.name, "passed": self.passed, "detail": self.detail, "severity": self.severity}
        if self.data is not None:
            d["data"] = self.data
        return d


@dataclass
class ValidationReport:
    path: str
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.severity == "error")

    def add(self, name: str, passed: bool, detail: str = "", **kw) -> Check:
        check = Check(name, passed, detail, **kw)
        self.checks.append(check)
        return check

    def as_dict(self) -> dict:
        return {"model": self.path, "passed": self.passed, "checks": [c.as_dict() for c in self.checks]}


def load_model(path: Path):
    """Read an ONNX file; anything unreadable is a UserInputError naming the problem."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.exists():
        raise UserInputError(f"'{path}' does not exist", hint="pass the path of an .onnx file")
    if path.is_dir():
        candidate = path / "model.onnx"
        if not candidate.is_file():
            raise UserInputError(f"'{path}' is a directory without model.onnx", hint="pass the .onnx file itself")
        path = candidate
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:
        raise UserInputError(f"'{path}' is not a readable ONNX model (corrupt or truncated protobuf: "
                             f"{type(exc).__name__})", hint="re-export the model or check the file was copied whole") from None
    if not model.graph.node and not model.graph.input and not model.graph.output:
        raise UserInputError(f"'{path}' parsed as an empty ONNX model (not an ONNX file?)",
                             hint="pass an .onnx model file")
    return model, path


def read_manifest(onnx_path: Path) -> dict | None:
    sidecar = onnx_path.parent / MANIFEST_NAME
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"sidecar manifest '{sidecar}' is unreadable: {exc}",
                             hint="re-export the model or delete the sidecar") from None


def validate(path: str | Path, *, block: str | None = None, seed: int = 0) -> ValidationReport:
    import numpy as np
    import onnx

    from deploykit.backends.ort import OrtRunner

    model, path = load_model(Path(path))
    report = ValidationReport(str(path))
    try:
        onnx.checker.check_model(str(path), full_check=True)
        report.add("onnx_checker", True, f"IR {model.ir_version}, opsets "
                   + ", ".join(f"{o.domain or 'ai.onnx'}:{o.version}" for o in model.opset_import))
    except Exception as exc:  # noqa: BLE001 - the checker's findings are the verdict
        report.add("onnx_checker", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    try:
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
        report.add("shape_inference", True, "strict shape and type inference succeeded")
    except Exception as exc:  # noqa: BLE001
        report.add("shape_inference", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")

    manifest = read_manifest(path)
    config = _reference_config(manifest, block, model)
    runner = OrtRunner(path)
    try:
        runner.activate()
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime refusing the model is a failed check
        report.add("onnxruntime_session", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
        return report
    with runner:
        report.add("onnxruntime_session", True, "CPUExecutionProvider")
        inputs_meta = runner.input_specs
        if len(inputs_meta) != 1 and config is not None:
            report.add("parity", False, "PyTorch parity supports single-input models", severity="error")
            return report
        shapes = _shapes_to_run(inputs_meta, config)
        from deploykit.export.verify import make_input, torch_outputs

        feeds = {s: make_input(s, seed + i) for i, s in enumerate(shapes)}
        name = inputs_meta[0].name
        try:
            actual = {s: runner.infer({name: x}) for s, x in feeds.items()}
        except Exception as exc:  # noqa: BLE001
            report.add("onnxruntime_run", False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
            return report
        finite = all(np.isfinite(v).all() for out in actual.values() for v in out.values())
        report.add("onnxruntime_run", finite, f"ran at {', '.join('x'.join(map(str, s)) for s in shapes)}"
                   + ("" if finite else "; NaN or Inf in the outputs"))
        if config is None:
            report.add("parity", True, "skipped: no manifest beside the model and no --block given", severity="info")
            return report
        from deploykit.compare import Tolerance, compare_outputs
        from deploykit.export.source import build_modules

        mods = build_modules(config)
        precision = (manifest or {}).get("precision", "fp16" if _is_fp16(model) else "fp32")
        tol = Tolerance(**config.tolerances.get(precision, config.tolerances["fp32"]).model_dump())
        out_names = runner.output_names
        for s, x in feeds.items():
            cmp = compare_outputs(torch_outputs(mods.reference, x, out_names), actual[s], tol)
            report.add(f"parity[{'x'.join(map(str, s))}]", bool(cmp),
                       f"max abs {cmp.max_abs:.3e}, max rel {cmp.max_rel:.3e} vs PyTorch reference "
                       f"({precision}: atol {tol.atol:g}, rtol {tol.rtol:g})", data=cmp.as_dict())
    return report


def _is_fp16(model) -> bool:
    import onnx

    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def _reference_config(manifest, block, model):
    from deploykit.export.config import default_config, parse_config

    if block is not None:
        config = default_config(block)
        dims = [d.dim_value if d.HasField("dim_value") else None for d in model.graph.input[0].type.tensor_type.shape.dim]
        data = config.model_dump(mode="json")
        if len(dims) == 4:
            if dims[1]:
                data["input"]["channels"] = dims[1]
                data["source"]["args"] = {**data["source"]["args"], _channels_arg(block): dims[1]}
            for axis, key in ((2, "height"), (3, "width")):
                if dims[axis]:
                    data["input"][key] = {"opt": dims[axis]}
        return parse_config(data, f"--block {block}")
    if manifest and "config" in manifest:
        return parse_config(manifest["config"], "the model's sidecar manifest")
    return None


def _channels_arg(block: str) -> str:
    from deploykit.blocks import spec

    return spec(block).channels_arg


def _shapes_to_run(inputs_meta, config) -> list[tuple[int, ...]]:
    if config is not None:
        from deploykit.export.verify import verification_shapes

        channels = config.input.channels or inputs_meta[0].shape[1]
        return verification_shapes(config, int(channels))
    shape = inputs_meta[0].shape
    if any(not isinstance(d, int) for d in shape[1:]):
        raise UserInputError(
            f"input '{inputs_meta[0].name}' has symbolic dims {shape} and nothing says how to size them",
            hint="validate a model exported by deploykit (with its manifest) or pass --block NAME",
        )
    batch = shape[0] if isinstance(shape[0], int) else None
    return [tuple([b, *shape[1:]]) for b in ([batch] if batch else [1, 2])]
