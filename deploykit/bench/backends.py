"""Benchmark backends: one small object per way of running the model, all driven the same way.

`prepare(x)` takes the batch's input (a numpy array, or a dict of named arrays in forward's order) and does the
per-shape set-up (device copy, compile for the shape, CUDA-graph capture); `outputs()` runs once and returns numpy arrays in graph output order, for the
parity check; `call()` is the timed inference on the prepared input, doing only what the backend's own API
needs (eager torch takes a tensor, ONNX Runtime numpy or device-bound values); `context()` wraps the timed
calls (torch.inference_mode for PyTorch). `timer` says how calls are timed: "perf_counter" for synchronous
calls, "cuda_events" for asynchronous CUDA work on torch's current stream.

Names accepted by `--backends`:
    torch      eager PyTorch, two rows: the reference module and the export-safe twin
    compile    torch.compile (inductor) of the twin, one compile per batch size (dynamic=False)
    ort        ONNX Runtime on the verified export: CPU EP, or the CUDA EP with device-bound I/O on a GPU
    trt        TensorRT engine built from the same graph (needs TensorRT and a GPU)
    openvino   OpenVINO on the same graph in f32, compiled per batch size (static shapes)
    openvino-bf16  the same with INFERENCE_PRECISION_HINT bf16 (what `export --precision bf16` ships);
               its outputs are checked at the bf16 gate (relative L2, cosine), not at the fp32 tolerance
    ort-int8, openvino-int8  the graph quantized to the CPU INT8 Q/DQ flavour (deploykit.precisions, calibrated
               on seeded random inputs: a speed measurement, not an accuracy claim), checked at the INT8 gate
    cudagraph  the twin captured in a CUDA graph and replayed (GPU only)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

BACKEND_NAMES = ("torch", "compile", "ort", "trt", "cudagraph", "openvino", "openvino-bf16", "ort-int8",
                 "openvino-int8")
DEFAULT_BACKENDS = ("torch", "compile", "ort", "trt")


class BenchBackend:
    """Base class; see the module docstring for the protocol."""

    name = "backend"
    label = "backend"
    variant: str | None = None
    timer = "perf_counter"
    # Why peak memory cannot be measured for this backend (its allocator is invisible to the measurement).
    untracked_memory: str | None = None

    def __init__(self, device: str = "cpu"):
        self.device = device

    def skip_reason(self, batch: int) -> str | None:
        """Why this backend cannot run at `batch` (None when it can)."""
        return None

    def prepare(self, x: np.ndarray) -> None:
        raise NotImplementedError

    def outputs(self) -> list[np.ndarray]:
        raise NotImplementedError

    def call(self) -> None:
        raise NotImplementedError

    def context(self):
        return contextlib.nullcontext()

    def sync(self) -> None:
        """Wait for queued device work (no-op for synchronous backends)."""

    def close(self) -> None:
        """Release sessions, engines and device memory."""


def _to_numpy_list(out) -> list[np.ndarray]:
    """A module's outputs as a flat list in order (a dict's values, nested tuples flattened, as torch.onnx does)."""
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        return [a for o in out if o is not None for a in _to_numpy_list(o)]
    return [out.detach().float().cpu().numpy()]


def _named(x, input_name: str) -> dict:
    """The feed by input name: a dict of named inputs as given, one array under the graph's input name."""
    return x if isinstance(x, dict) else {input_name: x}


def _tensors(x, device: str) -> tuple:
    """The input(s) as torch tensors on `device`, in forward's order (a dict keeps that order)."""
    import torch

    arrays = x.values() if isinstance(x, dict) else (x,)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)


