"""ONNX graph helpers shared by export, validate and the tests (onnx imported lazily by each module)."""
