"""A bounded gRPC load test: 8 Triton gRPC clients for a fixed 3 s against the live server on 127.0.0.1.

Zero errors and zero wrong answers (each response is compared bit for bit with a local ONNX Runtime
session's output for the client's own input); the server's statistics must count exactly the requests
answered. Loops are bounded in time and in count.
"""

from __future__ import annotations

import pytest

from tests.serve.helpers import bounded_load, make_input, needs_serve_extra

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

    def make_caller(i: int):
        client = grpcclient.InferenceServerClient(server.grpc_address)
        tensor = grpcclient.InferInput("input", list(inputs[i].shape), "FP32")
        tensor.set_data_from_numpy(inputs[i])
        return (lambda: client.infer("se", [tensor], client_timeout=30).as_numpy("output")), client.close

    run = bounded_load(make_caller, expected, duration_s=DURATION_S, max_requests=MAX_REQUESTS_PER_CLIENT)
    done, elapsed = run.answered, run.elapsed
    assert run.errors == [], run.errors[:5]
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
