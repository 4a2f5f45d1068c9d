"""Runners: a uniform activate / infer / deactivate interface over PyTorch, ONNX Runtime and TensorRT."""
