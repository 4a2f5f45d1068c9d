"""The scheduler on its own: dynamic batching merges and splits correctly, respects its limits, fails cleanly.

The model here is a plain function (y = 2x + the sample's own sum), so every request's expected output is
computed independently from its own input, whatever batch it was run in.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from deploykit.serve.scheduler import QueueFull, Scheduler, SchedulerClosed


class FakeModel:
    """Records every execution's batch; optionally slow, so concurrent requests queue up behind it."""

    def __init__(self, delay_s: float = 0.0, gate: threading.Event | None = None):
        self.delay_s = delay_s
        self.gate = gate
        self.batches: list[tuple[int, ...]] = []
        self.lock = threading.Lock()
        self.running = self.peak = 0

    def __call__(self, feed):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if self.gate is not None:
                self.gate.wait(10)
            time.sleep(self.delay_s)
            x = feed["x"]
            with self.lock:
                self.batches.append(x.shape)
            return {"y": expected(x)}
        finally:
            with self.lock:
                self.running -= 1


def expected(x: np.ndarray) -> np.ndarray:
    return 2 * x + x.reshape(len(x), -1).sum(axis=1).reshape((-1,) + (1,) * (x.ndim - 1))


def sample(batch: int, seed: int, tail=(3, 4)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *tail)).astype(np.float32)


async def run_all(scheduler: Scheduler, inputs: list[np.ndarray], stagger_s: float = 0.0):
    scheduler.start()
    try:
        async def one(i, x):
            await asyncio.sleep(stagger_s * i)
            return await scheduler.infer({"x": x}, len(x))

        return await asyncio.gather(*(one(i, x) for i, x in enumerate(inputs)), return_exceptions=True)
    finally:
        await scheduler.stop(5)


def test_concurrent_requests_are_batched_and_split_back():
    model = FakeModel(delay_s=0.05)
    scheduler = Scheduler(model, batching=True, max_batch=8, max_delay_s=0.0)
    inputs = [sample(1, i) for i in range(12)]
    results = asyncio.run(run_all(scheduler, inputs))
    for x, out in zip(inputs, results):
        np.testing.assert_allclose(out["y"], expected(x), rtol=1e-6)
    sizes = [b[0] for b in model.batches]
    assert sum(sizes) == 12
    assert max(sizes) > 1, sizes          # requests that queued behind the first execution were merged
    assert max(sizes) <= 8
    stats = scheduler.stats
    assert stats.inference_count == 12 and stats.execution_count == len(sizes) < 12


def test_without_batching_every_request_runs_alone():
    model = FakeModel(delay_s=0.01)
    inputs = [sample(2, i) for i in range(6)]
    results = asyncio.run(run_all(Scheduler(model, batching=False, max_batch=4), inputs))
    assert [b[0] for b in model.batches] == [2] * 6
    for x, out in zip(inputs, results):
        np.testing.assert_allclose(out["y"], expected(x), rtol=1e-6)


def test_max_batch_counts_samples_not_requests():
    model = FakeModel(delay_s=0.05)
    inputs = [sample(2, i) for i in range(7)]  # 14 samples, batches of at most 5 -> pairs of requests
    results = asyncio.run(run_all(Scheduler(model, batching=True, max_batch=5), inputs))
    assert all(b[0] <= 5 for b in model.batches), model.batches
    assert sum(b[0] for b in model.batches) == 14
    for x, out in zip(inputs, results):
        np.testing.assert_allclose(out["y"], expected(x), rtol=1e-6)


def test_only_requests_with_equal_sample_shapes_are_merged():
    model = FakeModel(delay_s=0.05)
    inputs = [sample(1, i, tail=(3, 4) if i % 2 else (3, 5)) for i in range(10)]
    results = asyncio.run(run_all(Scheduler(model, batching=True, max_batch=8), inputs))
    for x, out in zip(inputs, results):
        assert out["y"].shape == x.shape
        np.testing.assert_allclose(out["y"], expected(x), rtol=1e-6)
    assert {b[1:] for b in model.batches} == {(3, 4), (3, 5)}


