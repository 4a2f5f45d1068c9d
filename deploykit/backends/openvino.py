"""OpenVINO runner: an ONNX file (or OpenVINO IR, model.xml) compiled for the CPU plugin.

Static shapes: OpenVINO compiles a graph with a dynamic batch to kernels that handle any size, and those
ran 1.3-3x slower here than kernels for a fixed batch. With `static_shapes=True` (the default) the runner
reshapes a copy of the model to each call's exact input shapes before compiling it and keeps the compiled
model for the next call of those shapes. The trade-off: one compiled model (weights are shared, the
compiled kernels and their scratch memory are not) and one compile (0.1-2 s) per distinct shape, so the
cache is bounded (`max_compiled`, least recently used goes first); a server with a fixed set of batch sizes
pays each compile once. `static_shapes=False` compiles the dynamic graph once instead.

Precision: `precision="f32"` or `"bf16"` sets INFERENCE_PRECISION_HINT; None keeps the plugin's default,
which on a CPU with AMX or AVX-512 BF16 is bf16. Matmuls and convolutions then run in bf16 — this is
the engine setting `deploykit export --precision bf16` verifies.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from deploykit.backends.base import Runner
from deploykit.errors import MissingDependency, UserInputError

PRECISIONS = ("f32", "bf16")
INSTALL_HINT = "install it with: pip install 'deploykit[openvino]'"


def load_openvino(purpose: str = "running a model with OpenVINO"):
    """The `openvino` module, or MissingDependency (exit 3) with the install command."""
    try:
        import openvino
    except ImportError as exc:
        raise MissingDependency(f"openvino is not installed, which {purpose} needs: {exc}",
                                hint=INSTALL_HINT) from None
    return openvino


def compile_config(precision: str | None, threads: int | None, hint: str = "LATENCY") -> dict[str, str]:
    """OpenVINO CPU properties for one compile: the same keys Triton's OpenVINO backend sets from config.pbtxt."""
    if precision is not None and precision not in PRECISIONS:
        raise UserInputError(f"unknown OpenVINO precision '{precision}'", hint=f"valid: {', '.join(PRECISIONS)}")
    config = {"PERFORMANCE_HINT": hint}
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(int(threads))
    return config


