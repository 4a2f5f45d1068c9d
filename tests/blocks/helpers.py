"""Helpers the block tests share: seeded reference/twin pairs, error measures, BatchNorm algebra, ONNX runs."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from deploykit import blocks
from deploykit.blocks.init import randomize_for_verification
from deploykit.export.exporters import export_onnx
from deploykit.export.fp16 import convert_to_fp16
from deploykit.onnx_utils.graph import count_shape_nodes


def seeded_twins(reference: Callable[..., nn.Module], safe: Callable[..., nn.Module], *args, seed: int,
                 **kwargs) -> tuple[nn.Module, nn.Module]:
    """`reference(*args, **kwargs)` with seeded verification weights and `safe(...)` loaded strictly from it,
    both in eval mode (the reference is built first, as the tests' global RNG sequence expects)."""
    ref = randomize_for_verification(reference(*args, **kwargs), seed=seed).eval()
    twin = safe(*args, **kwargs).eval()
    twin.load_state_dict(ref.state_dict(), strict=True)
    return ref, twin


def registry_twins(name: str, seed: int = 0, **overrides) -> tuple[nn.Module, nn.Module]:
    """seeded_twins of registered block `name`, its registry defaults updated by `overrides`."""
    return seeded_twins(partial(blocks.create, name, "reference"), partial(blocks.create, name, "safe"), seed=seed,
                        **overrides)


def max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|, in float64."""
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def bn_eval(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    """Eval-mode BatchNorm2d written out from the state dict entries under `prefix` (eps 1e-5)."""
    shape = (1, -1, 1, 1)
    mean, var = sd[prefix + "running_mean"].view(shape), sd[prefix + "running_var"].view(shape)
    return (x - mean) / torch.sqrt(var + 1e-5) * sd[prefix + "weight"].view(shape) + sd[prefix + "bias"].view(shape)


def identity_bn_state(name: str, channels: int) -> dict[str, torch.Tensor]:
    """State dict entries of a freshly built BatchNorm `name` (unit weight and variance, zero bias and mean)."""
    return {f"{name}.weight": torch.ones(channels), f"{name}.bias": torch.zeros(channels),
            f"{name}.running_mean": torch.zeros(channels), f"{name}.running_var": torch.ones(channels),
            f"{name}.num_batches_tracked": torch.tensor(0)}


def run_ort(path: Path, x: torch.Tensor) -> torch.Tensor:
    """The ONNX model at `path` on ONNX Runtime's CPU provider, one input named `input`."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def export_dynamic_hw(module: nn.Module, channels: int, path: Path, exporter: str) -> None:
    """`module` exported from a 2 x channels x 14 x 14 example with dynamic batch (1..64), H and W (4..256)."""
    export_onnx(module, (torch.randn(2, channels, 14, 14),), path, exporter=exporter, input_names=["input"],
                output_names=["output"],
                dynamic_axes={"input": {0: ("batch", 1, 64), 2: ("height", 4, 256), 3: ("width", 4, 256)}})


def fp16_session(safe: nn.Module, path: Path, exporter: str):
    """`safe` exported at 64 x 14 x 14 with dynamic batch, H and W, converted to fp16; returns the ORT CPU
    session and the number of shape-computation nodes in the fp32 graph."""
    export_dynamic_hw(safe, 64, path, exporter)
    fp16 = convert_to_fp16(onnx.load(str(path)))
    sess = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess, count_shape_nodes(path)


def fp16_relative_error(sess, ref: nn.Module, x: torch.Tensor) -> float:
    """max |fp16 session - fp32 reference| / max |reference| on `x`; asserts the session's output is finite."""
    got = sess.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = ref(x).numpy()
    assert np.isfinite(got).all()
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def fp16_outputs(onnx_path: Path, fp16_path: Path, ref: nn.Module,
                 x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The fp32 graph at `onnx_path` converted to fp16 (saved at `fp16_path`) run on `x`, and `ref(x)`;
    asserts the fp16 output is finite."""
    onnx.save(convert_to_fp16(onnx.load(str(onnx_path))), str(fp16_path))
    with torch.no_grad():
        expected = ref(x)
    got = run_ort(fp16_path, x)
    assert np.isfinite(got.numpy()).all()
    return got, expected
