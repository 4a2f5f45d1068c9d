"""What the installed TensorRT offers, what GPU is there, and the one-line error when either is missing.

Features are detected on the real API objects (`hasattr(trt.BuilderFlag, "FP16")`), so a TensorRT that
drops or adds a member is handled by what it has, not by what its version string suggests.
"""

from __future__ import annotations

import ctypes
from dataclasses import asdict, dataclass

from deploykit.errors import MissingDependency

# Shown whenever TensorRT or a GPU is missing; the README's "TensorRT" section says the same.
INSTALL_HINT = (
    "install TensorRT with: pip install 'deploykit[trt]' on a machine with an NVIDIA GPU and driver, "
    "or run deploykit inside NVIDIA's TensorRT container (nvcr.io/nvidia/tensorrt)"
)

# CUdevice_attribute values of the CUDA driver API (stable since CUDA 6).
_CU_ATTR_CC_MAJOR = 75
_CU_ATTR_CC_MINOR = 76


@dataclass(frozen=True)
class TrtCapabilities:
    """The parts of the TensorRT Python API that the build and run paths branch on.

    Attributes:
        version: `tensorrt.__version__`, recorded in the sidecar (never used to branch).
        fp16_flag: `BuilderFlag.FP16` exists (10.x; removed in 11.x).
        int8_flag: `BuilderFlag.INT8` exists (10.x; removed in 11.x).
        strongly_typed: `NetworkDefinitionCreationFlag.STRONGLY_TYPED` exists (10.x and 11.x).
        optimization_level: `IBuilderConfig.builder_optimization_level` exists.
        parser_error_node_name: `ParserError.node_name()` exists (else only the node index is known).
    """

    version: str
    fp16_flag: bool
    int8_flag: bool
    strongly_typed: bool
    optimization_level: bool
    parser_error_node_name: bool

    def as_dict(self) -> dict:
        return asdict(self)


def detect(trt) -> TrtCapabilities:
    """Feature-detect the TensorRT API of the module `trt` (the real `tensorrt` or the bindings)."""
    return TrtCapabilities(
        version=str(getattr(trt, "__version__", "unknown")),
        fp16_flag=hasattr(trt.BuilderFlag, "FP16"),
        int8_flag=hasattr(trt.BuilderFlag, "INT8"),
        strongly_typed=hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"),
        optimization_level=hasattr(trt.IBuilderConfig, "builder_optimization_level"),
        parser_error_node_name=hasattr(trt.ParserError, "node_name"),
    )


@dataclass(frozen=True)
class GpuInfo:
    """The GPU an engine is built for: plans only run on the compute capability they were built for."""

    name: str
    compute_capability: str  # "9.0"
    index: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def import_tensorrt():
    """Import `tensorrt`; returns (module, None) or (None, why it failed in a few words)."""
    try:
        import tensorrt  # noqa: PLC0415 - optional, heavy, and absent on most machines
    except ModuleNotFoundError as exc:
        return None, str(exc)
    except (ImportError, OSError) as exc:  # the bindings failing to load libnvinfer or a CUDA library
        return None, f"{exc.__class__.__name__}: {exc}"
    return tensorrt, None


def cuda_device(index: int = 0) -> tuple[GpuInfo | None, str | None]:
    """Ask the CUDA driver (libcuda, no torch needed) for GPU `index`; returns (info, None) or (None, why)."""
    lib = None
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return None, "no NVIDIA driver (libcuda) found"
    if lib.cuInit(0) != 0:
        return None, "the NVIDIA driver is present but CUDA failed to initialise (no usable GPU?)"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= index:
        return None, f"no CUDA GPU with index {index} (found {count.value})"
    device = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(name, 256, device)
    major, minor = ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), _CU_ATTR_CC_MAJOR, device)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), _CU_ATTR_CC_MINOR, device)
    return GpuInfo(name.value.decode(errors="replace"), f"{major.value}.{minor.value}", index), None


def require_build_environment(*, purpose: str = "building a TensorRT engine"):
    """TensorRT and a GPU, or one MissingDependency naming everything that is missing.

    Returns:
        (tensorrt module, GpuInfo).
    """
    trt, trt_problem = import_tensorrt()
    gpu, gpu_problem = cuda_device()
    missing = []
    if trt is None:
        missing.append(f"TensorRT is not installed ({trt_problem})")
    if gpu is None:
        missing.append(f"no CUDA GPU is visible ({gpu_problem})")
    if missing:
        raise MissingDependency(f"{' and '.join(missing)}; {purpose} needs TensorRT and an NVIDIA GPU",
                                hint=INSTALL_HINT)
    return trt, gpu


def load_tensorrt(*, purpose: str = "running a TensorRT engine"):
    """The `tensorrt` module, or MissingDependency with the install hint."""
    trt, problem = import_tensorrt()
    if trt is None:
        raise MissingDependency(f"TensorRT is not installed ({problem}); {purpose} needs it", hint=INSTALL_HINT)
    return trt
