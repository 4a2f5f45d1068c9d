"""Calibration data for INT8: real inputs from a .npz file or a directory of .npz/.npy files.

Static INT8 quantization fixes one scale per activation from the ranges the calibration inputs produce;
inputs unlike the deployed data give scales that clip or waste the 256 levels. Without calibration data the
export falls back to seeded random inputs and says loudly that the result is calibrated on nothing real.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deploykit.errors import UserInputError

RANDOM_WARNING = ("INT8 calibrated on RANDOM inputs: the activation ranges come from noise, not from your data, "
                  "so accuracy on real inputs is unknown; pass --calibration DIR|FILE.npz with real inputs")
# Batches above this are split: ONNX Runtime's calibrator keeps every intermediate tensor of a batch.
MAX_CALIBRATION_BATCH = 16


@dataclass
class Calibration:
    batches: list[np.ndarray]
    source: str          # the file or directory, or "random"
    samples: int

    @property
    def random(self) -> bool:
        return self.source == "random"


def load_calibration(path: str | Path, input_name: str, channels: int, min_hw: tuple[int, int] | None = None
                     ) -> Calibration:
    """Read NCHW float32 samples: each .npz holds an array named like the input (or exactly one array), each
    .npy one array; a 3-D array is one sample."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npz", ".npy") and p.is_file())
        if not files:
            raise UserInputError(f"calibration directory '{path}' has no .npz or .npy files",
                                 hint="save real inputs with numpy.save / numpy.savez")
    elif path.is_file():
        files = [path]
    else:
        raise UserInputError(f"calibration data '{path}' does not exist", hint="pass a .npz file or a directory")
    arrays = []
    for f in files:
        arrays.append(_read(f, input_name))
    batches = []
    for f, a in zip(files, arrays):
        a = np.asarray(a)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1] != channels:
            raise UserInputError(f"calibration array in '{f}' has shape {list(a.shape)}; "
                                 f"expected N x {channels} x H x W",
                                 hint="store the model's own input layout (NCHW)")
        if not np.issubdtype(a.dtype, np.floating) or not np.isfinite(a).all():
            raise UserInputError(f"calibration array in '{f}' is not finite floating-point data",
                                 hint="store float32 inputs as the model receives them")
        a = a.astype(np.float32, copy=False)
        batches += [a[i:i + MAX_CALIBRATION_BATCH] for i in range(0, len(a), MAX_CALIBRATION_BATCH)]
    return Calibration(batches, str(path), sum(len(b) for b in batches))


def _read(f: Path, input_name: str) -> np.ndarray:
    try:
        if f.suffix == ".npy":
            return np.load(f, allow_pickle=False)
        with np.load(f, allow_pickle=False) as data:
            names = list(data.keys())
            if input_name in names:
                return data[input_name]
            if len(names) == 1:
                return data[names[0]]
    except (OSError, ValueError) as exc:
        raise UserInputError(f"cannot read calibration file '{f}': {exc}",
                             hint="pass a readable .npy/.npz file or a folder of them") from None
    raise UserInputError(f"calibration file '{f}' holds {names}, none named '{input_name}'",
                         hint=f"name the array '{input_name}' or store exactly one array")


def random_calibration(shape: tuple[int, ...], seed: int, batches: int = 4) -> Calibration:
    rng = np.random.default_rng(seed)
    data = [rng.standard_normal(shape, dtype=np.float32) for _ in range(batches)]
    return Calibration(data, "random", sum(len(b) for b in data))


class Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over the batches."""

    def __init__(self, calibration: Calibration, input_name: str):
        self.batches = calibration.batches
        self.input_name = input_name
        self.index = 0

    def get_next(self):
        if self.index >= len(self.batches):
            return None
        self.index += 1
        return {self.input_name: self.batches[self.index - 1]}

    def rewind(self):
        self.index = 0
