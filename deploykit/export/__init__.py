"""The export pipeline: torch -> ONNX (exporter strategies) -> verified simplification -> fp16 -> artifacts."""
