"""`/metrics`: Prometheus text with Triton's metric names and labels, parsed with prometheus_client's own
text parser, counts checked against the requests this test sends and against the statistics endpoint."""

from __future__ import annotations

import re

import pytest

from tests.serve.helpers import LiveServer, make_input, needs_serve_extra

needs_serve_extra()
parser = pytest.importorskip("prometheus_client.parser", reason="needs prometheus_client (serve extra)")
import httpx  # noqa: E402
import tritonclient.http as httpclient  # noqa: E402

TRITON_COUNTERS = ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
                   "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
                   "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
                   "nv_inference_compute_output_duration_us")


def scrape(url: str) -> dict:
    """{family name: (type, {(sample name, frozenset(labels)): value})} from the text format.

    prometheus_client's parser names counter samples `<family>_total` whatever the text says (it does so
    for Triton's own output too); `raw_lines` checks the text itself.
    """
    response = httpx.get(url, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    out = {"__text__": response.text}
    for family in parser.text_string_to_metric_families(response.text):
        out[family.name] = (family.type, {(s.name, frozenset(s.labels.items())): s.value for s in family.samples})
    return out


def value(metrics, name, **labels):
    kind, samples = metrics[name]
    return samples[(f"{name}_total" if kind == "counter" else name, frozenset(labels.items()))]


def test_triton_counters_count_the_requests_sent(server, client):
    before = scrape(f"{server.url}/metrics")
    text = before["__text__"]
    for name in TRITON_COUNTERS:
        assert before[name][0] == "counter", name  # Triton's exact name, typed as Triton types it
        # ... and written exactly as Triton writes it: no `_total` suffix, labels model and version.
        assert f"# TYPE {name} counter\n" in text
        assert re.search(rf'^{name}\{{model="se",(reason="\w+",)?version="1"\}} \d', text, re.M), name
    assert before["nv_inference_pending_request_count"][0] == "gauge"
    for seed, batch in enumerate((1, 3, 2)):
        x = make_input((batch, 64, 14, 14), seed=seed)
        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=True)
        client.infer("se", [tensor])
    bad = {"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.0, 2.0]}]}
    assert httpx.post(f"{server.url}/v2/models/se/infer", json=bad, timeout=30).status_code == 400
    after = scrape(f"{server.url}/metrics")
    se = {"model": "se", "version": "1"}

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("nv_inference_request_success", **se) == 3
    assert delta("nv_inference_count", **se) == 6          # samples
    assert delta("nv_inference_exec_count", **se) == 3     # one request at a time: nothing to merge
    assert delta("nv_inference_request_failure", **se, reason="OTHER") == 1
    assert delta("nv_inference_request_failure", **se, reason="BACKEND") == 0
    parts = sum(delta(f"nv_inference_{k}_duration_us", **se)
                for k in ("queue", "compute_input", "compute_infer", "compute_output"))
    assert 0 < parts <= delta("nv_inference_request_duration_us", **se) + 4  # whole >= its parts (us rounding)
    assert value(after, "nv_inference_pending_request_count", **se) == 0
    config = client.get_model_config("se")
    assert value(after, "deploykit_dynamic_batching", **se) == (1 if "dynamic_batching" in config else 0)
    # The same numbers as the statistics extension.
    stats = client.get_inference_statistics("se", model_version="1")["model_stats"][0]
    assert value(after, "nv_inference_request_success", **se) == stats["inference_stats"]["success"]["count"]
    assert value(after, "nv_inference_exec_count", **se) == stats["execution_count"]
    assert value(after, "nv_inference_compute_infer_duration_us", **se) == \
        stats["inference_stats"]["compute_infer"]["ns"] // 1000
    # Every loaded version has its series.
    models = {dict(labels)["model"] for (_n, labels) in after["nv_inference_count"][1]}
    assert len(models) == len(after["nv_inference_count"][1])
    assert models == {"se", "se_fp16", "sam", "se_static"}


def test_metrics_port_serves_only_metrics(model_repo, tmp_path):
    with LiveServer(model_repo, "--metrics-port", "0", log_dir=tmp_path) as live:
        assert live.metrics_url.endswith("/metrics") and live.metrics_url != f"{live.url}/metrics"
        metrics = scrape(live.metrics_url)
        assert "nv_inference_request_success" in metrics
        other = httpx.get(live.metrics_url.removesuffix("/metrics") + "/v2/models/se", timeout=30)
        assert other.status_code == 404
        assert httpx.get(f"{live.url}/v2/models/se", timeout=30).status_code == 200
        assert "nv_inference_count" in scrape(f"{live.url}/metrics")
