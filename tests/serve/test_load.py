"""A bounded load test: 8 tritonclient clients for a fixed 3 s against the live server on 127.0.0.1.

Zero errors and zero wrong answers are required (each client checks every response against a local ONNX
Runtime session's output for its own input, bit for bit: binary tensors are lossless); p50/p99 latency
and throughput are printed. Loops are bounded in time and in count.
"""

from __future__ import annotations

import numpy as np

from tests.serve.helpers import bounded_load, make_input, needs_serve_extra

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

    def make_caller(i: int):
        client = httpclient.InferenceServerClient(server.address, network_timeout=30)
        tensor = httpclient.InferInput("input", list(inputs[i].shape), "FP32")
        tensor.set_data_from_numpy(inputs[i])
        return (lambda: client.infer("se", [tensor]).as_numpy("output")), client.close

    run = bounded_load(make_caller, expected, duration_s=DURATION_S, max_requests=MAX_REQUESTS_PER_CLIENT)
    latencies, errors, elapsed = run.latencies, run.errors, run.elapsed
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
