"""deploykit.bench as a library: statistics, memory, load, the check-before-timing loop with custom backends,
and torch.compile's plumbing (with the fast "eager" compile backend; inductor is what the CLI uses)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from deploykit.bench.stats import geomean, percentile, summarize


@pytest.mark.parametrize("n", [1, 2, 7, 100, 101])
def test_percentiles_match_numpy(n):
    values = sorted(np.random.default_rng(n).exponential(size=n).tolist())
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_summarize_in_ms_and_throughput_at_median():
    seconds = [0.004, 0.001, 0.002, 0.003, 0.010]
    stats = summarize(seconds, batch=8)
    assert stats.samples == 5
    assert stats.median_ms == pytest.approx(3.0)
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(10.0)
    assert stats.mean_ms == pytest.approx(float(np.mean(seconds)) * 1e3)
    assert stats.p90_ms == pytest.approx(float(np.percentile(np.array(seconds) * 1e3, 90)))
    assert stats.throughput == pytest.approx(8 / 0.003)
    with pytest.raises(ValueError):
        summarize([], 1)


def test_geomean():
    assert geomean([2.0, 8.0]) == pytest.approx(4.0)
    assert geomean([1.5]) == pytest.approx(1.5)
    assert np.isnan(geomean([])) and np.isnan(geomean([1.0, 0.0]))


def test_peak_memory_sees_a_transient_allocation():
    from deploykit.bench.memory import PeakMemory

    size = 64 * 2**20
    with PeakMemory("cpu") as mem:
        buf = np.ones(size, dtype=np.uint8)  # touched pages: resident
        del buf
    if mem.kind == "unavailable":
        pytest.skip("no /proc/self/status here")
    assert mem.kind == "rss_delta"
    assert size / 2**20 * 0.9 <= mem.mib <= size / 2**20 * 2


def test_load_monitor_reports_a_fraction_of_the_cores():
    from deploykit.bench.env import LoadMonitor, usable_cores

    monitor = LoadMonitor()
    if not monitor.available:
        pytest.skip("no /proc/stat here")
    monitor.start()
    time.sleep(0.01)
    monitor.stop()
    # 10 ms is far below what 10 ms CPU ticks can judge: no number, and the verdict says why.
    assert monitor.other_cores is None and "too short" in monitor.verdict(usable_cores())
    end = time.perf_counter() + 0.7
    while time.perf_counter() < end:  # our own work is not "other" load
        monitor.start()
        sum(i * i for i in range(20_000))   # many short stretches, as timed calls are
        monitor.stop()
    assert monitor.wall >= 0.5
    assert 0 <= monitor.other_cores <= usable_cores() + 0.5
    assert monitor.verdict(usable_cores()).split(":")[0] in ("QUIET", "LOADED")


# ------------------------------------------------------------------------------------------- the loop
class _Fixed:
    """A backend computing a known function of the input with numpy (or a wrong one, or failing)."""

    timer = "perf_counter"
    device = "cpu"
    variant = None

    def __init__(self, name, fn):
        self.name = self.label = name
        self.fn = fn
        self.calls = 0

    def skip_reason(self, batch):
        return "batch 2 unsupported" if batch == 2 else None

    def prepare(self, x):
        self.x = x

    def outputs(self):
        return [self.fn(self.x)]

    def call(self):
        self.calls += 1
        self.fn(self.x)

    def context(self):
        import contextlib

        return contextlib.nullcontext()

    def sync(self):
        pass

    def close(self):
        pass


@pytest.fixture(scope="module")
def tiny_source():
    from deploykit.bench.source import from_block

    return from_block("se", batches=(1, 2), size=(6, 5))


def _se_numpy(module):
    """SE written independently with numpy from the module's weights: the expected output."""
    w1 = module.fc1.weight.detach().numpy()[:, :, 0, 0]
    b1 = module.fc1.bias.detach().numpy()
    w2 = module.fc2.weight.detach().numpy()[:, :, 0, 0]
    b2 = module.fc2.bias.detach().numpy()

    def fn(x):
        pooled = x.mean(axis=(2, 3))
        hidden = np.maximum(pooled @ w1.T + b1, 0)
        gate = 1 / (1 + np.exp(-(hidden @ w2.T + b2)))
        return (x * gate[:, :, None, None]).astype(np.float32)

    return fn


def test_run_checks_then_times_and_keeps_wrong_answers_out(tiny_source):
    from deploykit.bench import BenchSettings, run_bench

    right = _Fixed("numpy-se", _se_numpy(tiny_source.reference))
    wrong = _Fixed("numpy-se-wrong", lambda x: _se_numpy(tiny_source.reference)(x) * 1.001)

    def broken_fn(x):
        raise RuntimeError("kernel exploded")

    broken = _Fixed("broken", broken_fn)
    settings = BenchSettings(backends=("torch",), batches=(1, 2), warmup=2, iters=5, rounds=2, threads=1)
    result = run_bench(tiny_source, settings, extra_backends=[right, wrong, broken])

    ok = result.row("numpy-se", 1)
    assert ok.status == "ok" and ok.outputs_checked and ok.stats.samples == 5
    assert ok.max_abs_err < 1e-5  # numpy and PyTorch agree on SE
    assert right.calls == 2 + 5  # warm-up + timed, not counting the checked first call

    bad = result.row("numpy-se-wrong", 1)
    assert bad.status == "failed" and bad.stats is None and "differ from PyTorch" in bad.reason
    assert wrong.calls == 2  # warmed up with the check pending, never timed
    assert bad.max_abs_err == pytest.approx(
        float(np.abs(_se_numpy(tiny_source.reference)(np.asarray(wrong.x)) * 0.001).max()), rel=1e-3)

    err = result.row("broken", 1)
    assert err.status == "failed" and "kernel exploded" in err.reason and err.stats is None

    for name in ("numpy-se", "numpy-se-wrong", "broken"):
        skipped = result.row(name, 2)
        assert skipped.status == "skipped" and skipped.reason == "batch 2 unsupported"
    assert result.row("torch-eager-safe", 2).status == "ok"
    assert result.passed is False
    assert result.as_dict()["passed"] is False


def test_compile_backend_runs_checked(tiny_source):
    pytest.importorskip("torch._dynamo")
    from deploykit.bench import BenchSettings, run_bench

    settings = BenchSettings(backends=("compile",), batches=(1, 2), warmup=1, iters=2, threads=1,
                             compile_backend="eager")
    result = run_bench(tiny_source, settings)
    rows = [r for r in result.rows if r.backend == "torch-compile"]
    assert [r.batch for r in rows] == [1, 2]
    assert all(r.status == "ok" and r.outputs_checked and r.stats is not None for r in rows)
    assert all(r.variant == "safe" for r in rows)


def test_cudagraph_skipped_on_cpu_with_reason(tiny_source):
    from deploykit.bench import BenchSettings, run_bench

    result = run_bench(tiny_source, BenchSettings(backends=("cudagraph",), batches=(1,), warmup=0, iters=1))
    (row,) = result.rows
    assert row.status == "skipped" and "CUDA" in row.reason


def test_thread_count_is_restored(tiny_source):
    import torch

    from deploykit.bench import BenchSettings, run_bench

    before = torch.get_num_threads()
    run_bench(tiny_source, BenchSettings(backends=("torch",), batches=(1,), warmup=0, iters=1, threads=1))
    assert torch.get_num_threads() == before


def test_interleaved_rounds_split_the_iterations():
    from deploykit.bench.run import _split

    assert _split(10, 3) == [4, 3, 3] and sum(_split(200, 5)) == 200
    assert _split(2, 5) == [1, 1]
