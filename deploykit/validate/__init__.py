"""`deploykit validate`: a verdict on an ONNX model: structure, ONNX Runtime, parity with PyTorch."""
