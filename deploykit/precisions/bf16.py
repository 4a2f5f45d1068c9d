"""bf16 as an engine setting: the fp32 ONNX graph run by OpenVINO with INFERENCE_PRECISION_HINT bf16.

bf16 is not a graph format (ONNX Runtime's CPU kernels have no bf16 convolutions): the artifact is the fp32
graph plus the setting, written into config.pbtxt for Triton's OpenVINO backend (`HINT_BF16: YES`), and it
is verified on the engine that applies the setting. On AMX (or AVX-512 BF16) CPUs the plugin then runs
convolutions and matmuls in bf16; a CPU without native bf16 ignores the hint and runs f32, which the
report notes instead of claiming a bf16 speed-up.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.precisions.gate import GateLimits, GateReport, gate


def verify(onnx_path: Path, input_name: str, inputs: dict, expected: dict, limits: GateLimits,
           per_output: dict | None = None, threads: int | None = None) -> GateReport:
    from deploykit.backends.openvino import OpenVinoRunner

    with OpenVinoRunner(onnx_path, precision="bf16", threads=threads) as runner:
        report = gate("bf16 openvino vs fp32 pytorch", runner, input_name, expected, inputs, limits, per_output)
        runs = runner.compiled_precision() if runner.compiled else "unknown"
    report.notes.append(f"OpenVINO {_version()} compiled it with inference precision {runs}")
    if runs != "bf16":
        report.notes.append("this CPU has no native bf16: OpenVINO ran f32, so the gate checked f32 numbers")
    return report


def _version() -> str:
    import openvino

    return openvino.__version__.split("-")[0]