class OpenVinoRunner(Runner):
    """Runs a model with OpenVINO on the CPU.

    Args:
        model: path to a .onnx file or an OpenVINO IR .xml (its .bin beside it).
        precision: "f32", "bf16", or None for the plugin's default.
        threads: INFERENCE_NUM_THREADS (None lets OpenVINO decide).
        static_shapes: compile per input shape (see the module docstring) instead of once for dynamic shapes.
        max_compiled: how many compiled shapes to keep.
    """

    name = "openvino"

    def __init__(self, model: str | Path, *, precision: str | None = None, threads: int | None = None,
                 static_shapes: bool = True, max_compiled: int = 8):
        super().__init__()
        self.model_path = Path(model)
        self.config = compile_config(precision, threads)
        self.precision = precision
        self.static_shapes = static_shapes
        self.max_compiled = max(1, int(max_compiled))
        self.core = self.model = None
        self.compiled: OrderedDict = OrderedDict()   # shape key -> (compiled model, infer request)
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.shapes: dict[str, list] = {}            # the model's own shapes, -1 where dynamic

    # ------------------------------------------------------------------------------------------ set-up
    def activate_impl(self) -> None:
        ov = load_openvino()
        if not self.model_path.is_file():
            raise UserInputError(f"model file '{self.model_path}' does not exist",
                                 hint="check the path, or export the model first")
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.model_path))
        except RuntimeError as exc:
            raise UserInputError(f"OpenVINO cannot read '{self.model_path}': {_first_line(exc)}",
                                 hint="pass an ONNX file or an OpenVINO IR model.xml") from None
        self.inputs = [p.get_any_name() for p in self.model.inputs]
        self.outputs = [p.get_any_name() for p in self.model.outputs]
        for port in [*self.model.inputs, *self.model.outputs]:
            self.dtypes[port.get_any_name()] = np.dtype(port.get_element_type().to_dtype())
            self.shapes[port.get_any_name()] = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
        if not self.static_shapes:
            self._compile(None)

    def deactivate_impl(self) -> None:
        self.compiled.clear()
        self.model = self.core = None

    @property
    def output_names(self) -> list[str]:
        return list(self.outputs)

    def _compile(self, shapes: dict[str, tuple[int, ...]] | None):
        key = None if shapes is None else tuple(sorted(shapes.items()))
        if key in self.compiled:
            self.compiled.move_to_end(key)
            return self.compiled[key]
        model = self.model
        if shapes is not None and any(-1 in self.shapes[n] for n in shapes):
            model = self.model.clone()   # reshape a copy: the original keeps its dynamic axes
            try:
                model.reshape({n: list(s) for n, s in shapes.items()})
            except RuntimeError as exc:
                raise UserInputError(f"OpenVINO cannot fix the input shapes to {dict(shapes)}: {_first_line(exc)}",
                                     hint="pass static_shapes=False to compile the dynamic graph") from None
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except RuntimeError as exc:
            raise UserInputError(f"OpenVINO could not compile '{self.model_path.name}' "
                                 f"({', '.join(f'{k}={v}' for k, v in self.config.items())}): {_first_line(exc)}",
                                 hint="try another --precision, or ONNX Runtime") from None
        entry = (compiled, compiled.create_infer_request())
        self.compiled[key] = entry
        while len(self.compiled) > self.max_compiled:
            self.compiled.popitem(last=False)
        return entry

    def compiled_precision(self) -> str:
        """The precision the plugin runs after the hint ('bf16', 'f32'), read from the last compiled model."""
        if not self.compiled:
            raise RuntimeError(f"{self.name}: nothing compiled yet; run infer() first")
        value = next(reversed(self.compiled.values()))[0].get_property("INFERENCE_PRECISION_HINT")
        return value.get_type_name() if hasattr(value, "get_type_name") else str(value)

    # -------------------------------------------------------------------------------------------- run
    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feed]
        extra = [n for n in feed if n not in self.inputs]
        if missing or extra:
            raise UserInputError(f"the model takes inputs {self.inputs}; missing {missing}, unexpected {extra}",
                                 hint="name every input the model takes, and only those")
        arrays = {}
        for name in self.inputs:
            array = np.ascontiguousarray(feed[name])
            if array.dtype != self.dtypes[name]:  # no silent casts, as for the other runners
                raise UserInputError(f"input '{name}' is {array.dtype}, the model expects {self.dtypes[name]}",
                                     hint=f"pass {self.dtypes[name]} data")
            arrays[name] = array
        shapes = {n: tuple(int(d) for d in a.shape) for n, a in arrays.items()} if self.static_shapes else None
        compiled, request = self._compile(shapes)
        try:
            result = request.infer(arrays)
        except RuntimeError as exc:
            raise UserInputError(f"OpenVINO failed to run the model: {_first_line(exc)}",
                                 hint="check the input shapes against the model, or use --backend ort") from None
        # The request reuses its output buffers on the next call: hand out copies.
        return {port.get_any_name(): np.array(result[port], copy=True) for port in compiled.outputs
                if port.get_any_name() in self.outputs}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # OpenVINO puts source locations first ("Exception from src/...:123:"); the message follows.
    useful = [line for line in lines if not line.startswith(("Exception from", "Check '"))] or lines or [""]
    return useful[0][:limit]


def serving_runner(path: str | Path, threads: int | None = None) -> OpenVinoRunner:
    """A runner for one served version, set up from its model's config.pbtxt the way Triton's OpenVINO backend
    reads it: `HINT_BF16: YES` -> bf16, `INFERENCE_NUM_THREADS` -> threads (the server's --threads wins).
    Without the hint it runs f32, the precision the entry was verified in (Triton would take the plugin's
    default, bf16 on AMX CPUs). Each served batch size gets its own compiled model (see the module docstring)."""
    from deploykit.serve.model_config import load_config

    path = Path(path)
    params = {}
    config_path = path.parent.parent / "config.pbtxt"
    if config_path.is_file():
        params = {k.upper(): v.string_value.strip().upper() for k, v in load_config(config_path).parameters.items()}
    precision = "bf16" if params.get("HINT_BF16") == "YES" else "f32"
    if not threads and params.get("INFERENCE_NUM_THREADS", "").isdigit():
        threads = int(params["INFERENCE_NUM_THREADS"])
    return OpenVinoRunner(path, precision=precision, threads=threads)
