"""deploykit: attention blocks from PyTorch to ONNX Runtime, TensorRT and a served container.

Importing the package is cheap on purpose: torch, onnx and onnxruntime load only in the modules that use them,
so `deploykit --help` and `deploykit list` start fast.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy re-exports keep `import deploykit` free of torch.
    if name == "make_export_safe":
        from deploykit.networks.convert import make_export_safe

        return make_export_safe
    if name == "export":   # the export package, callable as deploykit.export(model, inputs=...)
        import importlib

        return importlib.import_module("deploykit.export")
    raise AttributeError(f"module 'deploykit' has no attribute {name!r}")
