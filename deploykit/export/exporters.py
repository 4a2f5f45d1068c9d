"""Exporter strategies: the dynamo exporter first, then the TorchScript exporter, each attempt recorded.

Both write a single self-contained .onnx file. Dynamic axes are given once, as {input: {axis: (name, min, max)}},
and translated for each exporter (torch.export Dims for dynamo, dynamic_axes for TorchScript). The exporters'
own progress prints and warnings are captured into the attempt record instead of polluting stdout (which
carries `--json` output).
"""

from __future__ import annotations

import contextlib
import io
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

EXPORTERS = ("dynamo", "torchscript")

# {input_name: {axis: (dim_name or None, min, max)}}
DynamicAxes = dict[str, dict[int, tuple[str, int, int]]]


@dataclass
class ExportAttempt:
    exporter: str
    ok: bool
    seconds: float
    error: str | None = None
    log: str = ""

    def as_dict(self) -> dict:
        return {"exporter": self.exporter, "ok": self.ok, "seconds": round(self.seconds, 3), "error": self.error}


@dataclass
class ExportOutcome:
    path: Path | None
    exporter: str | None
    attempts: list[ExportAttempt] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.path is not None


def _dim(torch, name: str | None, lo: int, hi: int):
    """A named Dim; unnamed (None) lets torch.export find which dims are equal (an image and its mask)."""
    return torch.export.Dim(name, min=lo, max=hi) if name else torch.export.Dim.DYNAMIC(min=lo, max=hi)


def export_onnx(module, example_inputs: tuple, path: str | Path, *, exporter: str, input_names: list[str],
                output_names: list[str], dynamic_axes: DynamicAxes, opset: int = 18) -> str:
    """Export `module` with one exporter; returns the captured exporter log. Raises on failure."""
    import logging

    import torch

    # torch.onnx logs a warning per missing torchvision op at first use, and one when an opset below 18 is
    # asked of the dynamo exporter (the attempt record says what came of it); torch's handlers write them to
    # the real stderr, past the capture below, where they would break `--json` users' logs.
    for name in ("torch.onnx._internal.exporter._registration", "torch.onnx._internal.exporter._compat"):
        logging.getLogger(name).setLevel(logging.ERROR)
    path = Path(path)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            # Positional, so the forward's argument names need not match the ONNX input names.
            dims = tuple(
                {axis: _dim(torch, dim_name, lo, hi) for axis, (dim_name, lo, hi) in dynamic_axes.get(name, {}).items()} or None
                for name in input_names
            )
            with _strip_pools_as_means(module, any(dynamic_axes.values())):
                program = torch.onnx.export(
                    module, example_inputs, dynamo=True, input_names=input_names, output_names=output_names,
                    dynamic_shapes=dims, opset_version=opset, optimize=True, verbose=False, report=False,
                )
            program.save(str(path), external_data=False)
        elif exporter == "torchscript":
            axes_ts = {name: {axis: dim_name or f"{name}_{axis}" for axis, (dim_name, _, _) in axes.items()}
                       for name, axes in dynamic_axes.items()}
            torch.onnx.export(
                module, example_inputs, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                dynamic_axes=axes_ts, opset_version=opset, do_constant_folding=True,
            )
        else:
            raise ValueError(f"unknown exporter {exporter!r}; valid: {', '.join(EXPORTERS)}")
    return buf.getvalue()


@contextlib.contextmanager
def _strip_pools_as_means(module, dynamic: bool):
    """While exporting with dynamic shapes, `nn.AdaptiveAvgPool2d((None, 1))` and `((1, None))` (Coordinate
    Attention's strip pools) run as the mean over the pooled dimension, which they are by definition.

    torch.onnx's dynamo exporter (torch 2.13) writes such a pool as an AveragePool whose kernel is the example's
    size, so the graph is wrong at every other size. The modules are swapped in place and put back afterwards.
    """
    import torch

    swapped = []
    if dynamic:
        for parent in module.modules():
            for name, child in list(parent.named_children()):
                size = getattr(child, "output_size", None)
                if (type(child) is torch.nn.AdaptiveAvgPool2d and isinstance(size, (tuple, list))
                        and sorted(size, key=str) == [1, None]):
                    swapped.append((parent, name, child))
                    setattr(parent, name, _strip_mean(3 if size[1] == 1 else 2))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _strip_mean(dim: int):
    import torch

    class StripMean(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim, keepdim=True)

    return StripMean()


# What each exporter imports on first use; importing it early lets other work overlap those seconds.
_EXPORTER_MODULES = {
    # torch.export.export imports its tracer (dynamo, AOT autograd) and onnxscript its rewriter only when called.
    "dynamo": ("torch.export", "torch.export._trace", "torch._functorch.aot_autograd",
               "torch.onnx._internal.exporter._core", "onnxscript.function_libs.torch_lib.ops",
               "onnxscript.rewriter.onnx_fusions"),
    "torchscript": ("torch.onnx.utils",),
}


def preload_exporter(exporter: str) -> None:
    """Import an exporter's modules ahead of use. Best effort: a renamed module is simply imported later."""
    import importlib

    for name in _EXPORTER_MODULES.get(exporter, ()):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a missing module only means no head start
            pass


def export_with_fallback(module, example_inputs: tuple, path: str | Path, *, strategies=EXPORTERS,
                         **kwargs) -> ExportOutcome:
    """Try each exporter in order until one writes a graph that onnx can load; record every attempt."""
    import onnx

    outcome = ExportOutcome(path=None, exporter=None)
    for exporter in strategies:
        start = time.perf_counter()
        try:
            log = export_onnx(module, example_inputs, path, exporter=exporter, **kwargs)
            written = graph_opset(onnx.load(str(path), load_external_data=False))
            wanted = kwargs.get("opset", 18)
            if written != wanted:
                # The dynamo exporter starts from opset 18 and its down-conversion may silently not happen.
                raise ValueError(f"{exporter} wrote opset {written}, not the requested {wanted}")
        except Exception as exc:  # noqa: BLE001 - every exporter failure is recorded, then the next is tried
            outcome.attempts.append(ExportAttempt(exporter, False, time.perf_counter() - start,
                                                  error=_one_line(exc), log=traceback.format_exc(limit=8)))
            Path(path).unlink(missing_ok=True)
            continue
        outcome.attempts.append(ExportAttempt(exporter, True, time.perf_counter() - start, log=log))
        outcome.path, outcome.exporter = Path(path), exporter
        break
    return outcome


def graph_opset(model) -> int | None:
    """The default-domain (ai.onnx) opset a graph declares."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first[:300]}"
