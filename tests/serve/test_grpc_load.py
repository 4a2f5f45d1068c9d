"""A bounded gRPC load test: 8 Triton gRPC clients for a fixed 3 s against the live server on 127.0.0.1.

Zero errors and zero wrong answers (each response is compared bit for bit with a local ONNX Runtime
session's output for the client's own input); the server's statistics must count exactly the requests
answered. Loops are bounded in time and in count.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.serve.helpers import make_input, needs_serve_extra

needs_serve_extra()
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (test extra)")

CLIENTS = 8
DURATION_S = 3.0
MAX_REQUESTS_PER_CLIENT = 2000


def test_concurrent_grpc_load_has_no_errors_and_is_counted(server, model_repo, capsys):
    from deploykit.backends.ort import OrtRunner

    inputs = [make_input((1, 64, 14, 14), seed=700 + i) for i in range(CLIENTS)]
    with OrtRunner(model_repo / "se" / "1" / "model.onnx") as runner:
        expected = [runner.infer({"input": x})["output"] for x in inputs]
    probe = grpcclient.InferenceServerClient(server.grpc_address)
    before = probe.get_inference_statistics("se", as_json=True)["model_stats"][0]

    done = [0] * CLIENTS
    errors: list[str] = []
    start = threading.Barrier(CLIENTS + 1)
    stop_at = [0.0]

    def client_loop(i: int) -> None:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput("input", list(inputs[i].shape), "FP32")
        tensor.set_data_from_numpy(inputs[i])
        start.wait(30)
        try:
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                if time.perf_counter() >= stop_at[0]:
                    break
                try:
                    y = client.infer("se", [tensor], client_timeout=30).as_numpy("output")
                except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                    errors.append(f"client {i}: {type(exc).__name__}: {exc}")
                    continue
                done[i] += 1
                if not np.array_equal(y, expected[i]):
                    errors.append(f"client {i}: wrong output")
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
    assert all(n > 0 for n in done), done

    after = probe.get_inference_statistics("se", as_json=True)["model_stats"][0]
    probe.close()
    # protobuf's JSON form leaves out zero counts and writes uint64 as strings.
    count = lambda entry: int(entry["inference_stats"].get("success", {}).get("count", 0))  # noqa: E731
    success = count(after) - count(before)
    assert success == sum(done)
    with capsys.disabled():
        print(f"\ngrpc load: {CLIENTS} clients x {DURATION_S:.0f} s, {sum(done)} requests, 0 errors, "
              f"{sum(done) / elapsed:.0f} req/s")
