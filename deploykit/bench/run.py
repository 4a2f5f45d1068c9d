"""The benchmark loop: check every backend's outputs against PyTorch, then time the ones that matched.

Per batch size:
  1. one seeded input; the reference outputs come from the eager reference module in fp32 on the CPU;
  2. every backend prepares for the shape and runs once (compile, capture, device copies happen here,
     recorded as `setup_s`), then makes its warm-up calls; peak memory is measured from the first call
     through the warm-up;
  3. its outputs from the first call are compared with the reference at the source's tolerance; a mismatch
     marks the row failed with the error, and it is never timed;
  4. timed calls, split into `rounds` that cycle through the backends, alternating direction, so slow drifts
     in machine load spread over all backends instead of favouring whichever ran first.
Every backend runs with the same intra-op thread count. On a GPU, PyTorch's TF32 modes are switched off for
the run, so every backend is held to the same fp32 tolerance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from deploykit.bench.backends import DEFAULT_BACKENDS, BenchBackend, make_backends
from deploykit.bench.env import LoadMonitor, environment
from deploykit.bench.memory import PeakMemory
from deploykit.bench.result import BenchResult, BenchRow
from deploykit.bench.stats import summarize


@dataclass
class BenchSettings:
    """How to benchmark.

    Attributes:
        backends: names from deploykit.bench.backends.BACKEND_NAMES, in row order.
        batches: batch sizes.
        warmup: untimed calls per backend and batch before timing.
        iters: timed calls per backend and batch.
        rounds: the timed calls are split into this many interleaved rounds across backends.
        threads: intra-op threads for PyTorch and ONNX Runtime alike (None: PyTorch's default).
        device: "cpu" or "cuda[:N]".
        seed: seed of the input.
        compile_backend: torch.compile backend ("inductor"; tests use "eager" to stay fast).
    """

    backends: tuple[str, ...] = DEFAULT_BACKENDS
    batches: tuple[int, ...] = (1, 8, 32)
    warmup: int = 10
    iters: int = 100
    rounds: int = 1
    threads: int | None = None
    device: str = "cpu"
    seed: int = 0
    compile_backend: str = "inductor"


def time_calls(backend: BenchBackend, n: int) -> list[float]:
    """Seconds per call for `n` calls of `backend.call()`."""
    if backend.timer == "cuda_events":
        import torch

        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        for start, end in events:
            start.record()
            backend.call()
            end.record()
        torch.cuda.synchronize(backend.device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    out = []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        backend.call()
        backend.sync()
        out.append(clock() - t0)
    return out


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _error_line(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def run_bench(source, settings: BenchSettings, *, log: Callable[[str], None] = lambda _msg: None,
              extra_backends: list[BenchBackend] | None = None) -> BenchResult:
    """Benchmark `source` (deploykit.bench.source.BenchSource) as `settings` say.

    Args:
        source: what to run.
        settings: backends, batch sizes, iterations, threads, device.
        log: receives one-line progress messages.
        extra_backends: already built backends appended after the named ones (tests, custom runtimes).

    Returns:
        The result; `result.passed` is False when any backend failed its output check or broke.
    """
    try:
        import torch
    except ImportError:  # the base install: ONNX Runtime (and TensorRT) rows only, ORT's own thread default
        torch = None
    previous_threads = torch.get_num_threads() if torch else None
    threads = settings.threads or previous_threads
    if torch:
        torch.set_num_threads(threads)
    device = settings.device
    backends: list[BenchBackend] = []
    previous_tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) if torch else None
    if torch and device.startswith("cuda"):
        # fp32 means fp32: TF32 convolutions and matmuls (on by default for cuDNN) miss the fp32 tolerance.
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        env = environment(device, threads)
        backends, unavailable = make_backends(settings.backends, source, device=device, threads=threads,
                                              compile_backend=settings.compile_backend, log=log)
        backends += list(extra_backends or [])
        tol = source.tolerance
        result = BenchResult(
            source=source.describe(),
            settings={**asdict(settings), "backends": list(settings.backends), "batches": list(settings.batches),
                      "threads": threads, "atol": tol.atol if tol else None, "rtol": tol.rtol if tol else None},
            environment=env,
        )
        monitor = LoadMonitor()
        for batch in settings.batches:
            result.rows += _bench_batch(source, settings, batch, backends, monitor, log)
            for u in unavailable:
                result.rows.append(BenchRow(u.name, u.label, u.variant, device, batch, u.status, u.reason))
        # Rows in a stable order: backend as requested, then batch.
        order = {name: i for i, name in enumerate(dict.fromkeys(r.backend for r in result.rows))}
        result.rows.sort(key=lambda r: (order[r.backend], r.batch))
        env["load_average_end"] = _load_now()
        result.load = {"other_cores": monitor.other_cores, "timed_seconds": round(monitor.wall, 2),
                       "verdict": monitor.verdict(env["cores"])}
        return result
    finally:
        for b in backends:
            try:
                b.close()
            except Exception:  # noqa: BLE001 - freeing resources must not hide the results (or the error)
                pass
        if torch:
            torch.set_num_threads(previous_threads)
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous_tf32


def _load_now():
    from deploykit.bench.env import load_average

    return load_average()


def _bench_batch(source, settings, batch, backends, monitor, log) -> list[BenchRow]:
    from deploykit.compare import compare_outputs

    x32 = source.make_input(batch, settings.seed)   # one array, or named inputs each in its dtype
    expected = source.expected(x32)   # PyTorch's reference runs in fp32 whatever the graph takes
    x = source.graph_feed(x32)
    against = "PyTorch reference (fp32, CPU)" if expected is not None else None
    rows: list[BenchRow] = []
    live: list[tuple[BenchBackend, BenchRow]] = []
    for backend in backends:
        row = BenchRow(backend.name, backend.label, backend.variant, backend.device, batch, timer=backend.timer)
        rows.append(row)
        skip = backend.skip_reason(batch)
        if skip:
            row.status, row.reason = "skipped", skip
            continue
        log(f"batch {batch}: {backend.label}: set up, first call and {settings.warmup} warm-up calls")
        t0 = time.perf_counter()
        try:
            backend.prepare(x)
            # Peak memory from before the first call at this shape through the warm-up (see memory.py); the
            # comparison's own float64 copies come after, outside the measurement.
            with PeakMemory(backend.device) as mem:
                actual = backend.outputs()
                row.setup_s = time.perf_counter() - t0
                with backend.context():
                    for _ in range(settings.warmup):
                        backend.call()
                    backend.sync()
        except Exception as exc:  # noqa: BLE001 - a backend that breaks is a failed row, the others go on
            row.status, row.reason = "failed", f"error while running: {_error_line(exc)}"
            continue
        if expected is None:
            row.status = "unverified"
            row.reason = source.export_info.get("unverified", "outputs not checked: no PyTorch source (no deploykit "
                                                                  "manifest beside the ONNX file)")
        else:
            names = list(expected)
            if len(actual) != len(names):
                row.status = "failed"
                row.reason = f"outputs differ from PyTorch: {len(actual)} outputs, expected {len(names)}; not timed"
                continue
            limits = getattr(backend, "gate", None)   # a reduced precision's own gate (deploykit.precisions)
            if limits is not None:
                from deploykit.precisions.gate import judge

                cmp = judge(expected, dict(zip(names, actual)), limits)
            else:
                cmp = compare_outputs(expected, dict(zip(names, actual)), source.tolerance)
            row.outputs_checked, row.checked_against = True, against
            row.max_abs_err, row.max_rel_err = cmp.max_abs, cmp.max_rel
            if not cmp:
                reasons = "; ".join(o.reason for o in cmp.outputs if o.reason)
                row.status = "failed"
                row.reason = (f"outputs differ from PyTorch (max abs {cmp.max_abs:.3g}, max rel "
                              f"{cmp.max_rel:.3g}): {reasons}; not timed")
                continue
        untracked = getattr(backend, "untracked_memory", None)  # duck-typed extra backends may lack it
        if untracked:
            row.mem_kind = f"not measured: {untracked}"
        else:
            row.peak_mem_mib, row.mem_kind = mem.mib, mem.kind
        live.append((backend, row))

    samples: dict[int, list[float]] = {id(b): [] for b, _ in live}
    for i, chunk in enumerate(_split(settings.iters, settings.rounds)):
        order = live if i % 2 == 0 else list(reversed(live))
        for backend, row in order:
            if row.status == "failed":
                continue
            try:
                with backend.context():
                    monitor.start()
                    try:
                        samples[id(backend)] += time_calls(backend, chunk)
                    finally:
                        monitor.stop()
            except Exception as exc:  # noqa: BLE001
                row.status, row.reason = "failed", f"error during timed calls: {_error_line(exc)}"
    for backend, row in live:
        if row.status != "failed" and samples[id(backend)]:
            row.stats = summarize(samples[id(backend)], batch)
            log(f"batch {batch}: {backend.label}: median {row.stats.median_ms:.3f} ms")
    return rows
