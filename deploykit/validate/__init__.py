"""`deploykit validate`: a verdict on any ONNX model.

    core.py       validate(): the steps in order, filling a ValidationReport (checks.py)
    structure.py  checker, shape inference, versions, inputs/outputs, external data, initializers
    audit.py      TensorRT readiness against the parser's support lists (support.py loads
                  deploykit/data/tensorrt_onnx_support.json); no TensorRT needed
    inputs.py     the shapes and arrays to run: profiles, the reference config, static dims, .npz files
    numerics.py   ONNX Runtime runs, NaN/Inf, parity with PyTorch and TensorRT, tolerances
    fp16.py       fp16 readiness: out-of-range intermediate tensors and the fp32 keep-list
    report.py     Markdown report and table rows
"""
