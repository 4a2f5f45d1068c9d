"""Dynamic batching in a live server: concurrent clients are merged into fewer executions, and every client
still gets the outputs of its own input (compared with PyTorch), also when spatial sizes differ."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.serve.helpers import LiveServer, make_input, needs_serve_extra

needs_serve_extra()
import tritonclient.http as httpclient  # noqa: E402


@pytest.fixture(scope="module")
def batching_server(model_repo, tmp_path_factory):
    live = LiveServer(model_repo, "--batching", "on", "--max-queue-delay-us", "20000",
                      log_dir=tmp_path_factory.mktemp("batching-logs"))
    live.start()
    yield live
    assert live.stop() == 0, live.log()


def run_clients(server, jobs):
    """Each job (model, x) on its own client thread, all at once; returns the outputs in job order."""
    def one(job):
        model, x = job
        client = httpclient.InferenceServerClient(server.address, network_timeout=60)
        try:
            tensor = httpclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return client.infer(model, [tensor]).as_numpy("output")
        finally:
            client.close()

    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(one, jobs))


def stats(server, model):
    client = httpclient.InferenceServerClient(server.address)
    try:
        return client.get_inference_statistics(model)["model_stats"][0]
    finally:
        client.close()


def test_concurrent_requests_share_executions_and_get_their_own_outputs(batching_server, reference):
    assert "dynamic batching up to 4" in batching_server.log()
    before = stats(batching_server, "se")
    jobs = [("se", make_input((1, 64, 14, 14), seed=100 + i)) for i in range(16)]
    outputs = run_clients(batching_server, jobs)
    for (model, x), y in zip(jobs, outputs):
        reference.assert_close(model, x, {"output": y})
    after = stats(batching_server, "se")
    samples = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert samples == 16
    assert executions < samples, after["batch_stats"]  # some requests were merged
    assert max(b["batch_size"] for b in after["batch_stats"]) > 1
    assert max(b["batch_size"] for b in after["batch_stats"]) <= 4  # max_batch_size of se


def test_requests_of_different_sizes_are_not_mixed(batching_server, reference):
    sizes = [(14, 14), (9, 21), (14, 14), (21, 9), (9, 21), (14, 14), (16, 16), (9, 21)]
    jobs = [("sam", make_input((1, 64, h, w), seed=200 + i)) for i, (h, w) in enumerate(sizes)]
    outputs = run_clients(batching_server, jobs)
    for (model, x), y in zip(jobs, outputs):
        assert y.shape == x.shape
        reference.assert_close(model, x, {"output": y})


def test_mixed_batch_sizes_are_split_back_correctly(batching_server, reference):
    jobs = [("se", make_input((n, 64, 14, 14), seed=300 + i)) for i, n in enumerate([1, 2, 3, 1, 2, 1, 4, 2])]
    outputs = run_clients(batching_server, jobs)
    for (model, x), y in zip(jobs, outputs):
        assert y.shape == x.shape
        reference.assert_close(model, x, {"output": y})
