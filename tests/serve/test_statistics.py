"""Statistics in Triton's shape and with the rules Triton's own tools apply to them.

The rules come from perf_analyzer's reading of the statistics (inference_profiler.cc): the compute_input,
compute_infer and compute_output counts must be equal (else it stops with "Server side statistics compute
counts must be the same"), averages are durations / counts, and the request's average minus queue and
compute is its overhead (clamped at 0, so the parts must not exceed the whole). The shape is checked by
parsing the JSON into Triton's own `ModelStatistics` protobuf message (tritonclient.grpc.service_pb2),
which refuses any unknown field or wrong type.
"""

from __future__ import annotations

import asyncio
import types

import numpy as np
import pytest

from deploykit.serve.inference import accounted
from deploykit.serve.protocol import ProtocolError
from deploykit.serve.scheduler import Scheduler
from deploykit.serve.statistics import Stats
from tests.serve.helpers import make_input, needs_serve_extra
from tests.serve.test_scheduler import FakeModel, expected, sample

COMPUTE = ("compute_input", "compute_infer", "compute_output")


def perf_analyzer_summary(before: dict, after: dict) -> dict:
    """What perf_analyzer derives from two snapshots of one model_stats entry, with its checks."""
    def delta(path):
        a, b = after, before
        for key in path:
            a, b = a[key], b[key]
        return a - b

    s = {k: delta(("inference_stats", k, "count")) for k in ("success", "queue", *COMPUTE)}
    ns = {k: delta(("inference_stats", k, "ns")) for k in ("success", "queue", *COMPUTE)}
    if not s["compute_input"] == s["compute_infer"] == s["compute_output"]:
        raise AssertionError("Server side statistics compute counts must be the same.")
    count = s["success"]
    compute_ns = sum(ns[k] for k in COMPUTE)
    return {"count": count, "queue_count": s["queue"], "compute_count": s["compute_infer"],
            "avg_request_ns": ns["success"] / count, "avg_queue_ns": ns["queue"] / s["queue"],
            "avg_compute_ns": compute_ns / s["compute_infer"],
            "overhead_ns": ns["success"] / count - ns["queue"] / s["queue"] - compute_ns / s["compute_infer"],
            "inference_count": delta(("inference_count",)), "execution_count": delta(("execution_count",))}


def check_shape_against_triton(entry: dict) -> None:
    """The entry parses as Triton's ModelStatistics message (unknown fields or wrong types are refused)."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="needs tritonclient[grpc]")
    from google.protobuf import json_format

    message = json_format.ParseDict(entry, service_pb2.ModelStatistics())
    # Every field Triton's message has is present in the JSON (an empty list or map included).
    assert set(entry) == set(service_pb2.ModelStatistics.DESCRIPTOR.fields_by_name)
    assert set(entry["inference_stats"]) == set(service_pb2.InferStatistics.DESCRIPTOR.fields_by_name)
    for stats in entry["response_stats"].values():
        assert set(stats) == set(service_pb2.InferResponseStatistics.DESCRIPTOR.fields_by_name)
    assert message.name == entry["name"] and message.version == entry["version"]


def check_triton_rules(entry: dict) -> None:
    """The invariants Triton's statistics keep, on one snapshot."""
    inf = entry["inference_stats"]
    assert inf["success"]["count"] == inf["queue"]["count"] == inf["compute_input"]["count"] \
        == inf["compute_infer"]["count"] == inf["compute_output"]["count"]
    assert inf["success"]["ns"] >= inf["queue"]["ns"] + sum(inf[k]["ns"] for k in COMPUTE)
    assert inf["cache_hit"] == inf["cache_miss"] == {"count": 0, "ns": 0}
    batches = entry["batch_stats"]
    assert sum(b["compute_infer"]["count"] for b in batches) == entry["execution_count"]
    assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == entry["inference_count"]
    for b in batches:
        assert b["compute_input"]["count"] == b["compute_infer"]["count"] == b["compute_output"]["count"]
    if inf["success"]["count"]:
        response = entry["response_stats"]["0"]
        assert response["success"]["count"] == inf["success"]["count"]
        assert response["success"]["ns"] == response["compute_infer"]["ns"] + response["compute_output"]["ns"]
        assert response["compute_infer"]["ns"] == inf["compute_input"]["ns"] + inf["compute_infer"]["ns"]
    int(entry["version"])  # perf_analyzer reads the version with std::stoll