class TorchEager(BenchBackend):
    """Eager PyTorch under torch.inference_mode."""

    def __init__(self, module, variant: str, device: str = "cpu"):
        super().__init__(device)
        if device != "cpu":
            import copy

            # Module.to() moves in place; the source's module must stay on the CPU for the expected outputs.
            module = copy.deepcopy(module)
        self.module = module.to(device).eval()
        self.variant = variant
        self.name = f"torch-eager-{variant}"
        self.label = f"eager ({'twin' if variant == 'safe' else variant})"
        self.timer = "cuda_events" if device.startswith("cuda") else "perf_counter"
        self.x = None

    def context(self):
        import torch

        return torch.inference_mode()

    def prepare(self, x) -> None:
        self.x = _tensors(x, self.device)

    def outputs(self) -> list[np.ndarray]:
        with self.context():
            return _to_numpy_list(self.module(*self.x))

    def call(self) -> None:
        self.module(*self.x)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        self.x = None


# Batch sizes one torch.compile backend may specialise for; `deploykit bench --batch` takes at most this many.
RECOMPILE_LIMIT = 256


class TorchCompiled(TorchEager):
    """torch.compile of the twin; dynamic=False so every batch size gets its own specialised kernels (the
    best case for torch.compile), compiled on the first call at that size, outside the timed calls."""

    def __init__(self, module, variant: str, device: str = "cpu", backend: str = "inductor", mode: str | None = None):
        super().__init__(module, variant, device)
        import torch

        self.name = "torch-compile"
        self.label = "torch.compile" if backend == "inductor" else f"torch.compile ({backend})"
        self.compile_backend = backend
        # Each batch size compiles once; lift the recompile limit (8 by default) so that a long --batch list
        # never falls back to eager while its rows still say torch.compile.
        for knob in ("recompile_limit", "cache_size_limit"):   # the name changed across releases
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, max(getattr(torch._dynamo.config, knob), RECOMPILE_LIMIT))
        self.compiled = torch.compile(self.module, backend=backend, mode=mode, dynamic=False)

    def prepare(self, x: np.ndarray) -> None:
        super().prepare(x)
        with self.context():
            self.compiled(*self.x)  # compiles for this shape here, so the check and timing see compiled code

    def outputs(self) -> list[np.ndarray]:
        with self.context():
            return _to_numpy_list(self.compiled(*self.x))

    def call(self) -> None:
        self.compiled(*self.x)


class CudaGraph(TorchEager):
    """The twin captured once per batch size in a CUDA graph; a call is one graph replay."""

    def __init__(self, module, variant: str, device: str):
        super().__init__(module, variant, device)
        self.name = "cuda-graph"
        self.label = "CUDA graph"
        self.graph = None
        self.static_out = None

    def prepare(self, x: np.ndarray) -> None:
        import torch

        self.x = _tensors(x, self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):  # warm-up on a side stream, as capture requires
                self.module(*self.x)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.static_out = self.module(*self.x)

    def outputs(self) -> list[np.ndarray]:
        self.graph.replay()
        self.sync()
        return _to_numpy_list(self.static_out)

    def call(self) -> None:
        self.graph.replay()

    def close(self) -> None:
        self.graph = self.static_out = self.x = None