def test_queue_delay_waits_for_more_requests():
    # Requests 100 ms apart: with a 2 s delay they share one execution (closed as soon as it is full),
    # with none each runs alone.
    inputs = [sample(1, i) for i in range(4)]
    patient = FakeModel()
    start = time.perf_counter()
    asyncio.run(run_all(Scheduler(patient, batching=True, max_batch=4, max_delay_s=2.0), inputs, stagger_s=0.1))
    assert time.perf_counter() - start < 1.5
    eager = FakeModel()
    asyncio.run(run_all(Scheduler(eager, batching=True, max_batch=8, max_delay_s=0.0), inputs, stagger_s=0.1))
    assert [b[0] for b in patient.batches] == [4]
    assert [b[0] for b in eager.batches] == [1, 1, 1, 1]


def test_a_full_batch_does_not_wait_for_the_delay():
    model = FakeModel()
    scheduler = Scheduler(model, batching=True, max_batch=4, max_delay_s=5.0)
    start = time.perf_counter()
    asyncio.run(run_all(scheduler, [sample(1, i) for i in range(4)]))
    assert time.perf_counter() - start < 2.0
    assert [b[0] for b in model.batches] == [4]


def test_a_failing_execution_fails_its_requests_only():
    calls = {"n": 0}

    def flaky(feed):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("boom")
        return {"y": expected(feed["x"])}

    scheduler = Scheduler(flaky, batching=False)
    results = asyncio.run(run_all(scheduler, [sample(1, 0), sample(1, 1)]))
    assert isinstance(results[0], ValueError)
    np.testing.assert_allclose(results[1]["y"], expected(sample(1, 1)), rtol=1e-6)


def test_outputs_without_the_batch_dim_are_an_error_for_merged_requests():
    calls = []

    def scalar_model(feed):
        calls.append(len(feed["x"]))
        if len(calls) == 1:
            time.sleep(0.05)  # let the other requests queue up and merge
        return {"y": np.zeros(3, np.float32)}

    scheduler = Scheduler(scalar_model, batching=True, max_batch=8)
    results = asyncio.run(run_all(scheduler, [sample(1, i) for i in range(5)]))
    assert max(calls) > 1
    merged_errors = [r for r in results if isinstance(r, RuntimeError)]
    assert merged_errors and "batch" in str(merged_errors[0])


def test_full_queue_is_refused_at_once():
    gate = threading.Event()
    model = FakeModel(gate=gate)
    scheduler = Scheduler(model, batching=False, max_queue=2)

    async def scenario():
        scheduler.start()
        first = asyncio.ensure_future(scheduler.infer({"x": sample(1, 0)}, 1))
        await asyncio.sleep(0.05)  # the first is executing (blocked on the gate), the queue is empty
        queued = [asyncio.ensure_future(scheduler.infer({"x": sample(1, i)}, 1)) for i in (1, 2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await scheduler.infer({"x": sample(1, 3)}, 1)
        gate.set()
        done = await asyncio.gather(first, *queued)
        await scheduler.stop(5)
        return done

    assert len(asyncio.run(scenario())) == 3


def test_stop_drains_the_queue_then_refuses():
    model = FakeModel(delay_s=0.02)
    scheduler = Scheduler(model, batching=False)

    async def scenario():
        scheduler.start()
        futures = [asyncio.ensure_future(scheduler.infer({"x": sample(1, i)}, 1)) for i in range(5)]
        await asyncio.sleep(0)
        await scheduler.stop(5)
        results = await asyncio.gather(*futures)
        with pytest.raises(SchedulerClosed):
            await scheduler.infer({"x": sample(1, 9)}, 1)
        return results

    assert len(asyncio.run(scenario())) == 5
    assert len(model.batches) == 5


def test_instances_run_concurrently():
    model = FakeModel(delay_s=0.1)
    asyncio.run(run_all(Scheduler(model, batching=False, instances=2), [sample(1, i) for i in range(4)]))
    assert model.peak == 2
    serial = FakeModel(delay_s=0.05)
    asyncio.run(run_all(Scheduler(serial, batching=False, instances=1), [sample(1, i) for i in range(3)]))
    assert serial.peak == 1
