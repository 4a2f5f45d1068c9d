"""`deploykit serve`: a model repository in Triton's layout served over the KServe v2 HTTP protocol.

Modules, from the wire inwards:

- `app`: the FastAPI application (routes, error bodies `{"error": ...}`, OpenAPI schema).
- `protocol`: KServe v2 tensors as JSON and with Triton's binary tensor extension, both directions.
- `models`: the repository read with Triton's own model-config schema, one runner per model version,
  requests validated against the model's inputs.
- `scheduler`: direct execution or dynamic batching of concurrent requests, bounded queues, statistics.
- `model_config`: config.pbtxt parsed with protobuf text_format against Triton's `ModelConfig` message.
- `server`: uvicorn on a socket bound up front (127.0.0.1 by default), graceful shutdown.

FastAPI and uvicorn come with the `serve` extra (`pip install 'deploykit[serve]'`); nothing here imports torch.
"""
