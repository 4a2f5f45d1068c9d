"""TensorRT runner: a plan file (or its bytes) run with `execute_async_v3`, PyTorch tensors as device buffers.

No pycuda: inputs are copied to the GPU as torch tensors, outputs are allocated as torch tensors, their
`data_ptr()`s are bound with `set_tensor_address`, and the engine runs on torch's current CUDA stream.
Shapes are set per call; with several optimization profiles the runner picks the first whose ranges hold
the call's input shapes (or the one it is told to use) and switches the context to it.

`trt` and `buffers` are parameters so the API conformance tests can run every line here against the real
TensorRT bindings (autospec'd objects) with CPU tensors standing in for GPU memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from deploykit.backends.base import Runner
from deploykit.errors import CheckFailed, MissingDependency, UserInputError
from deploykit.trt.capabilities import INSTALL_HINT, load_tensorrt


class TorchBuffers:
    """Device memory and the stream as PyTorch sees them.

    Args:
        device: "cuda", "cuda:1", ...; the conformance tests use "cpu", where the stream handle is 0 and
            nothing runs asynchronously.
    """

    def __init__(self, device: str = "cuda"):
        self.device_name = device
        self.torch = None
        self.device = None

    def activate(self) -> None:
        try:
            import torch
        except ImportError as exc:  # the trt extra brings torch; the base install does not
            raise MissingDependency(f"PyTorch is needed for TensorRT device buffers: {exc}",
                                    hint="install it with: pip install 'deploykit[trt]'") from exc
        self.torch = torch
        self.device = torch.device(self.device_name)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise MissingDependency(
                "no CUDA GPU is visible to PyTorch; running a TensorRT engine needs one and a CUDA build of torch", hint=INSTALL_HINT)

    def to_device(self, array: np.ndarray):
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # torch.from_numpy warns on read-only arrays
            array = array.copy()
        return self.torch.from_numpy(array).to(self.device)

    def empty(self, shape: tuple[int, ...], dtype: np.dtype):
        torch_dtype = self.torch.from_numpy(np.empty(0, dtype=dtype)).dtype
        return self.torch.empty(tuple(shape), dtype=torch_dtype, device=self.device)

    @staticmethod
    def address(tensor) -> int:
        return int(tensor.data_ptr())

    def stream_handle(self) -> int:
        if self.device.type != "cuda":
            return 0
        return int(self.torch.cuda.current_stream(self.device).cuda_stream)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.current_stream(self.device).synchronize()

    @staticmethod
    def to_numpy(tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()


class TrtRunner(Runner):
    """Runs a TensorRT plan.

    Args:
        plan: path to a plan file (model.plan) or the serialized engine's bytes.
        profile: optimization profile index to use for every call; None picks per call the first profile
            whose ranges hold the input shapes.
        trt: the tensorrt module (None imports it).
        buffers: device memory provider (None: TorchBuffers("cuda")).
    """

    name = "tensorrt"

    def __init__(self, plan: str | Path | bytes, *, profile: int | None = None, trt=None, buffers=None):
        super().__init__()
        self.plan = plan
        self.fixed_profile = profile
        self._trt = trt
        self.buffers = buffers or TorchBuffers("cuda")
        self.engine = self.context = self.runtime = self.logger = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.profile_ranges: list[dict[str, tuple[tuple[int, ...], ...]]] = []
        self.current_profile = 0

    # ------------------------------------------------------------------------------------------ set-up
    def activate_impl(self) -> None:
        from deploykit.trt.builder import make_logger

        trt = self._trt or load_tensorrt(purpose="running a TensorRT engine")
        self.buffers.activate()
        data = self.plan if isinstance(self.plan, (bytes, bytearray, memoryview)) else Path(self.plan).read_bytes()
        self.logger = make_logger(trt)
        self.runtime = trt.Runtime(self.logger)
        engine = self.runtime.deserialize_cuda_engine(bytes(data))
        if engine is None:
            raise UserInputError(
                "TensorRT could not load the engine" + self._log_tail(),
                hint="a plan only runs with the TensorRT version and GPU model it was built with; rebuild it here",
            )
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise CheckFailed("TensorRT could not create an execution context" + self._log_tail())
        self.inputs, self.outputs = [], []
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(tensor)
            if mode == trt.TensorIOMode.INPUT:
                self.inputs.append(tensor)
            elif mode == trt.TensorIOMode.OUTPUT:
                self.outputs.append(tensor)
            trt_dtype = engine.get_tensor_dtype(tensor)
            try:
                self.dtypes[tensor] = np.dtype(trt.nptype(trt_dtype))
            except TypeError:
                raise UserInputError(f"tensor '{tensor}' has type {getattr(trt_dtype, 'name', trt_dtype)}, "
                                     f"which numpy cannot hold; the runner supports fp32/fp16/int/bool I/O",
                                     hint="export the model with fp32, fp16, int or bool inputs and outputs") from None
        self.profile_ranges = [
            {name: tuple(tuple(int(d) for d in dims) for dims in engine.get_tensor_profile_shape(name, p))
             for name in self.inputs}
            for p in range(engine.num_optimization_profiles)
        ]
        if self.fixed_profile is not None and not 0 <= self.fixed_profile < len(self.profile_ranges):
            raise UserInputError(f"profile {self.fixed_profile} does not exist; the engine has "
                                 f"{len(self.profile_ranges)} optimization profiles",
                                 hint="pick a profile index below that number")
        self.current_profile = 0
        if self.fixed_profile:
            self._switch_profile(self.fixed_profile)

    def deactivate_impl(self) -> None:
        # The context must go before the engine, and the engine before the runtime.
        self.context = None
        self.engine = None
        self.runtime = None

    # -------------------------------------------------------------------------------------------- run
    def _log_tail(self) -> str:
        errors = self.logger.errors() if self.logger is not None else []
        return f"; TensorRT said: {errors[-1]}" if errors else ""

    def _switch_profile(self, index: int) -> None:
        if not self.context.set_optimization_profile_async(index, self.buffers.stream_handle()):
            raise CheckFailed(f"TensorRT could not switch to optimization profile {index}" + self._log_tail())
        self.current_profile = index

    def _profile_for(self, shapes: Mapping[str, tuple[int, ...]]) -> int:
        def fits(p: int) -> bool:
            return all(len(shapes[n]) == len(r[0]) and all(lo <= s <= hi for lo, s, hi in zip(r[0], shapes[n], r[2]))
                       for n, r in self.profile_ranges[p].items())

        candidates = [self.fixed_profile] if self.fixed_profile is not None else range(len(self.profile_ranges))
        for p in candidates:
            if fits(p):
                return p
        ranges = "; ".join(
            f"profile {p}: " + ", ".join(f"{n} {'x'.join(map(str, r[0]))}..{'x'.join(map(str, r[2]))}"
                                         for n, r in self.profile_ranges[p].items())
            for p in candidates)
        given = ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in shapes.items())
        raise UserInputError(f"input shapes {given} are outside the engine's optimization profiles: {ranges}",
                             hint="rebuild with a --profile that covers them")

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.inputs if n not in feed]
        extra = [n for n in feed if n not in self.inputs]
        if missing or extra:
            raise UserInputError(f"the engine takes inputs {self.inputs}; missing {missing}, unexpected {extra}",
                                 hint="feed exactly the engine's inputs by name")
        arrays = {}
        for name in self.inputs:
            array = np.asarray(feed[name])
            if array.dtype != self.dtypes[name]:  # no silent casts: the caller decides about precision
                raise UserInputError(f"input '{name}' is {array.dtype}, the engine expects {self.dtypes[name]}",
                                     hint="cast the input to the engine's type")
            arrays[name] = array
        profile = self._profile_for({n: tuple(a.shape) for n, a in arrays.items()})
        if profile != self.current_profile:
            self._switch_profile(profile)

        context, buffers = self.context, self.buffers
        keep_alive = []
        for name, array in arrays.items():
            if not context.set_input_shape(name, tuple(int(d) for d in array.shape)):
                raise UserInputError(f"TensorRT rejected shape {array.shape} for input '{name}'" + self._log_tail(),
                                     hint="feed a shape inside the engine's optimization profile")
            device_tensor = buffers.to_device(array)
            keep_alive.append(device_tensor)
            context.set_tensor_address(name, buffers.address(device_tensor))
        results = {}
        for name in self.outputs:
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise CheckFailed(f"output '{name}' has a data-dependent shape {shape}, "
                                  "which this runner does not support")
            results[name] = buffers.empty(shape, self.dtypes[name])
            context.set_tensor_address(name, buffers.address(results[name]))
        if not context.execute_async_v3(buffers.stream_handle()):
            raise CheckFailed("TensorRT failed to run the engine" + self._log_tail())
        buffers.synchronize()
        return {name: buffers.to_numpy(tensor) for name, tensor in results.items()}
