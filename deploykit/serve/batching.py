"""Whether dynamic batching pays for a model, measured at start-up (`--batching auto`, the default).

Merging concurrent requests pays only where one run of n samples costs less than n runs of one: on a GPU
almost always, on a few CPU cores often not (the issue measured se 10-30 % slower with batching at
concurrency 8). So each batchable model is timed through the path the scheduler would take: n single
samples concatenated, run once and split back, against one sample run alone, at n = 2, 4, 8 (up to the
batch limit), repeats interleaved so that a busy machine disturbs both alike, medians compared.

Batching is turned on when some n costs at least `MIN_GAIN` (5 %) less per sample than a single run, and
off otherwise, so a model whose batched runs are no cheaper is served exactly as without batching (no
concatenation, no splitting, nothing to lose). The choice is logged at start-up, written into the model's
config as served (`dynamic_batching` present or not, plus a `deploykit_batching` parameter saying why),
and exported as the `deploykit_dynamic_batching` gauge.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

MIN_GAIN = 0.05
PROBE_SIZES = (2, 4, 8)
FREE_DIM = 32       # size given to a free non-batch dim (dynamic H/W) when probing
REPEATS = 7

RunFn = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class BatchingDecision:
    enabled: bool
    per_sample_s: dict[int, float]   # batch size -> median seconds per sample (1 = alone)
    reason: str

    def describe(self) -> str:
        return f"{'on' if self.enabled else 'off'}: {self.reason}"


def decide(per_sample_s: Mapping[int, float], min_gain: float = MIN_GAIN) -> BatchingDecision:
    """On when some merged size costs at least `min_gain` less per sample than a lone sample."""
    alone = per_sample_s[1]
    merged = {n: t for n, t in per_sample_s.items() if n > 1}
    if not merged or alone <= 0:
        return BatchingDecision(False, dict(per_sample_s), "no merged size could be measured")
    best = min(merged, key=merged.get)
    ratio = merged[best] / alone
    if ratio <= 1 - min_gain:
        return BatchingDecision(True, dict(per_sample_s), f"a merged batch of {best} costs {ratio:.2f}x per sample "
                                                           "of a lone request")
    return BatchingDecision(False, dict(per_sample_s), f"merged batches cost {ratio:.2f}x per sample at best "
                                                        f"(batch {best}); under {1 - min_gain:.2f}x is needed")


def probe_inputs(inputs, seed: int = 0) -> dict[str, np.ndarray]:
    """One sample (batch 1) for each input of the model, free dims set to FREE_DIM."""
    rng = np.random.default_rng(seed)
    feed = {}
    for meta in inputs:
        shape = (1,) + tuple(FREE_DIM if d < 0 else d for d in meta.shape[1:])
        if meta.dtype.kind == "f":
            feed[meta.name] = rng.standard_normal(shape).astype(meta.dtype)
        else:
            feed[meta.name] = np.zeros(shape, dtype=meta.dtype)
    return feed


def merged_run(run: RunFn, sample: Mapping[str, np.ndarray], n: int) -> None:
    """What the scheduler does for n merged single-sample requests: concatenate, run, split."""
    feed = dict(sample) if n == 1 else {k: np.concatenate([v] * n, axis=0) for k, v in sample.items()}
    outputs = run(feed)
    if n > 1:
        for array in outputs.values():
            _ = [array[i:i + 1] for i in range(n)]


def measure(run: RunFn, sample: Mapping[str, np.ndarray], max_batch: int, repeats: int = REPEATS,
            clock: Callable[[], float] = time.perf_counter) -> dict[int, float]:
    """Median seconds per sample for a lone sample and for each merged size up to `max_batch`."""
    sizes = [1] + [n for n in PROBE_SIZES if n <= max_batch]
    if max_batch > 1 and max_batch not in sizes and max_batch < PROBE_SIZES[-1]:
        sizes.append(max_batch)
    for n in sizes:  # warm-up: first runs allocate and pick kernels
        merged_run(run, sample, n)
    times: dict[int, list[float]] = {n: [] for n in sizes}
    for _ in range(repeats):
        for n in sizes:   # interleaved: load on the machine hits every size alike
            start = clock()
            merged_run(run, sample, n)
            times[n].append((clock() - start) / n)
    return {n: statistics.median(t) for n, t in times.items()}


def choose(run: RunFn, inputs, max_batch: int, **kwargs) -> BatchingDecision:
    """Measure and decide for one model (its runner's infer function and its input metadata)."""
    return decide(measure(run, probe_inputs(inputs), max_batch, **kwargs))
