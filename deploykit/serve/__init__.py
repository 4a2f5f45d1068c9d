"""`deploykit serve`: a model repository in Triton's layout served over the KServe v2 HTTP and gRPC protocols.

Modules, from the wire inwards:

- `app`: the FastAPI application (routes, error bodies `{"error": ...}`, OpenAPI schema).
- `grpc_service`: the KServe v2 gRPC service (Triton's GRPCInferenceService) on grpc.aio, same event loop.
- `protocol`: KServe v2 tensors as JSON and with Triton's binary tensor extension, both directions; the
  tensor checks both front-ends share.
- `inference`: one request from decoded tensors to outputs (model checks, scheduler, statistics), shared
  by the HTTP and gRPC front-ends.
- `models`: the repository read with Triton's own model-config schema, one runner per model version,
  requests validated against the model's inputs.
- `scheduler`: direct execution or dynamic batching of concurrent requests, bounded queues.
- `batching`: `--batching auto`: whether merged batches are cheaper per sample, measured at start-up.
- `statistics`: per model version counters with Triton's statistics semantics.
- `metrics`: `/metrics` in Prometheus text format with Triton's metric names, read from the statistics.
- `model_config`: config.pbtxt parsed with protobuf text_format against Triton's `ModelConfig` message.
- `server`: uvicorn on a socket bound up front (127.0.0.1 by default) and the gRPC server on the same
  loop, graceful shutdown.

FastAPI and uvicorn come with the `serve` extra (`pip install 'deploykit[serve]'`); nothing here imports torch.
"""