# ---------------------------------------------------------------------------------------- in-process
def test_batched_requests_each_count_once_with_their_execution_compute_times():
    model = FakeModel(delay_s=0.03)
    scheduler = Scheduler(model, batching=True, max_batch=8, max_delay_s=0.0)
    mv = types.SimpleNamespace(stats=scheduler.stats)
    inputs = [sample(1, i) for i in range(12)]

    async def one(x):
        with accounted(mv) as outcome:
            outputs, outcome.timing = await scheduler.submit({"x": x}, 1)
        return outputs

    async def scenario():
        scheduler.start()
        try:
            return await asyncio.gather(*(one(x) for x in inputs))
        finally:
            await scheduler.stop(5)

    results = asyncio.run(scenario())
    for x, out in zip(inputs, results):
        np.testing.assert_allclose(out["y"], expected(x), rtol=1e-6)
    entry = scheduler.stats.as_dict("fake", "1")
    check_triton_rules(entry)
    check_shape_against_triton(entry)
    inf = entry["inference_stats"]
    assert inf["success"]["count"] == 12 and entry["inference_count"] == 12
    assert entry["execution_count"] == len(model.batches) < 12   # merged
    # Each request is charged its whole execution's infer time (>= the model's 30 ms sleep), as in Triton.
    assert inf["compute_infer"]["ns"] >= 12 * 0.03e9
    per_batch = {b["batch_size"]: b for b in entry["batch_stats"]}
    assert sorted(per_batch) == sorted({shape[0] for shape in model.batches})
    assert entry["last_inference"] > 0


def test_failures_count_alone_with_their_reason():
    stats = Stats()
    mv = types.SimpleNamespace(stats=stats)
    for status in (400, 503, 500):
        with pytest.raises(ProtocolError):
            with accounted(mv):
                raise ProtocolError("no", status=status)
    entry = stats.as_dict("m", "1")
    assert entry["inference_stats"]["fail"]["count"] == 3
    assert entry["inference_stats"]["success"]["count"] == entry["inference_stats"]["queue"]["count"] == 0
    assert stats.failures == {"REJECTED": 1, "CANCELED": 0, "BACKEND": 1, "OTHER": 1}
    assert entry["response_stats"] == {} and entry["batch_stats"] == []
    check_triton_rules(entry)
    check_shape_against_triton(entry)


# --------------------------------------------------------------------------------------------- live
def test_live_statistics_follow_perf_analyzer_rules(client):
    needs_serve_extra()
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    before = client.get_inference_statistics("se", model_version="1")["model_stats"][0]
    sent = 0
    for seed, batch in enumerate((1, 2, 3, 1)):
        x = make_input((batch, 64, 14, 14), seed=seed)
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        client.infer("se", [tensor])
        sent += batch
    bad = httpclient.InferInput("input", [1, 32, 14, 14], "FP32")
    bad.set_data_from_numpy(make_input((1, 32, 14, 14)))
    with pytest.raises(InferenceServerException):
        client.infer("se", [bad])
    after = client.get_inference_statistics("se", model_version="1")["model_stats"][0]
    check_shape_against_triton(after)
    check_triton_rules(after)
    summary = perf_analyzer_summary(before, after)
    assert summary["count"] == summary["queue_count"] == summary["compute_count"] == 4
    assert summary["inference_count"] == sent and summary["execution_count"] == 4
    assert summary["overhead_ns"] >= 0 and summary["avg_compute_ns"] > 0
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"] + 1
    # The all-models endpoint carries the same entry shape for every loaded version.
    for entry in client.get_inference_statistics()["model_stats"]:
        check_shape_against_triton(entry)
        check_triton_rules(entry)
