"""ONNX Runtime runner (CPU by default; CUDA when onnxruntime-gpu is installed and asked for)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from deploykit.backends.base import Runner
from deploykit.errors import require

ORT_DTYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


class OrtRunner(Runner):
    """Runs an ONNX file (path) or serialized model (bytes) in an InferenceSession.

    Args:
        model: path to a .onnx file, or its bytes.
        providers: execution providers in order of preference; CPU when None.
        threads: intra-op threads (None lets ONNX Runtime decide).
        spinning: let the intra-op threads spin waiting for the next run (ONNX Runtime's default). Off, they
            sleep between runs: a server or an interleaved comparison then keeps the cores its other work
            needs (on 2 cores the served time per request halved, and OpenVINO timed beside a spinning
            session measured 20-50x slower).
    """

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, providers: list[str] | None = None, threads: int | None = None,
                 optimization: str = "all", spinning: bool = True):
        super().__init__()
        self.model = model
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads
        self.optimization = optimization
        self.spinning = spinning
        self.session = None

    def activate_impl(self) -> None:
        ort = require("onnxruntime", purpose="running ONNX models")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.optimization == "none":
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if not self.spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        source = self.model if isinstance(self.model, bytes) else str(self.model)
        self.session = ort.InferenceSession(source, sess_options=options, providers=self.providers)

    def deactivate_impl(self) -> None:
        self.session = None

    @property
    def input_specs(self) -> list:
        return self.session.get_inputs()

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.session.get_outputs()]

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, dict(feed))
        return dict(zip(self.output_names, outputs))
