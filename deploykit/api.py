"""`deploykit.export(model, inputs=...)`: the whole verified export of a live PyTorch module, from Python.

The same pipeline as `deploykit export --module`: export-safe rewrite (each swap proved), ONNX export with
fallback, verification against the module at min/opt/max/odd sizes, verified onnxsim, fp16, the report and the
Triton repository entry with its sidecar. The module passed in is not modified (a copy is exported).
"""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import UserInputError

LIVE_PREFIX = "<live>"


def export(model, inputs, *, name: str | None = None, out: str | Path = "models",
           precisions=("fp32", "fp16"), dynamic: dict | None = None, rewrite: bool = True, opset: int | None = None,
           tolerances: dict | None = None, output_tolerances: dict | None = None, simplify: bool = True,
           seed: int = 0, force: bool = False, new_version: bool = False, progress: bool = False):
    """Export `model` and return the report object (`.passed`, `.parity`, `.artifacts`, `.as_dict()`).

    Args:
        model: a torch.nn.Module, with the weights it has (they are reported by their sha256).
        inputs: forward's inputs, in order: a tensor, a sequence of tensors, or a dict name -> tensor, shape
            (tuple of ints) or "1x3x224x224[:dtype]". Tensors give shape and dtype.
        dynamic: name -> {axis: (min, opt, max)} or name -> [axes] (batch 1..2x, other axes x0.5..x2).
        tolerances / output_tolerances: as in an export config ({"fp32": {"atol":, "rtol":}} and per output name).

    Raises:
        deploykit.errors.UserInputError: unusable inputs (nothing is written).
    """
    import copy

    import torch

    from deploykit.export.config import parse_config
    from deploykit.export.pipeline import run_export
    from deploykit.progress import Progress

    if not isinstance(model, torch.nn.Module):
        raise UserInputError(f"deploykit.export takes a torch.nn.Module, got {type(model).__name__}",
                             hint="pass the model object itself (an nn.Module)")
    specs = _input_specs(inputs, dynamic or {})
    cls = type(model)
    data = {"name": name or cls.__name__.lower(),
            "source": {"module": f"{LIVE_PREFIX}{cls.__module__}:{cls.__qualname__}"},
            "inputs": specs, "precisions": list(precisions), "rewrite": rewrite, "simplify": simplify, "seed": seed}
    for key, value in (("opset", opset), ("tolerances", tolerances), ("output_tolerances", output_tolerances)):
        if value is not None:
            data[key] = value
    config = parse_config(data, f"deploykit.export({cls.__name__})")
    return run_export(config, out, force=force, new_version=new_version, model=copy.deepcopy(model),
                      progress=Progress(None if progress else "quiet"))


def _input_specs(inputs, dynamic: dict) -> list[dict]:
    import torch

    from deploykit.sources.specs import flags_to_config, parse_dynamic_flag, parse_input_flag, InputFlag

    if isinstance(inputs, torch.Tensor):
        inputs = {"input": inputs}
    elif isinstance(inputs, (tuple, list)):
        inputs = {f"input_{i}": x for i, x in enumerate(inputs)}
    if not isinstance(inputs, dict) or not inputs:
        raise UserInputError("inputs must be a tensor, a sequence of tensors or a dict name -> tensor/shape",
                             hint="e.g. inputs={'images': torch.randn(1, 3, 224, 224)}")
    flags = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            flags[key] = InputFlag(key, list(value.shape), str(value.dtype).removeprefix("torch."))
        elif isinstance(value, str):
            flags[key] = parse_input_flag(f"{key}:{value}")
        elif isinstance(value, (tuple, list)) and all(isinstance(d, int) for d in value):
            flags[key] = InputFlag(key, list(value))
        else:
            raise UserInputError(f"input {key!r}: {type(value).__name__} is not a tensor, a shape or 'DxD[:dtype]'",
                                 hint="give an example tensor, a tuple of ints or a string like '1x3x224x224:float32'")
    for key, axes in dynamic.items():
        if isinstance(axes, dict):
            text = ",".join(f"{a}={lo}:{opt}:{hi}" for a, (lo, opt, hi) in axes.items())
        else:
            text = ",".join(str(a) for a in axes)
        parse_dynamic_flag(f"{key}:{text}", flags)
    return flags_to_config(list(flags.values()))
