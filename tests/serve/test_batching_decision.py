"""`--batching auto`: the start-up measurement and the decision, with fake runners whose costs are set
here (a fake clock advanced by each run), and once live on a real model."""

from __future__ import annotations

import numpy as np
import pytest

import deploykit.serve.batching as batching
from deploykit.serve.batching import MIN_GAIN, choose, decide, measure, probe_inputs
from deploykit.serve.models import TensorMeta
from tests.serve.helpers import LiveServer, needs_serve_extra

INPUTS = [TensorMeta("x", "FP32", (-1, 3, -1))]


class FakeRunner:
    """y = 2x; each run advances a fake clock by cost(batch) seconds."""

    def __init__(self, cost):
        self.cost = cost
        self.now = 0.0
        self.batches: list[int] = []

    def clock(self) -> float:
        return self.now

    def __call__(self, feed):
        x = feed["x"]
        self.batches.append(len(x))
        self.now += self.cost(len(x))
        return {"y": 2 * x}


@pytest.mark.parametrize("cost,enabled", [
    (lambda n: 1e-3 + 1e-4 * n, True),       # fixed overhead per run (GPU launch, Python): merging pays
    (lambda n: 1e-3 * n, False),             # cost proportional to the samples: nothing to gain
    (lambda n: 1e-3 * n ** 1.2, False),      # batched runs dearer per sample (cache misses): off
    (lambda n: 1e-3 * n * (0.97 if n > 1 else 1), False),  # 3 % cheaper: under the 5 % bar, off
    (lambda n: 1e-3 * n * (0.90 if n == 4 else 1), True),  # one size 10 % cheaper is enough
])
def test_decision_follows_the_measured_cost_per_sample(cost, enabled):
    runner = FakeRunner(cost)
    decision = choose(runner, INPUTS, max_batch=8, clock=runner.clock)
    assert decision.enabled is enabled, decision
    # The measured per-sample costs are the fake runner's own (independent of the decision code).
    for n, seconds in decision.per_sample_s.items():
        assert seconds == pytest.approx(cost(n) / n)
    assert set(decision.per_sample_s) == {1, 2, 4, 8}
    assert ("on" if enabled else "off") == decision.describe().split(":")[0]


def test_probe_respects_the_batch_limit_and_uses_every_size_alike():
    runner = FakeRunner(lambda n: 1e-3)
    per_sample = measure(runner, probe_inputs(INPUTS), max_batch=3, repeats=5, clock=runner.clock)
    assert set(per_sample) == {1, 2, 3}
    assert max(runner.batches) == 3
    assert {n: runner.batches.count(n) for n in (1, 2, 3)} == {1: 6, 2: 6, 3: 6}  # warm-up + 5 interleaved


def test_probe_inputs_follow_the_model_shapes():
    feed = probe_inputs([TensorMeta("x", "FP32", (-1, 3, -1)), TensorMeta("ids", "INT64", (-1, 5))])
    assert feed["x"].shape == (1, 3, 32) and feed["x"].dtype == np.float32
    assert feed["ids"].shape == (1, 5) and feed["ids"].dtype == np.int64


def test_gain_threshold_is_inclusive_at_five_percent():
    assert decide({1: 1.0, 2: 1.0 - MIN_GAIN}).enabled
    assert not decide({1: 1.0, 2: 1.0 - MIN_GAIN + 1e-6}).enabled
    assert not decide({1: 1.0}).enabled


def test_auto_mode_serves_a_model_without_batching_exactly_as_off(tmp_path, monkeypatch):
    """A model whose merged runs are no cheaper gets no batching at all (nothing to lose)."""
    import asyncio

    from deploykit.serve.models import Repository
    from deploykit.serve.settings import ServeSettings

    repo = tmp_path / "repo"
    (repo / "m" / "1").mkdir(parents=True)
    (repo / "m" / "1" / "model.onnx").write_bytes(b"")
    (repo / "m" / "config.pbtxt").write_text(
        'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\ndynamic_batching {}\n'
        'input [{ name: "x" data_type: TYPE_FP32 dims: [3] }]\noutput [{ name: "y" data_type: TYPE_FP32 dims: [3] }]\n')
    costs = {"linear": lambda n: 1e-4 * n, "overhead": lambda n: 1e-3 + 1e-5 * n}
    for label, cost in costs.items():
        runner = FakeRunner(cost)
        runner.infer = runner
        # The probe reads the fake runner's clock instead of the real one.
        monkeypatch.setattr(batching, "measure", lambda run, sample, max_batch, **kw: measure(
            run, sample, max_batch, clock=runner.clock))
        loaded = Repository.load(repo, ServeSettings(batching="auto"), runner_factory=lambda *_a: runner)
        mv = loaded.get("m")
        want = label == "overhead"
        assert mv.scheduler.batching is want and mv.model.batching is want
        assert mv.model.config.HasField("dynamic_batching") is want
        assert mv.model.config.parameters["deploykit_batching"].string_value.startswith("on" if want else "off")

        async def one(x):
            mv.scheduler.start()
            try:
                return await asyncio.gather(*(mv.scheduler.infer({"x": x[i:i + 1]}, 1) for i in range(len(x))))
            finally:
                await mv.scheduler.stop(5)

        runner.batches.clear()
        x = np.arange(12, dtype=np.float32).reshape(4, 3)
        outputs = asyncio.run(one(x))
        np.testing.assert_array_equal(np.concatenate([o["y"] for o in outputs]), 2 * x)
        if not want:
            assert runner.batches == [1, 1, 1, 1]   # served one by one, as with --batching off


def test_live_auto_mode_says_what_it_chose(model_repo, tmp_path):
    needs_serve_extra()
    import httpx

    with LiveServer(model_repo, log_dir=tmp_path) as live:   # auto is the default
        log = live.log()
        config = httpx.get(f"{live.url}/v2/models/se/config", timeout=30).json()
        metrics = httpx.get(f"{live.url}/metrics", timeout=30).text
    line = next(line for line in log.splitlines() if line.startswith("loaded se v1"))
    assert "measured per sample: batch 1" in line and "batch 4" in line
    chosen = config["parameters"]["deploykit_batching"]["string_value"]
    enabled = chosen.startswith("on")
    assert chosen in line
    assert ("dynamic_batching" in config) is enabled
    assert f'deploykit_dynamic_batching{{model="se",version="1"}} {1.0 if enabled else 0.0}' in metrics
    assert ("dynamic batching up to 4" in line) is enabled
