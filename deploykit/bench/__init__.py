"""Benchmarks across backends with every backend's outputs checked against PyTorch before it is timed.

    from deploykit.bench import BenchSettings, run_bench, source
    src = source.from_block("se", batches=(1, 8))
    result = run_bench(src, BenchSettings(backends=("torch", "ort"), batches=(1, 8)))
    result.as_dict(); result.write_csv("se.csv"); result.plot("se.png")

Modules: `source` (what runs), `backends` (how it runs), `run` (the check-then-time loop), `result` (JSON,
CSV, table, plot), `stats`, `memory`, `env` (machine, versions, background load). Importing this package does
not import torch; the functions that need it import it.
"""

from __future__ import annotations

from deploykit.bench.backends import BACKEND_NAMES, DEFAULT_BACKENDS
from deploykit.bench.result import BenchResult, BenchRow
from deploykit.bench.run import BenchSettings, run_bench

__all__ = ["BACKEND_NAMES", "DEFAULT_BACKENDS", "BenchResult", "BenchRow", "BenchSettings", "run_bench"]
