"""`deploykit serve`: a model repository over the KServe v2 HTTP and gRPC protocols (Triton clients work unchanged).

Exit codes: 0 stopped gracefully (SIGTERM or Ctrl-C), 2 the repository, a model or the address cannot be
used, 3 the serve extra is missing or no model can run on this machine (e.g. only TensorRT plans and no
TensorRT).
"""

from __future__ import annotations

import click

from deploykit.serve.settings import BATCHING_MODES


def _size(_ctx, _param, value):
    if value is None:
        return None
    from deploykit.errors import UserInputError
    from deploykit.trt.builder import parse_size

    try:
        return parse_size(value)
    except UserInputError as exc:
        raise click.BadParameter(exc.one_line()) from None


@click.command("serve")
@click.argument("repo", default="models", type=click.Path(file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Loopback by default; pass 0.0.0.0 to accept other machines "
                   "(the container image does).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0 picks a free one and prints it).")
@click.option("--grpc-port", default=8001, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the KServe v2 gRPC service (Triton's default; 0 picks a free one and prints it).")
@click.option("--no-grpc", is_flag=True, help="Serve HTTP only.")
@click.option("--metrics-port", type=click.IntRange(0, 65535),
              help="Also serve /metrics (Prometheus) alone on this port, like Triton's 8002 (default: /metrics on "
                   "--port only).")
@click.option("--batching", type=click.Choice(BATCHING_MODES), default="auto", show_default=True,
              help="Dynamic batching: auto measures each model at start-up and merges requests only where merged "
                   "runs cost >= 5% less per sample; config follows each config.pbtxt's dynamic_batching; on for "
                   "every model with max_batch_size > 0; off.")
@click.option("--max-batch", type=click.IntRange(min=1),
              help="Largest batch the dynamic batcher forms (default: each model's max_batch_size).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0),
              help="Microseconds the batcher may wait for more requests (default: the config's "
                   "max_queue_delay_microseconds, else 0: batch only what is already waiting).")
@click.option("--instances", type=click.IntRange(min=1),
              help="Concurrent executions per model (default: the config's instance_group count, else 1).")
@click.option("--threads", type=click.IntRange(min=1), help="ONNX Runtime intra-op threads per model.")
@click.option("--max-body-size", "max_body", default="64MiB", show_default=True, callback=_size,
              help="Largest request body; larger ones get 413.")
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(min=1),
              help="Requests that may wait per model; more get 503.")
@click.option("--graceful-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds shutdown waits for requests in flight.")
@click.option("--log-level", type=click.Choice(["warning", "info", "debug"]), default="info", show_default=True,
              help="debug adds uvicorn's access log.")
def serve(repo, host, port, grpc_port, no_grpc, metrics_port, batching, max_batch, max_queue_delay_us, instances,
          threads, max_body, max_queue, graceful_timeout, log_level):
    """Serve every model of a repository (ONNX Runtime; TensorRT plans when TensorRT and a GPU are present)
    over the KServe v2 HTTP protocol with Triton's binary tensor extension, and its gRPC form (Triton's
    GRPCInferenceService) on --grpc-port.

    \b
    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/NAME[/versions/V][/ready|/config|/stats]
    POST /v2/models/NAME[/versions/V]/infer     (JSON or binary tensors)
    POST /v2/repository/index                  (models and why any is unavailable)
    GET  /metrics                              (Prometheus text, Triton's nv_inference_* names)
    OpenAPI schema at /openapi.json. Stops gracefully on SIGTERM or Ctrl-C (exit 0).
    """
    from deploykit.serve.server import serve as run_server
    from deploykit.serve.settings import ServeSettings

    settings = ServeSettings(host=host, port=port, grpc_port=None if no_grpc else grpc_port,
                             metrics_port=metrics_port, batching=batching,
                             max_batch=max_batch, max_queue_delay_us=max_queue_delay_us, instances=instances, threads=threads,
                             max_body_bytes=max_body, max_queue=max_queue, graceful_timeout_s=graceful_timeout,
                             log_level=log_level)
    return run_server(repo, settings)
