"""INT8 Q/DQ graphs from the verified fp32 ONNX, in two flavours, with onnxruntime.quantization.

Q/DQ (QuantizeLinear / DequantizeLinear pairs) is the one INT8 form every runtime here reads: ONNX Runtime
and OpenVINO fuse the pairs into int8 kernels, and TensorRT 10/11 builds INT8 engines only from them (it has
no implicit calibration any more). What runs fastest differs:

- `cpu` (precision `int8`): unsigned 8-bit activations (QUInt8) and signed per-channel weights (QInt8).
  x86 VNNI/AMX int8 instructions multiply u8 by s8; ONNX Runtime's defaults (signed activations) made every
  graph here slower than fp32, the unsigned form made resnet50_cbam 1.5x faster on ONNX Runtime and 5x on
  OpenVINO.
- `tensorrt` (precision `int8_trt`): symmetric signed int8 for activations and weights (zero point 0, the
  only form TensorRT accepts), per-channel weights on the output-channel axis, Q/DQ only in front of the
  ops TensorRT fuses into int8 kernels (Conv, MatMul, Gemm) so no pair is left that forces a reformat.
  `check_tensorrt_qdq` checks those rules on the result; the TensorRT support audit checks the ops.

The pre-processing step (quant_pre_process: shape inference and graph optimisation) runs symbolic shape
inference first and, where that fails (cbam, hacnn and resnet50_cbam in this repository), again without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deploykit.errors import CheckFailed
from deploykit.precisions.calibration import Calibration, Reader

FLAVOURS = {"int8": "cpu", "int8_trt": "tensorrt"}
TENSORRT_OP_TYPES = ["Conv", "MatMul", "Gemm"]


def quantize(model, flavour: str, calibration: Calibration, input_name: str, work: Path):
    """The Q/DQ ModelProto of `model` (fp32 ModelProto) in the given flavour ("cpu" or "tensorrt")."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    work.mkdir(parents=True, exist_ok=True)
    source = work / f"fp32_{flavour}.onnx"
    onnx.save(model, str(source))
    prepared = preprocess(source, work / f"prepared_{flavour}.onnx")
    out = work / f"int8_{flavour}.onnx"
    if flavour == "cpu":
        settings = dict(activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        extra_options={})
    elif flavour == "tensorrt":
        settings = dict(activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=TENSORRT_OP_TYPES,
                        # zero point 0, a Q/DQ pair per consumer, float biases (TensorRT fuses them into the kernel)
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "DedicatedQDQPair": True, "QuantizeBias": False})
    else:
        raise ValueError(f"unknown INT8 flavour {flavour!r}")
    try:
        quantize_static(str(prepared), str(out), Reader(calibration, input_name), quant_format=QuantFormat.QDQ,
                        calibrate_method=CalibrationMethod.MinMax, **settings)
    except Exception as exc:  # noqa: BLE001 - the quantizer's failure fails this precision only
        raise CheckFailed(f"onnxruntime.quantization could not quantize the graph ({flavour}): "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    return onnx.load(str(out))


def preprocess(source: Path, target: Path) -> Path:
    """quant_pre_process with symbolic shape inference, or without it where it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(source), str(target), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - symbolic shape inference refuses some graphs (Resize, Shape arithmetic)
        quant_pre_process(str(source), str(target), skip_symbolic_shape=True)
    return target


def qdq_summary(model) -> dict:
    """Counts and types of the Q/DQ nodes, and which ops consume dequantized tensors."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    zp_types = sorted({str(inits[n.input[2]].dtype) for n in q + dq if len(n.input) > 2 and n.input[2] in inits})
    dq_outputs = {n.output[0] for n in dq}
    consumers = sorted({n.op_type for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                        and any(i in dq_outputs for i in n.input)})
    return {"quantize": len(q), "dequantize": len(dq), "zero_point_types": zp_types, "quantized_ops": consumers}


def check_tensorrt_qdq(model) -> list[str]:
    """Rules TensorRT's Q/DQ import enforces (IQuantizeLayer / IDequantizeLayer): signed int8, zero point 0,
    positive scales, per-channel axis 0 for Conv weights; returns the violations (empty: none)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(a.t) for n in model.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"}
    values = {**inits, **consts}
    problems = []
    nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    readers: dict[str, set] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, set()).add(n.op_type)
    if not nodes:
        problems.append("the graph has no QuantizeLinear/DequantizeLinear nodes: TensorRT would build it in fp32/fp16")
    for n in nodes:
        scale = values.get(n.input[1])
        if scale is None:
            problems.append(f"{n.name}: scale '{n.input[1]}' is not a constant (TensorRT needs build-time scales)")
        elif not (np.asarray(scale) > 0).all():
            problems.append(f"{n.name}: a scale is zero or negative")
        if len(n.input) > 2 and n.input[2]:
            zp = values.get(n.input[2])
            if zp is None:
                problems.append(f"{n.name}: zero point '{n.input[2]}' is not a constant")
            elif np.asarray(zp).dtype != np.int8:
                problems.append(f"{n.name}: zero point is {np.asarray(zp).dtype}, TensorRT takes int8 only")
            elif np.any(np.asarray(zp) != 0):
                problems.append(f"{n.name}: zero point is not 0 (TensorRT quantizes symmetrically)")
        axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
        if (scale is not None and np.asarray(scale).size > 1 and axis != 0
                and "Conv" in readers.get(n.output[0], ())):
            problems.append(f"{n.name}: Conv weight scales on axis {axis}; TensorRT takes them per output channel "
                            "(axis 0)")
    return problems
