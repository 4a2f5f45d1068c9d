"""Per model version counters in the shape and with the meaning of Triton's statistics extension.

Triton's rules, which perf_analyzer and the model analyzer rely on (perf_analyzer stops with "Server side
statistics compute counts must be the same" when the first one breaks):

- `success`, `queue`, `compute_input`, `compute_infer` and `compute_output` count successful *requests*;
  their counts are always equal. A request run in a batch of several is charged the whole execution's
  compute durations, as Triton does, so `compute_*.ns / count` is the compute time a request waited on.
- `success.ns` runs from the request's arrival to its response being ready, so per request it is at least
  queue + compute_input + compute_infer + compute_output; perf_analyzer reports the rest as "overhead".
- `fail` counts failed requests and their durations only; failed requests add to nothing else.
- `inference_count` counts samples (batch entries) and `execution_count` model executions, both of
  successful executions; `batch_stats` has one entry per executed batch size whose counts are executions.
- `response_stats` has one key, "0" (every request gets exactly one response): its compute_infer is the
  request's compute_input + compute_infer, its compute_output the output split, and success the sum.
- `cache_hit`/`cache_miss` stay zero (no response cache), `memory_usage` is empty (ONNX Runtime does not
  report its arena, like Triton's onnxruntime backend).

All updates happen on the event loop thread (no locks); the worker threads only measure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    """Triton's StatisticDuration: a count and the cumulative nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += max(0, int(ns))

    def as_dict(self) -> dict:
        return {"count": self.count, "ns": self.ns}


@dataclass(frozen=True)
class ComputeTimes:
    """What one execution spent gathering inputs, running the model and splitting the outputs (ns)."""

    input_ns: int = 0
    infer_ns: int = 0
    output_ns: int = 0


@dataclass(frozen=True)
class RequestTiming:
    """One request's share of its execution: how long it queued and the execution's compute times."""

    queue_ns: int
    compute: ComputeTimes


@dataclass
class BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


# Failure reasons, as Triton labels nv_inference_request_failure.
REJECTED, BACKEND, OTHER = "REJECTED", "BACKEND", "OTHER"
FAILURE_REASONS = (REJECTED, "CANCELED", BACKEND, OTHER)


@dataclass
class Stats:
    """Counters of one model version (see the module docstring for what each one means)."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    batches: dict[int, BatchStats] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FAILURE_REASONS, 0))
    pending: int = 0   # requests queued or executing now (nv_inference_pending_request_count)

    # ------------------------------------------------------------------------------- recording
    def record_execution(self, batch_size: int, compute: ComputeTimes) -> None:
        """One successful model execution of `batch_size` samples."""
        self.execution_count += 1
        self.inference_count += batch_size
        entry = self.batches.setdefault(batch_size, BatchStats())
        entry.compute_input.add(compute.input_ns)
        entry.compute_infer.add(compute.infer_ns)
        entry.compute_output.add(compute.output_ns)
        self.last_inference_ms = int(time.time() * 1000)

    def record_success(self, request_ns: int, timing: RequestTiming) -> None:
        """A request answered: its whole duration, its queueing and its execution's compute times."""
        compute = timing.compute
        # The request's own duration covers its queueing and compute, measured inside it; clamp against
        # clock granularity so the parts never add up to more than the whole.
        request_ns = max(int(request_ns), timing.queue_ns + compute.input_ns + compute.infer_ns + compute.output_ns)
        self.success.add(request_ns)
        self.queue.add(timing.queue_ns)
        self.compute_input.add(compute.input_ns)
        self.compute_infer.add(compute.infer_ns)
        self.compute_output.add(compute.output_ns)

    def record_failure(self, request_ns: int, reason: str = OTHER) -> None:
        self.fail.add(request_ns)
        self.failures[reason if reason in self.failures else OTHER] += 1

    # ------------------------------------------------------------------------------- reporting
    def as_dict(self, name: str, version: str) -> dict:
        """One `model_stats` entry exactly as Triton's HTTP endpoint writes it."""
        response = {}
        if self.success.count:
            response["0"] = {
                "compute_infer": {"count": self.success.count, "ns": self.compute_input.ns + self.compute_infer.ns},
                "compute_output": self.compute_output.as_dict(),
                "success": {"count": self.success.count,
                            "ns": self.compute_input.ns + self.compute_infer.ns + self.compute_output.ns},
                "fail": Duration().as_dict(), "empty_response": Duration().as_dict(), "cancel": Duration().as_dict(),
            }
        return {
            "name": name, "version": version, "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count, "execution_count": self.execution_count,
            "inference_stats": {key: getattr(self, key).as_dict() for key in (
                "success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit",
                "cache_miss")},
            "response_stats": response,
            "batch_stats": [{"batch_size": size, "compute_input": b.compute_input.as_dict(),
                             "compute_infer": b.compute_infer.as_dict(), "compute_output": b.compute_output.as_dict()}
                            for size, b in sorted(self.batches.items())],
            "memory_usage": [],
        }
