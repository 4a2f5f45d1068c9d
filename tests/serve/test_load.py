"""A bounded load test: 8 tritonclient clients for a fixed 3 s against the live server on 127.0.0.1.

Zero errors and zero wrong answers are required (each client checks every response against a local ONNX
Runtime session's output for its own input, bit for bit: binary tensors are lossless); p50/p99 latency
and throughput are printed. Loops are bounded in time and in count.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from tests.serve.helpers import make_input, needs_serve_extra

needs_serve_extra()
import tritonclient.http as httpclient  # noqa: E402

CLIENTS = 8
DURATION_S = 3.0
MAX_REQUESTS_PER_CLIENT = 2000


def test_concurrent_load_has_no_errors(server, model_repo, capsys, record_property):
    from deploykit.backends.ort import OrtRunner

    inputs = [make_input((1, 64, 14, 14), seed=500 + i) for i in range(CLIENTS)]
    with OrtRunner(model_repo / "se" / "1" / "model.onnx") as runner:
        expected = [runner.infer({"input": x})["output"] for x in inputs]

    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    errors: list[str] = []
    start = threading.Barrier(CLIENTS + 1)
    stop_at = [0.0]

    def client_loop(i: int) -> None:
        client = httpclient.InferenceServerClient(server.address, network_timeout=30)
        tensor = httpclient.InferInput("input", list(inputs[i].shape), "FP32")
        tensor.set_data_from_numpy(inputs[i])
        start.wait(30)
        try:
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if time.perf_counter() >= stop_at[0]:
                    break
                t0 = time.perf_counter()
                try:
                    y = client.infer("se", [tensor]).as_numpy("output")
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    errors.append(f"client {i}: {type(exc).__name__}: {exc}")
                    continue
                latencies[i].append(time.perf_counter() - t0)
                if not np.array_equal(y, expected[i]):
                    errors.append(f"client {i}: wrong output (max abs {np.abs(y - expected[i]).max():.3g})")
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + DURATION_S
    start.wait(30)
    began = time.perf_counter()
    for t in threads:
        t.join(DURATION_S + 60)
    elapsed = time.perf_counter() - began
    assert not any(t.is_alive() for t in threads), "a client hung"

    assert errors == [], errors[:5]
    every = np.array([x for per in latencies for x in per]) * 1000
    assert all(len(per) > 0 for per in latencies), [len(per) for per in latencies]
    p50, p99 = np.percentile(every, 50), np.percentile(every, 99)
    throughput = len(every) / elapsed
    for key, value in (("requests", len(every)), ("p50_ms", p50), ("p99_ms", p99), ("req_per_s", throughput)):
        record_property(key, round(float(value), 3))
    with capsys.disabled():
        print(f"\nload: {CLIENTS} clients x {DURATION_S:.0f} s, {len(every)} requests, 0 errors, "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, {throughput:.0f} req/s")
    assert p99 < 5000  # nothing starved: every request answered well inside the client timeout
