"""The reduced-precision gate: relative L2 and cosine as their textbook formulas, per-output limits, and
verdicts that fail when an output moves."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.precisions.gate import DEFAULT_LIMITS, GateLimits, cosine, judge, rel_l2


def test_metrics_match_independent_formulas():
    scipy_distance = pytest.importorskip("scipy.spatial.distance")
    rng = np.random.default_rng(0)
    e = rng.standard_normal((2, 5, 3)).astype(np.float32)
    a = e + 0.01 * rng.standard_normal(e.shape).astype(np.float32)
    assert rel_l2(e, a) == pytest.approx(np.sqrt(((a.astype(float) - e) ** 2).sum() / (e.astype(float) ** 2).sum()))
    assert cosine(e, a) == pytest.approx(1 - scipy_distance.cosine(e.ravel(), a.ravel()), abs=1e-12)
    assert rel_l2(e, e) == 0 and cosine(e, e) == pytest.approx(1.0)
    assert cosine(e, -e) == pytest.approx(-1.0)


def test_judge_passes_small_noise_and_fails_a_scaled_output():
    rng = np.random.default_rng(1)
    e = {"out": rng.standard_normal((4, 10)).astype(np.float32)}
    near = {"out": e["out"] * 1.001}
    metrics = []
    assert judge(e, near, DEFAULT_LIMITS["int8"], metrics=metrics, shape=(4, 10))
    assert metrics[0]["rel_l2"] == pytest.approx(1e-3, rel=1e-3) and metrics[0]["shape"] == [4, 10]
    scaled = {"out": e["out"] * 1.5}   # cosine 1, but half again as large: relative L2 catches it
    cmp = judge(e, scaled, DEFAULT_LIMITS["int8"])
    assert not cmp and "relative L2 0.5" in cmp.outputs[0].reason
    noise = {"out": rng.standard_normal((4, 10)).astype(np.float32)}
    assert "cosine" in judge(e, noise, DEFAULT_LIMITS["int8"]).outputs[0].reason


def test_per_output_limits_and_absolute_limit():
    e = {"a": np.ones(8, np.float32), "b": np.ones(8, np.float32)}
    act = {"a": e["a"] * 1.05, "b": e["b"] * 1.05}
    loose = GateLimits(max_rel_l2=0.1, min_cosine=0.99)
    strict = GateLimits(max_rel_l2=0.01, min_cosine=0.99)
    cmp = judge(e, act, loose, per_output={"b": strict})
    verdicts = {o.name: bool(o) for o in cmp.outputs}
    assert verdicts == {"a": True, "b": False}
    capped = GateLimits(max_rel_l2=0.1, min_cosine=0.99, max_abs=0.01)
    assert "max abs" in judge(e, act, capped).outputs[0].reason


def test_missing_or_misshapen_output_fails():
    e = {"out": np.ones((2, 3), np.float32)}
    assert not judge(e, {"out": np.ones((3, 2), np.float32)}, DEFAULT_LIMITS["bf16"])
    assert not judge(e, {}, DEFAULT_LIMITS["bf16"])
