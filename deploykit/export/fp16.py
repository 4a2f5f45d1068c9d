"""Mixed-precision fp16 ONNX graphs made with onnxconverter-common (Microsoft's maintained converter).

fp16 weights and activations, fp32 inputs and outputs by default (Cast nodes at the boundary), and an fp32
keep-list for the ops whose fp16 versions lose range or precision: reductions that sum many values, softmax,
normalisations, exp/log. This is the graph TensorRT 11 needs for fp16 engines (strongly typed networks take
precision from the graph; there is no FP16 builder flag).
"""

from __future__ import annotations

# Ops kept in fp32: sums over many elements, exponentials and statistics overflow or underflow in fp16.
DEFAULT_FP32_OPS = (
    "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL2", "ReduceProd",
    "Softmax", "LogSoftmax", "Exp", "Log", "Pow", "Sqrt",
    "BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
    "Resize", "GridSample", "AffineGrid", "Range", "TopK", "NonMaxSuppression",
)


def convert_to_fp16(model, *, keep_io_types: bool = True, fp32_ops=DEFAULT_FP32_OPS, fp32_nodes=()):
    """Return an fp16 copy of `model` (onnx.ModelProto), keeping `fp32_ops` and the named nodes in fp32."""
    import warnings

    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns about every clamped tiny initializer
        return float16.convert_float_to_float16(
            model, keep_io_types=keep_io_types, op_block_list=list(fp32_ops), node_block_list=list(fp32_nodes),
        )
