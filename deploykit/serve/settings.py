"""Server settings: what `deploykit serve` flags set, with the defaults a bare command line gets."""

from __future__ import annotations

from dataclasses import dataclass

from deploykit.errors import UserInputError

BATCHING_MODES = ("auto", "config", "on", "off")


@dataclass
class ServeSettings:
    """Everything the server needs besides the repository path.

    Attributes:
        host: address to bind; loopback unless told otherwise (a container passes 0.0.0.0 explicitly).
        port: TCP port; 0 picks a free one (printed once the server listens).
        metrics_port: a second port serving only /metrics (Triton's 8002); None: /metrics on `port` only.
        grpc_port: the KServe v2 gRPC service's port (Triton's default 8001; 0 picks a free one), None: no gRPC.
        batching: "auto" measures each model with max_batch_size > 0 at start-up and batches it only where
            merged runs are >= 5 % cheaper per sample (serve.batching); "config" batches the models whose
            config.pbtxt has `dynamic_batching`, "on" every model with max_batch_size > 0, "off" none.
        max_batch: cap on the batch the dynamic batcher forms (None: each model's max_batch_size).
        max_queue_delay_us: how long the batcher may hold the first request of a batch waiting for more
            (None: the config's max_queue_delay_microseconds, 0 when it has none).
        instances: concurrent executions per model version (None: config's instance_group count, else 1).
        threads: ONNX Runtime intra-op threads per session (None: ONNX Runtime's default).
        max_body_bytes: largest request body accepted (413 above it).
        decode_budget_bytes: bytes of request bodies read and decoded at once before the server answers 503
            (None: four times max_body_bytes).
        max_queue: requests waiting per model version before the server answers 503.
        graceful_timeout_s: how long shutdown waits for requests in flight.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001
    metrics_port: int | None = None
    batching: str = "auto"
    max_batch: int | None = None
    max_queue_delay_us: int | None = None
    instances: int | None = None
    threads: int | None = None
    max_body_bytes: int = 64 << 20
    decode_budget_bytes: int | None = None
    max_queue: int = 256
    graceful_timeout_s: float = 30.0
    log_level: str = "info"

    def __post_init__(self):
        if self.batching not in BATCHING_MODES:
            raise UserInputError(f"batching must be one of {', '.join(BATCHING_MODES)}, not '{self.batching}'",
                                 hint="pick one of those")
        for name in ("max_batch", "instances", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UserInputError(f"{name.replace('_', '-')} must be at least 1, not {value}",
                                     hint="pass a positive number")
        if self.max_queue_delay_us is not None and self.max_queue_delay_us < 0:
            raise UserInputError(f"max-queue-delay-us must be 0 or more, not {self.max_queue_delay_us}",
                                 hint="pass 0 or a positive number of microseconds")
        if self.max_body_bytes < 1024:
            raise UserInputError(f"max-body-size must be at least 1 KiB, not {self.max_body_bytes} bytes",
                                 hint="pass a size such as 64MiB")
        if self.max_queue < 1:
            raise UserInputError(f"max-queue must be at least 1, not {self.max_queue}",
                                 hint="pass a positive queue length")
        if not 0 <= self.port <= 65535:
            raise UserInputError(f"port must be 0..65535, not {self.port}", hint="pass a port between 0 and 65535")
        for name in ("grpc_port", "metrics_port"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 65535:
                raise UserInputError(f"{name.replace('_', '-')} must be 0..65535, not {value}",
                                     hint="pass a port between 0 and 65535")