class OnnxRuntime(BenchBackend):
    """ONNX Runtime with default graph optimizations and the same intra-op thread count as PyTorch.

    On the CPU a call is `session.run` on numpy arrays (ONNX Runtime's own I/O). With the CUDA execution
    provider, input and output live on the GPU through I/O binding, so no host copies are timed, as for torch.
    """

    def __init__(self, onnx_path, variant: str | None, device: str = "cpu", threads: int | None = None,
                 input_name: str = "input", fixed_batch: int | None = None):
        super().__init__(device)
        from deploykit.backends.ort import OrtRunner

        cuda = device.startswith("cuda")
        self.name = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
        self.label = f"ORT {'CUDA' if cuda else 'CPU'}"
        self.variant = variant
        providers = ([("CUDAExecutionProvider", {"device_id": _cuda_index(device)}), "CPUExecutionProvider"]
                     if cuda else ["CPUExecutionProvider"])
        self.runner = OrtRunner(str(onnx_path), providers=providers, threads=threads).activate()
        self.input_name = input_name
        self.fixed_batch = fixed_batch
        self.feed = None
        self.binding = None
        if cuda:
            self.untracked_memory = "ONNX Runtime's CUDA allocator is not visible to torch.cuda"

    def skip_reason(self, batch: int) -> str | None:
        if self.fixed_batch and batch != self.fixed_batch:
            return f"the graph has a fixed batch of {self.fixed_batch}"
        return None

    def prepare(self, x) -> None:
        self.feed = _named(x, self.input_name)
        if self.device.startswith("cuda"):
            import onnxruntime as ort

            session = self.runner.session
            self.binding = session.io_binding()
            self._keep = []
            for name, array in self.feed.items():
                value = ort.OrtValue.ortvalue_from_numpy(array, "cuda", _cuda_index(self.device))
                self.binding.bind_ortvalue_input(name, value)
                self._keep.append(value)
            for name in self.runner.output_names:
                self.binding.bind_output(name, "cuda", _cuda_index(self.device))

    def outputs(self) -> list[np.ndarray]:
        if self.binding is not None:
            self.runner.session.run_with_iobinding(self.binding)
            return [np.asarray(v) for v in self.binding.copy_outputs_to_cpu()]
        return list(self.runner.session.run(None, self.feed))

    def call(self) -> None:
        if self.binding is not None:
            self.runner.session.run_with_iobinding(self.binding)
        else:
            self.runner.session.run(None, self.feed)

    def close(self) -> None:
        self.binding = self.feed = None
        self.runner.deactivate()


class OpenVino(BenchBackend):
    """OpenVINO's CPU plugin on the verified graph, one compiled model per batch size (see backends/openvino.py).

    A call is OpenVinoRunner.infer: numpy in, numpy out, as for ONNX Runtime's `session.run`. A reduced
    precision carries its own `gate` (deploykit.precisions), which the run applies instead of the fp32
    tolerance."""

    def __init__(self, onnx_path, variant: str | None, precision: str = "f32", threads: int | None = None,
                 input_name: str = "input"):
        super().__init__("cpu")
        from deploykit.backends.openvino import OpenVinoRunner

        self.name = "openvino-cpu" if precision == "f32" else f"openvino-{precision}"
        self.label = f"OpenVINO {precision}"
        self.variant = variant
        self.untracked_memory = "OpenVINO's allocations are not visible to the measurement"
        self.runner = OpenVinoRunner(str(onnx_path), precision=precision, threads=threads).activate()
        self.input_name = input_name
        self.feed = None
        if precision != "f32":
            from deploykit.precisions.gate import DEFAULT_LIMITS

            self.gate = DEFAULT_LIMITS[precision]

    def prepare(self, x) -> None:
        self.feed = _named(x, self.input_name)
        self.runner.infer(self.feed)   # compiles for this batch size outside the timed calls

    def outputs(self) -> list[np.ndarray]:
        out = self.runner.infer(self.feed)
        return [out[n] for n in self.runner.output_names]

    def call(self) -> None:
        self.runner.infer(self.feed)

    def close(self) -> None:
        self.feed = None
        self.runner.deactivate()


class TensorRT(BenchBackend):
    """A TensorRT engine built from the verified graph with `deploykit build`'s pipeline. A call goes through
    TrtRunner.infer, so it includes the host-to-device input copy and the device-to-host output copy."""

    name = "tensorrt"
    label = "TensorRT"

    def __init__(self, plan_path, variant: str | None, input_name: str = "input"):
        super().__init__("cuda")
        from deploykit.backends.trt import TrtRunner

        self.variant = variant
        self.untracked_memory = "TensorRT's own device memory is not visible to torch.cuda"
        self.runner = TrtRunner(str(plan_path)).activate()
        self.input_name = input_name
        self.feed = None

    def prepare(self, x) -> None:
        self.feed = _named(x, self.input_name)

    def outputs(self) -> list[np.ndarray]:
        out = self.runner.infer(self.feed)
        return [out[n] for n in self.runner.outputs]

    def call(self) -> None:
        self.runner.infer(self.feed)

    def close(self) -> None:
        self.runner.deactivate()


def _cuda_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


