"""compare.py's chunked statistics against the plain whole-array formulation (Polygraphy's semantics)."""

import numpy as np
import pytest

from deploykit import compare
from deploykit.compare import Tolerance, compare_arrays, compare_outputs


def plain_stats(expected, actual, tol: Tolerance) -> dict:
    """The definition, written over whole float64 arrays with no chunking."""
    e, a = np.asarray(expected, np.float64), np.asarray(actual, np.float64)
    abs_err = np.abs(a - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = np.where(np.abs(e) > 0, abs_err / np.abs(e), np.where(abs_err > 0, np.inf, 0.0))
    finite = np.isfinite(abs_err)
    out = {"max_abs": abs_err.max(), "max_rel": rel_err.max(), "mean_abs": abs_err.mean(),
           "cosine": float(np.dot(e.ravel(), a.ravel()) / (np.linalg.norm(e) * np.linalg.norm(a)))}
    if tol.mode == "elementwise":
        out["passed"] = not ((abs_err > tol.atol) & (rel_err > tol.rtol) & finite).any()
    else:
        stat = {"max": np.max, "mean": np.mean, "quantile": lambda v: np.quantile(v, tol.quantile)}[tol.mode]
        out["passed"] = stat(abs_err[finite]) <= tol.atol or stat(rel_err[finite]) <= tol.rtol
    return out


@pytest.mark.parametrize("mode", ["elementwise", "max", "mean", "quantile"])
@pytest.mark.parametrize("noise", [1e-7, 3e-5])
def test_chunked_statistics_equal_the_definition(mode, noise):
    # Several chunks plus a ragged tail, with exact zeros in the expectation (x/0 and 0/0 cases).
    rng = np.random.default_rng(0)
    size = 2 * compare._CHUNK + 1234
    e = rng.standard_normal(size).astype(np.float32)
    e[::997] = 0.0
    a = (e + rng.standard_normal(size).astype(np.float32) * noise).astype(np.float32)
    a[::1994] = 0.0   # some zeros stay exact (0/0), others get noise (x/0)
    tol = Tolerance(atol=1e-5, rtol=1e-5, mode=mode)
    got = compare_arrays("y", e.reshape(2, -1, 1), a.reshape(2, -1, 1), tol)
    want = plain_stats(e, a, tol)
    assert got.passed == want["passed"]
    assert got.max_abs == pytest.approx(want["max_abs"], rel=1e-12)
    assert got.max_rel == want["max_rel"]          # inf here: a noisy value where 0 was expected
    assert got.mean_abs == pytest.approx(want["mean_abs"], rel=1e-9)
    assert got.cosine == pytest.approx(want["cosine"], rel=1e-12)


def test_verdict_flips_at_the_tolerance():
    e = np.linspace(1, 2, 1000, dtype=np.float32)
    a = e * np.float32(1 + 2e-5)
    assert not compare_arrays("y", e, a, Tolerance(atol=0, rtol=1e-5))
    assert compare_arrays("y", e, a, Tolerance(atol=0, rtol=3e-5))
    assert compare_arrays("y", e, a, Tolerance(atol=1e-3, rtol=0))   # either tolerance suffices


def test_non_finite_values_must_match():
    e = np.array([1.0, np.nan, 3.0], np.float32)
    assert compare_arrays("y", e, e.copy(), Tolerance())
    moved = np.array([np.nan, 2.0, 3.0], np.float32)
    result = compare_arrays("y", e, moved, Tolerance())
    assert not result and "non-finite" in result.reason
    inf = compare_arrays("y", np.ones(4, np.float32), np.array([1, 1, np.inf, 1], np.float32), Tolerance())
    assert not inf and inf.nonfinite_actual == 1 and inf.nonfinite_expected == 0


def test_shape_mismatch_and_missing_output_fail_with_a_reason():
    bad = compare_arrays("y", np.ones((2, 3)), np.ones((3, 2)), Tolerance())
    assert not bad and "shape" in bad.reason
    missing = compare_outputs({"y": np.ones(3)}, {}, Tolerance())
    assert not missing and missing.outputs[0].reason == "output missing"
