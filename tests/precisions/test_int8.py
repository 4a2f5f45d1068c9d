"""INT8 Q/DQ flavours from onnxruntime.quantization: what each flavour's graph holds, the TensorRT rules
checked on it, and the gate against fp32 PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from deploykit.precisions import make_precision
from deploykit.precisions.calibration import RANDOM_WARNING
from deploykit.precisions.gate import GateLimits
from deploykit.precisions.int8 import check_tensorrt_qdq, qdq_summary


def _zero_points(model) -> dict[str, np.ndarray]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.name: inits[n.input[2]] for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits}


def _calibration_file(tmp_path):
    path = tmp_path / "cal.npz"
    np.savez(path, input=np.random.default_rng(7).standard_normal((32, 3, 8, 8)).astype(np.float32))
    return path


def test_cpu_flavour_unsigned_activations_per_channel_signed_weights(tiny_case, tmp_path):
    model, inputs, expected = tiny_case
    warnings = []
    made = make_precision("int8", model, input_name="input", inputs=inputs, expected=expected, work=tmp_path / "w",
                          calibration=_calibration_file(tmp_path), warn=warnings.append)
    assert made, made.report.as_dict()
    assert warnings == [] and made.details["calibration"]["samples"] == 32
    zps = _zero_points(made.model)
    dtypes = {str(z.dtype) for z in zps.values()}
    assert "uint8" in dtypes and "int8" in dtypes                    # u8 activations, s8 weights
    weight_zp = [z for name, z in zps.items() if name.startswith("w")]
    assert weight_zp and weight_zp[0].size == 4                       # one zero point per output channel
    assert "Conv" in made.details["qdq"]["quantized_ops"]
    report = made.report.as_dict()
    assert report["passed"] and report["max_rel_l2"] <= 0.12 and report["min_cosine"] >= 0.99
    assert len(report["metrics"]) == len(inputs)
    # a CPU-flavour graph breaks TensorRT's rules (unsigned zero points): the checker sees it
    assert any("uint8" in p for p in check_tensorrt_qdq(made.model))


def test_tensorrt_flavour_symmetric_signed_and_checked(tiny_case, tmp_path):
    model, inputs, expected = tiny_case
    made = make_precision("int8_trt", model, input_name="input", inputs=inputs, expected=expected,
                          work=tmp_path / "w", calibration=_calibration_file(tmp_path))
    assert made, made.report.as_dict()
    zps = _zero_points(made.model)
    assert zps and all(z.dtype == np.int8 and not z.any() for z in zps.values())
    assert check_tensorrt_qdq(made.model) == [] and made.report.problems == []
    summary = qdq_summary(made.model)
    assert summary["zero_point_types"] == ["int8"] and "Conv" in summary["quantized_ops"]


def test_tensorrt_flavour_is_built_as_int8_by_the_trt_pipeline(tiny_case, tmp_path):
    """The graph takes deploykit build's INT8 path: strongly typed, precision from the Q/DQ nodes."""
    import onnx

    from deploykit.trt.builder import decide_precision
    from deploykit.trt.capabilities import TrtCapabilities
    from deploykit.trt.onnx_info import summarize

    model, inputs, expected = tiny_case
    made = make_precision("int8_trt", model, input_name="input", inputs=inputs, expected=expected,
                          work=tmp_path / "w", calibration=_calibration_file(tmp_path))
    path = tmp_path / "int8_trt.onnx"
    onnx.save(made.model, str(path))
    info = summarize(path)
    qdq = made.details["qdq"]
    assert info.precision == "int8" and info.qdq_nodes == qdq["quantize"] + qdq["dequantize"]
    trt11 = TrtCapabilities("11.4.0.106", fp16_flag=False, int8_flag=False, strongly_typed=True,
                            optimization_level=True, parser_error_node_name=True)
    plan = decide_precision(info, None, trt11)
    assert (plan.precision, plan.strongly_typed, plan.int8_flag) == ("int8", True, False)


def test_random_calibration_warns_loudly_and_is_recorded(tiny_case, tmp_path):
    model, inputs, expected = tiny_case
    warnings = []
    made = make_precision("int8", model, input_name="input", inputs=inputs, expected=expected, work=tmp_path / "w",
                          warn=warnings.append)
    assert warnings and "RANDOM" in warnings[0]
    assert RANDOM_WARNING in made.report.notes and made.details["calibration"]["source"] == "random"


def test_gate_failure_is_reported_per_output(tiny_case, tmp_path):
    model, inputs, expected = tiny_case
    made = make_precision("int8", model, input_name="input", inputs=inputs, expected=expected, work=tmp_path / "w",
                          calibration=_calibration_file(tmp_path), limits=GateLimits(max_rel_l2=1e-7, min_cosine=0.5))
    assert not made
    reasons = [o.reason for s in made.report.shapes for o in s.comparison.outputs]
    assert reasons and all("relative L2" in r for r in reasons)


def test_unknown_precision():
    with pytest.raises(KeyError):
        make_precision("int4", None, input_name="input", inputs={}, expected={}, work="/tmp/unused")
