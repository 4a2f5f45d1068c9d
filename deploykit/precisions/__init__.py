"""Reduced precisions as verified artifacts: bf16 (an OpenVINO setting) and INT8 Q/DQ graphs (CPU and TensorRT
flavours), each gated against fp32 PyTorch by relative L2, cosine and per-output limits.

The export pipeline calls `make_precision` with the verified fp32 graph and the verification inputs and
PyTorch outputs it already holds; `serving_config` turns the repository's config.pbtxt text into the one
the precision is served with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.precisions.gate import DEFAULT_LIMITS, GateLimits, GateReport

ENGINE_PRECISIONS = ("bf16", "int8", "int8_trt")


@dataclass
class PrecisionArtifact:
    precision: str
    model: object            # onnx.ModelProto to write as model.onnx
    report: GateReport
    details: dict = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.report)


def make_precision(precision: str, fp32_model, *, input_name: str, inputs: dict, expected: dict, work: Path,
                   calibration: str | Path | None = None, seed: int = 0, limits: GateLimits | None = None,
                   per_output: dict[str, GateLimits] | None = None, warn: Callable[[str], None] = lambda _m: None
                   ) -> PrecisionArtifact:
    """Build and gate one precision from the verified fp32 graph.

    Args:
        precision: "bf16", "int8" (CPU Q/DQ) or "int8_trt" (TensorRT Q/DQ).
        fp32_model: the verified fp32 onnx.ModelProto.
        inputs / expected: verification inputs by shape and fp32 PyTorch's outputs for them.
        work: a scratch directory.
        calibration: a .npz file or a directory of real inputs (INT8); None calibrates on random data, loudly.
        warn: where the random-calibration warning goes (besides the report).
    """
    import onnx

    limits = limits or DEFAULT_LIMITS[precision]
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    if precision == "bf16":
        from deploykit.precisions import bf16

        path = work / "fp32_for_bf16.onnx"
        onnx.save(fp32_model, str(path))
        report = bf16.verify(path, input_name, inputs, expected, limits, per_output)
        return PrecisionArtifact(precision, fp32_model, report, {"engine": "openvino", "hint": "bf16"})
    if precision not in ("int8", "int8_trt"):
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(ENGINE_PRECISIONS)}")

    from deploykit.backends.ort import OrtRunner
    from deploykit.precisions import int8
    from deploykit.precisions.calibration import RANDOM_WARNING, load_calibration, random_calibration
    from deploykit.precisions.gate import gate

    first = next(iter(inputs.values()))
    if calibration is not None:
        cal = load_calibration(calibration, input_name, channels=first.shape[1])
    else:
        cal = random_calibration(tuple(first.shape), seed)
        warn(f"warning: {RANDOM_WARNING}")
    flavour = int8.FLAVOURS[precision]
    try:
        quantized = int8.quantize(fp32_model, flavour, cal, input_name, work / precision)
    except Exception as exc:  # noqa: BLE001 - a quantizer failure fails this precision only
        from deploykit.compare import Tolerance

        report = GateReport(f"{precision} onnx vs fp32 pytorch", Tolerance(), limits=limits)
        report.problems.append(str(getattr(exc, "message", exc)))
        return PrecisionArtifact(precision, None, report, {"flavour": flavour})
    with OrtRunner(quantized.SerializeToString()) as runner:
        report = gate(f"{precision} ({flavour} Q/DQ) onnxruntime vs fp32 pytorch", runner, input_name, expected,
                      inputs, limits, per_output)
    details = {"flavour": flavour, "calibration": {"source": cal.source, "samples": cal.samples},
               "qdq": int8.qdq_summary(quantized)}
    if cal.random:
        report.notes.append(RANDOM_WARNING)
    if flavour == "tensorrt":
        report.problems += int8.check_tensorrt_qdq(quantized)
        report.problems += _tensorrt_audit(quantized)
        report.notes.append("TensorRT Q/DQ rules and the TensorRT parser support lists checked (no engine built)")
    return PrecisionArtifact(precision, quantized, report, details)


def _tensorrt_audit(model) -> list[str]:
    """Errors of the TensorRT support audit (ops, attributes, types) on the quantized graph."""
    from deploykit.validate.audit import audit, tables_for
    from deploykit.validate.graphinfo import inspect_model

    return [f"{c.name}: {c.detail}" for c in audit(inspect_model(model), tables_for("both"))
            if not c.passed and c.severity == "error"]


def serving_config(precision: str, pbtxt: str) -> str:
    """config.pbtxt for a precision: bf16 is served by Triton's OpenVINO backend from the ONNX file with the
    bf16 hint; the INT8 graphs stay ONNX Runtime models (`deploykit build` makes the TensorRT engine)."""
    if precision != "bf16":
        return pbtxt
    lines = pbtxt.splitlines()
    out = []
    for line in lines:
        if line.startswith("platform:"):
            out += ['backend: "openvino"', 'default_model_filename: "model.onnx"']
        else:
            out.append(line)
    out.append('parameters: { key: "HINT_BF16" value: { string_value: "YES" } }')
    return "\n".join(out) + "\n"
