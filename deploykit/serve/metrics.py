"""`GET /metrics`: Prometheus text format with Triton's metric names and labels, plus deploykit's own.

The values are read at scrape time from the same counters as the statistics extension (`Stats`), so
`/metrics` and `/v2/models/.../stats` always agree. Triton's families (labels `model`, `version`):

    nv_inference_request_success, nv_inference_request_failure (+ label `reason`), nv_inference_count,
    nv_inference_exec_count, nv_inference_request_duration_us, nv_inference_queue_duration_us,
    nv_inference_compute_input_duration_us, nv_inference_compute_infer_duration_us,
    nv_inference_compute_output_duration_us                                        (counters)
    nv_inference_pending_request_count                                             (gauge)

deploykit's own: `deploykit_inference_batch_execution_count` (counter, label `batch_size`: how often each
batch size ran) and `deploykit_dynamic_batching` (gauge, 1 when the model's requests are merged).

prometheus_client writes counters as `<name>_total`; Triton's counters have no suffix, and dashboards
and autoscalers query Triton's names, so the HELP/TYPE lines of the Triton families get their names back
(the samples already carry them), which is the exact text Triton serves.
"""

from __future__ import annotations

COUNTERS = {
    "nv_inference_request_success": "Number of successful inference requests, all batch sizes",
    "nv_inference_request_failure": "Number of failed inference requests, all batch sizes",
    "nv_inference_count": "Number of inferences performed (does not include cached requests)",
    "nv_inference_exec_count": "Number of model executions performed (does not include cached requests)",
    "nv_inference_request_duration_us": "Cumulative inference request duration in microseconds",
    "nv_inference_queue_duration_us": "Cumulative inference queuing duration in microseconds",
    "nv_inference_compute_input_duration_us": "Cumulative compute input duration in microseconds",
    "nv_inference_compute_infer_duration_us": "Cumulative compute inference duration in microseconds",
    "nv_inference_compute_output_duration_us": "Cumulative inference compute output duration in microseconds",
}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RepositoryCollector:
    """A prometheus_client collector over every loaded model version's statistics."""

    def __init__(self, repository):
        self.repository = repository

    def collect(self):
        from prometheus_client.core import Metric

        families = {name: Metric(name, doc, "counter") for name, doc in COUNTERS.items()}
        pending = Metric("nv_inference_pending_request_count",
                         "Instantaneous number of pending requests awaiting execution per-model.", "gauge")
        batches = Metric("deploykit_inference_batch_execution", "Model executions per batch size", "counter")
        batching = Metric("deploykit_dynamic_batching", "1 when concurrent requests are merged into one execution",
                          "gauge")
        for mv in self.repository.versions():
            stats, labels = mv.stats, {"model": mv.model.name, "version": str(mv.version)}
            values = {
                "nv_inference_request_success": stats.success.count,
                "nv_inference_count": stats.inference_count,
                "nv_inference_exec_count": stats.execution_count,
                "nv_inference_request_duration_us": stats.success.ns // 1000,
                "nv_inference_queue_duration_us": stats.queue.ns // 1000,
                "nv_inference_compute_input_duration_us": stats.compute_input.ns // 1000,
                "nv_inference_compute_infer_duration_us": stats.compute_infer.ns // 1000,
                "nv_inference_compute_output_duration_us": stats.compute_output.ns // 1000,
            }
            for name, value in values.items():
                families[name].add_sample(name, labels, value)
            for reason, count in stats.failures.items():
                families["nv_inference_request_failure"].add_sample("nv_inference_request_failure",
                                                                    {**labels, "reason": reason}, count)
            pending.add_sample(pending.name, labels, stats.pending)
            for size, entry in sorted(stats.batches.items()):
                batches.add_sample("deploykit_inference_batch_execution_total", {**labels, "batch_size": str(size)},
                                   entry.compute_infer.count)
            batching.add_sample(batching.name, labels, 1 if mv.scheduler.batching else 0)
        yield from families.values()
        yield pending
        yield batches
        yield batching


def registry_for(repository):
    """A registry of its own (not prometheus_client's global one): one per app, nothing shared between apps."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RepositoryCollector(repository))
    return registry


def render(registry) -> bytes:
    """The registry in Prometheus text format, Triton's counters under Triton's exact names."""
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    for name in COUNTERS:
        text = text.replace(f"# HELP {name}_total ", f"# HELP {name} ").replace(f"# TYPE {name}_total ",
                                                                                  f"# TYPE {name} ")
    return text.encode()


def add_metrics_route(app, repository, metrics_port: int | None = None) -> None:
    """`GET /metrics` on the app. With `metrics_port`, requests that arrive on that port (a second socket
    of the same server, like Triton's 8002) may only read /metrics."""
    from fastapi.responses import Response

    registry = registry_for(repository)

    @app.get("/metrics", tags=["metrics"], response_class=Response,
             responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
    async def metrics():
        return Response(render(registry), media_type=CONTENT_TYPE)

    if metrics_port is not None:
        app.add_middleware(MetricsPortOnly, port_of=lambda: getattr(app.state, "metrics_port", None))


class MetricsPortOnly:
    """ASGI middleware: on the metrics port only /metrics answers (plain ASGI, so the other port's
    requests pay one comparison, not a BaseHTTPMiddleware round trip)."""

    def __init__(self, app, port_of):
        self.app = app
        self.port_of = port_of

    async def __call__(self, scope, receive, send):
        server = scope.get("server") if scope["type"] == "http" else None
        if server and server[1] == self.port_of() and scope.get("path") != "/metrics":
            from fastapi.responses import JSONResponse

            await JSONResponse({"error": "this port serves only /metrics"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)
