"""Helpers for the serving tests: exporting a small repository, PyTorch references, a live server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from deploykit.serve.server import GRPC_LINE, METRICS_LINE, READY_LINE

REPO_ROOT = Path(__file__).resolve().parents[2]
SMALL_BODY_LIMIT = "1MiB"  # the shared server's --max-body-size, so 413 is cheap to provoke


def needs_serve_extra() -> None:
    """Skip the calling module when the serve extra (or the test extra's tritonclient) is missing."""
    for module in ("fastapi", "uvicorn", "tritonclient"):
        pytest.importorskip(module, reason="needs the serve and test extras: pip install -e '.[serve,test]'")


def export_model(out: Path, block: str, *, name: str | None = None, batch: str = "1:2:4", size: str = "14x14",
                 dynamic_hw: bool = False, precisions: tuple[str, ...] = ("fp32",)):
    """Export one block into `out` in-process, exactly as `deploykit export` does."""
    from deploykit.commands.export import build_config
    from deploykit.export.config import parse_config
    from deploykit.export.pipeline import run_export

    config = build_config(block, None, None, None, batch, size, dynamic_hw, precisions, None, False)
    if name:
        config = parse_config({**config.model_dump(mode="json"), "name": name}, f"test config {name}")
    status = run_export(config, out)
    assert status.passed, status.error
    return status


class Reference:
    """PyTorch outputs for any model of the repository, rebuilt from its manifest (deploykit.json)."""

    def __init__(self, repo: Path):
        self.repo = repo
        self._modules = {}

    def manifest(self, model: str, version: int = 1) -> dict:
        return json.loads((self.repo / model / str(version) / "deploykit.json").read_text())

    def config(self, model: str):
        from deploykit.export.config import parse_config

        return parse_config(self.manifest(model)["config"], f"{model} manifest")

    def outputs(self, model: str, x: np.ndarray) -> dict[str, np.ndarray]:
        from deploykit.export.source import build_modules
        from deploykit.export.verify import torch_outputs

        config = self.config(model)
        if model not in self._modules:
            self._modules[model] = build_modules(config).reference
        return torch_outputs(self._modules[model], x, [config.output_name])

    def tolerance(self, model: str):
        from deploykit.compare import Tolerance

        manifest = self.manifest(model)
        spec = self.config(model).tolerances[manifest["precision"]]
        return Tolerance(atol=spec.atol, rtol=spec.rtol)

    def assert_close(self, model: str, x: np.ndarray, actual: dict[str, np.ndarray]) -> None:
        from deploykit.compare import compare_outputs

        result = compare_outputs(self.outputs(model, x), actual, self.tolerance(model))
        assert result, f"{model}: served outputs differ from PyTorch: max abs {result.max_abs:.3g}"


class LiveServer:
    """`python -m deploykit serve REPO --port 0 --grpc-port 0 ARGS` in a subprocess; `url`/`address` (HTTP) and
    `grpc_address` once it is ready."""

    def __init__(self, repo: Path, *args: str, command: list[str] | None = None, cwd: Path | None = None,
                 log_dir: Path | None = None):
        self.command = command or [sys.executable, "-m", "deploykit", "serve", str(repo), "--port", "0",
                                    *(() if "--grpc-port" in args or "--no-grpc" in args else ("--grpc-port", "0")),
                                    *args]
        self.cwd = cwd or REPO_ROOT
        self.log_path = (log_dir or Path(os.environ.get("TMPDIR", "/tmp"))) / f"serve-{os.getpid()}-{id(self)}.log"
        self.proc: subprocess.Popen | None = None
        self.url = self.address = self.grpc_address = self.metrics_url = ""
        self.lines: list[str] = []

    def start(self, timeout: float = 90.0) -> "LiveServer":
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, start_new_session=True)
        ready = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))
                if line.startswith(GRPC_LINE):
                    self.grpc_address = line.split()[5]
                if line.startswith(METRICS_LINE):
                    self.metrics_url = line.split()[4]
                if line.startswith(READY_LINE):
                    self.url = line.split()[4]
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"server did not start (exit {self.proc.returncode}):\n{self.log()}")
        self.address = self.url.removeprefix("http://")
        return self

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # only the process this fixture started
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def make_input(shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
