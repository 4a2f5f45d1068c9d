"""Verify every candidate at every timed batch size, then time them interleaved and pick the fastest.

Interleaving: each round times `iters` calls of every live candidate in turn (after one untimed call that
wakes its threads), the order reversed every other round, so load that comes and goes on a shared machine
falls on all of them alike. A candidate's
score is the geometric mean over batch sizes of its median call time; the pick is the best score among the
candidates never slower than the baseline (OpenVINO's default) at any batch size.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

from deploykit.tune.candidates import Candidate


@dataclass
class Choice:
    pick: Candidate | None
    runner_up: Candidate | None
    why: str


def verify(cands: list[Candidate], inputs: dict, expected: dict, input_name: str, threads: int | None,
           log: Callable[[str], None] = lambda _m: None) -> None:
    """Open each candidate and judge its outputs at every batch (first call also compiles for the shape)."""
    from deploykit.precisions.gate import judge

    for c in cands:
        if c.status == "failed":
            continue
        log(f"verify {c.name}")
        try:
            c.open(threads)
            for batch, x in inputs.items():
                actual = c.runner.infer({input_name: x})
                cmp = judge(expected[batch], actual, c.limits, metrics=c.metrics, shape=tuple(x.shape))
                if not cmp:
                    reasons = "; ".join(o.reason for o in cmp.outputs if o.reason)
                    c.status, c.reason = "failed", f"batch {batch}: {reasons}"
                    break
            else:
                c.status = "ok"
        except Exception as exc:  # noqa: BLE001 - an engine that refuses the graph is a failed candidate
            text = getattr(exc, "one_line", None)
            c.status, c.reason = "failed", (text() if callable(text) else f"{type(exc).__name__}: {exc}")[:300]
        if c.status == "failed":
            c.close()


def time_interleaved(cands: list[Candidate], inputs: dict, input_name: str, *, rounds: int, iters: int,
                     warmup: int = 2, log: Callable[[str], None] = lambda _m: None) -> None:
    live = [c for c in cands if c.status == "ok"]
    for batch, x in inputs.items():
        feed = {input_name: x}
        for c in live:
            for _ in range(warmup):
                c.runner.infer(feed)
            c.times_ms[batch] = []
        for r in range(rounds):
            for c in (live if r % 2 == 0 else reversed(live)):
                infer = c.runner.infer
                infer(feed)   # untimed: wakes this engine's threads after the others ran
                for _ in range(iters):
                    t0 = time.perf_counter()
                    infer(feed)
                    c.times_ms[batch].append((time.perf_counter() - t0) * 1e3)
        log(f"batch {batch}: " + ", ".join(f"{c.name} {median_ms(c, batch):.3f} ms" for c in live))


def median_ms(c: Candidate, batch: int) -> float:
    return statistics.median(c.times_ms[batch]) if c.times_ms.get(batch) else float("nan")


def score(c: Candidate) -> float:
    """Geometric mean over batch sizes of the median call time (ms); inf when not timed."""
    values = [median_ms(c, b) for b in c.times_ms]
    if not values or any(not v > 0 for v in values):
        return float("inf")
    return math.exp(sum(math.log(v) for v in values) / len(values))


def speedup(c: Candidate, base: Candidate) -> float:
    """Geometric mean over batch sizes of base's median / c's median."""
    ratios = [median_ms(base, b) / median_ms(c, b) for b in c.times_ms if b in base.times_ms]
    if not ratios or any(not r > 0 for r in ratios):
        return float("nan")
    return math.exp(sum(math.log(r) for r in ratios) / len(ratios))


def never_slower(c: Candidate, baseline: Candidate) -> bool:
    """c's median is at or under the baseline's at every batch size both were timed at."""
    shared = [b for b in baseline.times_ms if b in c.times_ms]
    return bool(shared) and all(median_ms(c, b) <= median_ms(baseline, b) for b in shared)


def choose(cands: list[Candidate]) -> Choice:
    """The fastest passing installable candidate by geomean, among those never slower than a baseline.

    A baseline (openvino-default: what `compile_model(onnx)` gives a user for free) is never installed, but a
    pick that loses to it at some batch size is no pick: a geomean win at batch 8 must not hide a loss at
    batch 1. Only when no candidate beats the baseline at every batch does the plain geomean decide, and the
    reason says so.
    """
    ranked = sorted((c for c in cands if c.status == "ok" and c.installable), key=score)
    if not ranked:
        return Choice(None, None, "no candidate passed its gate")
    baselines = [c for c in cands if c.status == "ok" and not c.installable and c.times_ms]
    caveat = ""
    if baselines:
        winners = [c for c in ranked if all(never_slower(c, b) for b in baselines)]
        if winners:
            losers = [c for c in ranked if c not in winners]
            ranked = winners + losers       # a loser is still a runner-up when it is the only other one
        else:
            names = ", ".join(b.name for b in baselines)
            caveat = f"; no candidate was at least as fast as {names} at every batch size, so the geomean decided"
    pick = ranked[0]
    default = next((c for c in ranked if c.name == "ort-fp32" and c is not pick), None)
    if default is not None:   # a per-batch loss against what deploykit runs without tune is said, not hidden
        worse = [b for b in pick.times_ms if b in default.times_ms and median_ms(pick, b) > median_ms(default, b)]
        caveat += "".join(f"; slower than ort-fp32 at batch {b} ({median_ms(pick, b):.3f} vs "
                          f"{median_ms(default, b):.3f} ms)" for b in worse)
    if len(ranked) == 1:
        return Choice(pick, None, "the only candidate that passed" + caveat)
    second = ranked[1]
    slower = score(second) / score(pick) - 1
    if slower >= 0:
        why = (f"{second.name} is {slower * 100:.1f}% slower ({score(second):.3f} vs {score(pick):.3f} ms "
               f"geomean median over batch sizes)")
    else:
        loses = next(b.name for b in baselines if not never_slower(second, b))
        why = (f"{second.name} is {-slower * 100:.1f}% faster by geomean ({score(second):.3f} vs "
               f"{score(pick):.3f} ms) but slower than {loses} at some batch size")
    return Choice(pick, second, why + caveat)
