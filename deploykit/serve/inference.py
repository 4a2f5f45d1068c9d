"""One inference request from decoded tensors to outputs, shared by the HTTP and gRPC front-ends.

Each front-end decodes its wire format into a `protocol.InferRequest`; from there both take the same
path: the model's checks (names, types, shapes, batch), the scheduler (queue limit, batching), the
mapping of runtime failures to protocol errors, and the statistics (success with its queue and compute
times, or a failure with its reason), so the two protocols answer and count alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import numpy as np

from deploykit.errors import UserInputError
from deploykit.serve.protocol import InferRequest, ProtocolError
from deploykit.serve.scheduler import QueueFull, SchedulerClosed
from deploykit.serve.statistics import BACKEND, OTHER, REJECTED, RequestTiming


@dataclass
class Outcome:
    """Filled by the front-end inside `accounted`: the timing of the execution that served the request."""

    timing: RequestTiming | None = None


@contextlib.contextmanager
def accounted(mv):
    """Count the request in `mv`'s statistics: a success (with its timing) when the block completes after
    `run_request` succeeded, else a failure with Triton's reason (REJECTED, CANCELED, BACKEND, OTHER)."""
    outcome = Outcome()
    started = time.perf_counter_ns()
    try:
        yield outcome
    except BaseException as exc:
        mv.stats.record_failure(time.perf_counter_ns() - started, failure_reason(exc))
        raise
    if outcome.timing is None:  # the front-end answered without running the model: not a success
        mv.stats.record_failure(time.perf_counter_ns() - started, OTHER)
    else:
        mv.stats.record_success(time.perf_counter_ns() - started, outcome.timing)


def failure_reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(exc, ProtocolError):
        return {503: REJECTED, 500: BACKEND}.get(exc.status, OTHER)
    return BACKEND


async def run_request(mv, request: InferRequest, outcome: Outcome) -> dict[str, np.ndarray]:
    """Check `request` against the model, run it, and return the outputs it asked for, in its order.

    Raises:
        ProtocolError: the request does not fit the model (400), the queue is full or the server is
            stopping (503), or the runtime failed (500, or 400 for shapes the runtime refuses).
    """
    mv.model.check_outputs(request)
    feed, batch = mv.model.check_request(request)
    outputs, outcome.timing = await _submit(mv, feed, batch)
    return mv.model.pick_outputs(request, outputs)


async def _submit(mv, feed, batch):
    """Schedule one validated request; runtime failures become errors that say what happened."""
    try:
        return await mv.scheduler.submit(feed, batch)
    except QueueFull as exc:
        raise ProtocolError(f"model '{mv.model.name}' is busy: {exc}; retry later", status=503) from None
    except SchedulerClosed as exc:
        raise ProtocolError(str(exc), status=503) from None
    except UserInputError as exc:  # e.g. a TensorRT engine's optimization profile does not cover the shapes
        raise ProtocolError(exc.one_line()) from None
    except Exception as exc:  # noqa: BLE001 - the runtime's own message is the useful part
        status = 400 if type(exc).__name__ in {"InvalidArgument", "InvalidShape"} else 500
        message = f"{mv.label} failed to run: {type(exc).__name__}: {str(exc)[:500]}"
        raise ProtocolError(message, status=status) from None
