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


class LoadRun:
    """What `bounded_load` saw: per-client latencies (s) of the requests answered, failures, wall time."""

    def __init__(self, clients: int):
        self.latencies: list[list[float]] = [[] for _ in range(clients)]
        self.errors: list[str] = []
        self.elapsed = 0.0

    @property
    def answered(self) -> list[int]:
        return [len(per) for per in self.latencies]


def bounded_load(make_caller, expected: list[np.ndarray], *, duration_s: float = 3.0,
                 max_requests: int = 2000) -> LoadRun:
    """One thread per entry of `expected`, all started together, each sending requests for `duration_s`
    (and at most `max_requests`); bounded in time and in count.

    `make_caller(i)`, called in client i's thread, returns `(call, close)`: `call()` sends one request and
    returns its output array, compared bit for bit with `expected[i]`; `close()` releases the client.
    Every exception and wrong answer is recorded in `errors`; the caller asserts on the run.
    """
    run = LoadRun(len(expected))
    start = threading.Barrier(len(expected) + 1)
    stop_at = [0.0]

    def client_loop(i: int) -> None:
        call, close = make_caller(i)
        start.wait(30)
        try:
            for _ in range(max_requests):
                if time.perf_counter() >= stop_at[0]:
                    break
                t0 = time.perf_counter()
                try:
                    y = call()
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    run.errors.append(f"client {i}: {type(exc).__name__}: {exc}")
                    continue
                run.latencies[i].append(time.perf_counter() - t0)
                if not np.array_equal(y, expected[i]):
                    run.errors.append(f"client {i}: wrong output (max abs {np.abs(y - expected[i]).max():.3g})")
        finally:
            close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(len(expected))]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + duration_s
    start.wait(30)
    began = time.perf_counter()
    for t in threads:
        t.join(duration_s + 60)
    run.elapsed = time.perf_counter() - began
    assert not any(t.is_alive() for t in threads), "a client hung"
    return run