@dataclass
class Unavailable:
    """A backend that yields no timings: skipped (not applicable here) or failed (it broke while setting up)."""

    name: str
    label: str
    variant: str | None
    status: str   # "skipped" | "failed"
    reason: str


def _error_line(exc: BaseException) -> str:
    text = getattr(exc, "one_line", None)
    if callable(text):
        return text()
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def make_backends(names, source, *, device: str, threads: int | None, compile_backend: str = "inductor",
                  log: Callable[[str], None] = lambda _msg: None):
    """Instantiate the requested backends for `source`.

    Returns:
        (list of BenchBackend, list of Unavailable): every requested name is in exactly one of them
        (`torch` contributes two rows).
    """
    ready: list[BenchBackend] = []
    missing: list[Unavailable] = []
    cuda = device.startswith("cuda")
    for name in names:
        if name == "torch":
            if not source.has_torch:
                for variant in ("reference", "safe"):
                    missing.append(Unavailable(f"torch-eager-{variant}",
                                               f"eager ({'twin' if variant == 'safe' else variant})", variant,
                                               "skipped", _no_torch_reason(source)))
                continue
            ready.append(TorchEager(source.reference, "reference", device))
            if source.safe is source.reference:  # the config exports the reference itself: there is no twin
                missing.append(Unavailable("torch-eager-safe", "eager (twin)", "safe", "skipped",
                                           "the config exports the reference variant (source.variant: reference)"))
            else:
                ready.append(TorchEager(source.safe, "safe", device))
        elif name in ("compile", "cudagraph"):
            label = "torch.compile" if name == "compile" else "CUDA graph"
            row = "torch-compile" if name == "compile" else "cuda-graph"
            if not source.has_torch:
                missing.append(Unavailable(row, label, None, "skipped", _no_torch_reason(source)))
            elif name == "cudagraph" and not cuda:
                missing.append(Unavailable(row, label, source.variant, "skipped",
                                           "CUDA graphs need a CUDA device (--device cuda)"))
            else:
                import copy

                # A private copy: compiling or capturing must not change the module the eager rows time.
                module = copy.deepcopy(source.safe)
                try:
                    ready.append(TorchCompiled(module, source.variant, device, backend=compile_backend)
                                 if name == "compile" else CudaGraph(module, source.variant, device))
                except Exception as exc:  # noqa: BLE001 - a backend that cannot start is a failed row
                    missing.append(Unavailable(row, label, source.variant, "failed", _error_line(exc)))
        elif name == "ort":
            row = "onnxruntime-cuda" if cuda else "onnxruntime-cpu"
            label = f"ORT {'CUDA' if cuda else 'CPU'}"
            if cuda:
                import onnxruntime as ort

                if "CUDAExecutionProvider" not in ort.get_available_providers():
                    missing.append(Unavailable(row, label, source.variant, "skipped",
                                               "onnxruntime has no CUDA execution provider here; install it with: "
                                               "pip install 'deploykit[gpu]'"))
                    continue
            try:
                log("exporting and verifying the ONNX graph" if source.onnx_file is None else "loading the ONNX graph")
                ready.append(OnnxRuntime(source.onnx_path(), source.variant, device, threads, source.input_name,
                                         source.fixed_batch))
            except Exception as exc:  # noqa: BLE001
                missing.append(Unavailable(row, label, source.variant, "failed", _error_line(exc)))
        elif name in ("ort-int8", "openvino-int8"):
            row = "onnxruntime-int8" if name == "ort-int8" else name
            label = "ORT CPU int8" if name == "ort-int8" else "OpenVINO int8"
            if cuda:
                missing.append(Unavailable(row, label, source.variant, "skipped",
                                           "the CPU INT8 flavour is timed on the CPU; bench it with --device cpu"))
                continue
            try:
                if name == "openvino-int8":
                    from deploykit.backends.openvino import load_openvino

                    load_openvino("benchmarking OpenVINO")
            except Exception as exc:  # noqa: BLE001 - a missing engine is a skipped row with the install hint
                missing.append(Unavailable(row, label, source.variant, "skipped", _error_line(exc)))
                continue
            try:
                log("quantizing the ONNX graph to INT8 (CPU Q/DQ)")
                graph = _int8_graph(source)
                if name == "ort-int8":
                    backend = OnnxRuntime(graph, source.variant, device, threads, source.input_name,
                                          source.fixed_batch)
                    backend.name, backend.label = row, label
                else:
                    backend = OpenVino(graph, source.variant, "f32", threads, source.input_name)
                    backend.name, backend.label = row, label
                from deploykit.precisions.gate import DEFAULT_LIMITS

                backend.gate = DEFAULT_LIMITS["int8"]
                ready.append(backend)
            except Exception as exc:  # noqa: BLE001
                missing.append(Unavailable(row, label, source.variant, "failed", _error_line(exc)))
        elif name in ("openvino", "openvino-bf16"):
            precision = "bf16" if name == "openvino-bf16" else "f32"
            row, label = ("openvino-cpu" if precision == "f32" else name), f"OpenVINO {precision}"
            if cuda:
                missing.append(Unavailable(row, label, source.variant, "skipped",
                                           "OpenVINO runs here on the CPU; bench it with --device cpu"))
                continue
            try:
                from deploykit.backends.openvino import load_openvino

                load_openvino("benchmarking OpenVINO")
            except Exception as exc:  # noqa: BLE001 - a missing engine is a skipped row with the install hint
                missing.append(Unavailable(row, label, source.variant, "skipped", _error_line(exc)))
                continue
            try:
                log("loading the ONNX graph into OpenVINO")
                ready.append(OpenVino(source.onnx_path(), source.variant, precision, threads, source.input_name))
            except Exception as exc:  # noqa: BLE001
                missing.append(Unavailable(row, label, source.variant, "failed", _error_line(exc)))
        elif name == "trt":
            from deploykit.trt.capabilities import INSTALL_HINT, cuda_device, import_tensorrt

            trt, trt_problem = import_tensorrt()
            gpu, gpu_problem = cuda_device() if trt is not None else (None, None)
            if trt is None or gpu is None:
                why = f"TensorRT is not installed ({trt_problem})" if trt is None else f"no CUDA GPU ({gpu_problem})"
                missing.append(Unavailable("tensorrt", "TensorRT", source.variant, "skipped",
                                           f"{why}; {INSTALL_HINT}"))
                continue
            try:
                log("building the TensorRT engine")
                ready.append(TensorRT(_build_plan(source), source.variant, source.input_name))
            except Exception as exc:  # noqa: BLE001
                missing.append(Unavailable("tensorrt", "TensorRT", source.variant, "failed", _error_line(exc)))
        else:  # the CLI validates names; this guards library callers
            from deploykit.errors import unknown_name_error

            raise unknown_name_error("backend", name, BACKEND_NAMES)
    return ready, missing


def _no_torch_reason(source) -> str:
    return ("no PyTorch source: the ONNX file has no deploykit manifest beside it to rebuild the module from"
            if source.kind == "onnx" else "no PyTorch module")


def _int8_graph(source):
    """The source's graph as a CPU-flavour INT8 Q/DQ graph (made once per source, in its work directory)."""
    path = source.workdir() / "int8" / "model_int8.onnx"
    if path.is_file():
        return path
    import onnx

    from deploykit.precisions.calibration import random_calibration
    from deploykit.precisions.int8 import quantize

    fp32 = onnx.load(str(source.onnx_path()))
    calibration = random_calibration((4, source.channels, source.height, source.width), seed=0)
    onnx.save(quantize(fp32, "cpu", calibration, source.input_name, path.parent), str(path))
    return path


def _build_plan(source):
    from deploykit.trt.pipeline import PLAN_NAME, build_model

    out = source.workdir() / "trt"
    build_model(source.onnx_path(), out_dir=out, name="bench_trt")  # raises with the failing step
    return out / "bench_trt" / "1" / PLAN_NAME
