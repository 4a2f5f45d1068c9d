"""Scheduling inference for one model version: direct execution or dynamic batching, with statistics.

Requests arrive on the event loop; executions run in a thread pool of `instances` workers (ONNX Runtime
and TensorRT release the GIL while they compute), so the loop keeps accepting connections meanwhile.

With dynamic batching (Triton's `dynamic_batching`), a worker takes the oldest waiting request and adds
every waiting request with the same per-sample shapes and types until the batch holds `max_batch`
samples or `max_delay` has passed since that first request arrived; the batch is concatenated along
dim 0, run once, and split back. With a delay of 0 it still merges whatever queued up while the previous
execution ran, which is where batching pays off under load. Without batching each request runs alone.

All bookkeeping happens on the event loop thread between awaits, so it needs no locks; the waiting queue
is bounded and a full queue is answered at once (503) rather than growing without limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from deploykit.serve.statistics import ComputeTimes, RequestTiming, Stats

RunFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


class QueueFull(Exception):
    """The model's waiting queue is at its limit."""


class SchedulerClosed(Exception):
    """The server is shutting down."""


@dataclass
class _Pending:
    inputs: Mapping[str, np.ndarray]
    batch: int
    signature: tuple
    future: asyncio.Future
    enqueued_ns: int


def signature_of(inputs: Mapping[str, np.ndarray]) -> tuple:
    """Requests batch together only when every input has the same dtype and per-sample shape."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items()))


class Scheduler:
    """Runs one model version's requests, batching them when asked to.

    Args:
        run: the runner's infer function (feed -> outputs); called from worker threads.
        batching: merge concurrent requests (needs a model whose dim 0 is the batch).
        max_batch: most samples in one merged execution.
        max_delay_s: longest wait for more requests after the first of a batch.
        instances: executions that may run at once.
        max_queue: requests allowed to wait; more get QueueFull.
        stats: where counters go (a fresh Stats when None).
    """

    def __init__(self, run: RunFn, *, batching: bool = False, max_batch: int = 1, max_delay_s: float = 0.0,
                 instances: int = 1, max_queue: int = 256, stats: Stats | None = None, name: str = "model"):
        self.run = run
        self.batching = batching
        self.max_batch = max(1, max_batch)
        self.max_delay_s = max(0.0, max_delay_s)
        self.instances = max(1, instances)
        self.max_queue = max_queue
        self.stats = stats or Stats()
        self.name = name
        self._pending: deque[_Pending] = deque()
        self._arrival: asyncio.Event | None = None
        self._workers: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the workers; call on the event loop that will serve the requests."""
        if self._workers:
            return
        self._closed = False
        self._arrival = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=self.instances, thread_name_prefix=f"infer-{self.name}")
        self._workers = [asyncio.get_running_loop().create_task(self._worker(), name=f"{self.name}-worker-{i}")
                         for i in range(self.instances)]

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Finish what is queued (up to `timeout_s`), then stop the workers and the thread pool."""
        self._closed = True
        if self._arrival is not None:
            self._arrival.set()
        if self._workers:
            _, running = await asyncio.wait(self._workers, timeout=timeout_s)
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        while self._pending:
            pending = self._pending.popleft()
            if not pending.future.done():
                pending.future.set_exception(SchedulerClosed("the server is shutting down"))
        self._workers = []
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    @property
    def queued(self) -> int:
        return len(self._pending)

    # ----------------------------------------------------------------------------------------- entry
    async def infer(self, inputs: Mapping[str, np.ndarray], batch: int) -> Mapping[str, np.ndarray]:
        """Queue one request (already validated) and wait for its outputs (see `submit`)."""
        outputs, _timing = await self.submit(inputs, batch)
        return outputs

    async def submit(self, inputs: Mapping[str, np.ndarray], batch: int
                     ) -> tuple[dict[str, np.ndarray], RequestTiming]:
        """Queue one request (already validated); its outputs and how long it queued and computed.

        Raises:
            QueueFull: too many requests are waiting.
            SchedulerClosed: the server is shutting down.
        """
        if self._closed or not self._workers:
            raise SchedulerClosed("the server is shutting down")
        if len(self._pending) >= self.max_queue:
            raise QueueFull(f"{len(self._pending)} requests are already waiting for this model")
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(inputs, batch, signature_of(inputs), future, time.perf_counter_ns()))
        self._arrival.set()
        self.stats.pending += 1
        try:
            return await future
        finally:
            self.stats.pending -= 1

    # --------------------------------------------------------------------------------------- workers
    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = await self._collect()
            if group is None:
                return
            started = time.perf_counter_ns()
            total = sum(p.batch for p in group)
            try:
                results, compute = await loop.run_in_executor(self._executor, self._execute, group)
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.stats.record_execution(total, compute)
            for p, outputs in zip(group, results):
                if not p.future.done():  # the client may have gone away
                    p.future.set_result((outputs, RequestTiming(started - p.enqueued_ns, compute)))

    async def _collect(self) -> list[_Pending] | None:
        """The next group of requests to run together; None once closed and drained."""
        while not self._pending:
            if self._closed:
                return None
            self._arrival.clear()
            await self._arrival.wait()
        first = self._pending.popleft()
        group, size = [first], first.batch
        if not self.batching:
            return group
        deadline = first.enqueued_ns / 1e9 + self.max_delay_s
        while True:
            size = self._take_compatible(group, size)
            remaining = deadline - time.perf_counter_ns() / 1e9
            if size >= self.max_batch or remaining <= 0 or self._closed:
                return group
            self._arrival.clear()
            try:
                await asyncio.wait_for(self._arrival.wait(), remaining)
            except (TimeoutError, asyncio.TimeoutError):
                size = self._take_compatible(group, size)
                return group

    def _take_compatible(self, group: list[_Pending], size: int) -> int:
        """Move waiting requests that fit the group's signature and remaining room into the group."""
        signature = group[0].signature
        kept: deque[_Pending] = deque()
        while self._pending and size < self.max_batch:
            p = self._pending.popleft()
            if p.signature == signature and size + p.batch <= self.max_batch:
                group.append(p)
                size += p.batch
            else:
                kept.append(p)
        kept.extend(self._pending)
        self._pending = kept
        return size

    def _execute(self, group: list[_Pending]) -> tuple[list[dict[str, np.ndarray]], ComputeTimes]:
        """Worker thread: concatenate (compute_input), run once (compute_infer), split along dim 0
        (compute_output), timing each step as Triton's statistics split them."""
        t0 = time.perf_counter_ns()
        if len(group) == 1:
            feed = group[0].inputs
        else:
            names = list(group[0].inputs)
            feed = {n: np.concatenate([p.inputs[n] for p in group], axis=0) for n in names}
        t1 = time.perf_counter_ns()
        outputs = self.run(feed)
        t2 = time.perf_counter_ns()
        results = self._split(group, outputs)
        return results, ComputeTimes(t1 - t0, t2 - t1, time.perf_counter_ns() - t2)

    @staticmethod
    def _split(group: list[_Pending], outputs: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
        if len(group) == 1:
            return [dict(outputs)]
        total = sum(p.batch for p in group)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                raise RuntimeError(f"output '{name}' has shape {list(array.shape)} for a batch of {total}; a "
                                   "batched model's outputs must have the batch as dim 0")
        results, start = [], 0
        for p in group:
            results.append({n: a[start:start + p.batch] for n, a in outputs.items()})
            start += p.batch
        return results
