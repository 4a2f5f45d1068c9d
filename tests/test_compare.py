"""compare.py's chunked statistics against the plain whole-array formulation (Polygraphy's semantics)."""

import dataclasses

import numpy as np
import pytest

from deploykit import compare
from deploykit.compare import Comparison, Tolerance, compare_arrays, compare_outputs


def plain_stats(expected, actual, tol: Tolerance) -> dict:
    """The definition, written over whole float64 arrays with no chunking.

    For inputs whose non-finite values match: those pairs are equal and left out of every statistic.
    """
    e, a = np.asarray(expected, np.float64).ravel(), np.asarray(actual, np.float64).ravel()
    same = (np.isnan(e) & np.isnan(a)) | (np.isinf(e) & (e == a))
    e, a = e[~same], a[~same]
    assert np.isfinite(e).all() and np.isfinite(a).all(), "plain_stats is for matching non-finite values only"
    abs_err = np.abs(a - e)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = np.where(np.abs(e) > 0, abs_err / np.abs(e), np.where(abs_err > 0, np.inf, 0.0))
    out = {"max_abs": abs_err.max(), "max_rel": rel_err.max(), "mean_abs": abs_err.mean(),
           "cosine": float(np.dot(e, a) / (np.linalg.norm(e) * np.linalg.norm(a)))}
    if tol.mode == "elementwise":
        out["passed"] = not ((abs_err > tol.atol) & (rel_err > tol.rtol)).any()
        stat = np.max     # with rtol = 0 an element fails when abs > atol: the max error is the least atol
    else:
        stat = {"max": np.max, "mean": np.mean, "quantile": lambda v: np.quantile(v, tol.quantile)}[tol.mode]
        out["passed"] = stat(abs_err) <= tol.atol or stat(rel_err) <= tol.rtol
    out["min_atol"], out["min_rtol"] = stat(abs_err), stat(rel_err)
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


MODES = ["elementwise", "max", "mean", "quantile"]


@pytest.mark.parametrize("mode", MODES)
def test_matching_non_finite_values_are_left_out_of_the_statistics(mode):
    # NaN, +inf and -inf at the same places on both sides, spread over several chunks.
    rng = np.random.default_rng(1)
    size = 3 * compare._CHUNK + 77
    e = rng.standard_normal(size)
    a = e + rng.standard_normal(size) * 1e-5
    for value, step in ((np.nan, 501), (np.inf, 703), (-np.inf, 907)):
        e[::step] = a[::step] = value
    tol = Tolerance(atol=1e-5, rtol=1e-5, mode=mode)
    got = compare_arrays("y", e, a, tol)
    want = plain_stats(e, a, tol)
    assert got.passed == want["passed"]
    assert got.max_abs == pytest.approx(want["max_abs"], rel=1e-12)
    assert got.max_rel == pytest.approx(want["max_rel"], rel=1e-12)
    assert got.mean_abs == pytest.approx(want["mean_abs"], rel=1e-9)
    assert got.cosine == pytest.approx(want["cosine"], rel=1e-12)
    assert got.min_atol == pytest.approx(want["min_atol"], rel=1e-9)
    assert got.min_rtol == pytest.approx(want["min_rtol"], rel=1e-9)
    nonfinite = int((~np.isfinite(e)).sum())
    assert got.nonfinite_expected == got.nonfinite_actual == nonfinite > 0


def test_matching_nan_does_not_make_the_statistics_nan():
    # The reviewer's case: only the middle element differs, by 0.5 against an expected 1.
    got = compare_arrays("y", [np.nan, 1.0, 2.0], [np.nan, 1.5, 2.0], Tolerance())
    assert not got
    assert (got.max_abs, got.min_atol, got.max_rel, got.min_rtol) == (0.5, 0.5, 0.5, 0.5)
    assert got.mean_abs == 0.25     # over the two compared elements
    assert compare_arrays("y", [np.nan, 1.0, 2.0], [np.nan, 1.5, 2.0], Tolerance(atol=0.5, rtol=0))
    inf = compare_arrays("y", [np.inf, -np.inf, 4.0], [np.inf, -np.inf, 3.0], Tolerance())
    assert (inf.max_abs, inf.max_rel, inf.mean_abs) == (1.0, 0.25, 1.0)


MISMATCHED = {
    "inf against -inf": ([np.inf, 1.0], [-np.inf, 1.0]),
    "inf moved": ([np.inf, 1.0], [1.0, np.inf]),
    "NaN against inf": ([np.nan, 1.0], [np.inf, 1.0]),
    "NaN moved": ([np.nan, 1.0], [1.0, np.nan]),
    "inf where a number was expected": ([1.0, 1.0], [1.0, np.inf]),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(MISMATCHED))
def test_mismatched_non_finite_values_fail_in_every_mode(case, mode):
    e, a = MISMATCHED[case]
    for dtype in (np.float32, np.float64):
        got = compare_arrays("y", np.array(e, dtype), np.array(a, dtype), Tolerance(mode=mode))
        assert not got and "non-finite" in got.reason
        # No tolerance passes a mismatched NaN or inf, so none is the minimum passing one.
        assert got.min_atol == got.min_rtol == np.inf


@pytest.mark.parametrize("mode", MODES)
def test_a_finite_difference_that_overflows_is_an_infinite_error(mode):
    e, a = np.array([1.7e308, 1.0]), np.array([-1.7e308, 1.0])
    assert np.isfinite(e).all() and np.isfinite(a).all() and float(e[0]) - float(a[0]) == np.inf
    got = compare_arrays("y", e, a, Tolerance(atol=1e-5, rtol=1e-5, mode=mode))
    assert not got
    assert got.max_abs == np.inf and got.max_rel == np.inf and got.nonfinite_actual == 0
    assert got.min_atol == np.inf


@pytest.mark.parametrize("mode", MODES)
def test_min_passing_tolerances_are_the_least_that_pass(mode):
    # The reported minimum passes and the next smaller float fails, under the mode's own rule.
    rng = np.random.default_rng(2)
    e = rng.standard_normal(3 * compare._CHUNK + 5) + 3.0   # no zeros: every relative error is finite
    a = e + rng.standard_normal(e.size) * 1e-3
    tol = Tolerance(atol=0, rtol=0, mode=mode)
    got = compare_arrays("y", e, a, tol)
    want = plain_stats(e, a, tol)
    assert got.min_atol == pytest.approx(want["min_atol"], rel=1e-9)
    assert got.min_rtol == pytest.approx(want["min_rtol"], rel=1e-9)
    if mode in ("mean", "quantile"):   # well below the max error, which the minimum used to be
        assert got.min_atol < 0.9 * got.max_abs
    below = lambda v: float(np.nextafter(v, 0))  # noqa: E731
    assert compare_arrays("y", e, a, Tolerance(atol=got.min_atol, rtol=0, mode=mode))
    assert not compare_arrays("y", e, a, Tolerance(atol=below(got.min_atol), rtol=0, mode=mode))
    assert compare_arrays("y", e, a, Tolerance(atol=0, rtol=got.min_rtol, mode=mode))
    assert not compare_arrays("y", e, a, Tolerance(atol=0, rtol=below(got.min_rtol), mode=mode))


def test_quantile_of_relative_errors_reaches_inf_not_nan():
    # Errors against an expected 0 are infinitely relative; the 0.99 quantile of the sorted relative errors
    # [0, 0, 0, inf] interpolates 97 % of the way from 0 to inf, which is inf (numpy's lerp gives NaN).
    e, a = np.array([0.0, 1.0, 1.0, 1.0]), np.array([1.0, 1.0, 1.0, 1.0])
    got = compare_arrays("y", e, a, Tolerance(atol=1e-5, rtol=1e-5, mode="quantile", quantile=0.99))
    assert not got and got.min_rtol == np.inf and "nan" not in got.reason
    assert got.min_atol == pytest.approx(0.97)      # 0 + (1 - 0) * 0.97 on the sorted [0, 0, 0, 1]
    assert compare_arrays("y", e, a, Tolerance(atol=0, rtol=np.inf, mode="quantile", quantile=0.99))
    # At a quantile that lands exactly on a finite order statistic, the inf beyond it plays no part.
    assert compare_arrays("y", e, a, Tolerance(atol=0, rtol=0, mode="quantile", quantile=0.5)).min_rtol == 0.0


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_large_integers_are_compared_exactly(dtype):
    big = 2**53 if dtype == np.int64 else 2**63
    e = np.array([big + 1, big + 2, 7], dtype)
    a = np.array([big, big + 2, 7], dtype)
    assert float(e[0]) == float(a[0])       # what a float64 comparison would see
    tight = compare_arrays("y", e, a, Tolerance(atol=0, rtol=0))
    assert not tight and tight.max_abs == 1.0 and tight.min_atol == 1.0
    assert compare_arrays("y", e, a, Tolerance(atol=1, rtol=0))
    assert not compare_arrays("y", e, a, Tolerance(atol=0.99, rtol=0))
    for mode in ("max", "mean", "quantile"):
        assert not compare_arrays("y", e, a, Tolerance(atol=0, rtol=0, mode=mode))
    assert compare_arrays("y", e, e.copy(), Tolerance(atol=0, rtol=0))


def test_extreme_int64_differences_do_not_wrap():
    e = np.array([np.iinfo(np.int64).min, 5, 0], np.int64)
    a = np.array([np.iinfo(np.int64).max, 5, -3], np.int64)
    got = compare_arrays("y", e, a, Tolerance(atol=0, rtol=0))
    true_max = max(abs(int(x) - int(y)) for x, y in zip(e, a))   # Python ints: exact
    assert true_max == 2**64 - 1
    assert not got and got.max_abs == float(true_max)
    assert got.min_atol >= true_max and compare_arrays("y", e, a, Tolerance(atol=got.min_atol, rtol=0))
    assert got.max_rel == np.inf                                   # 3 against an expected 0
    # Narrower integers take the float64 path, which holds them and their differences exactly.
    i32 = np.iinfo(np.int32)
    narrow = compare_arrays("y", np.array([i32.min], np.int32), np.array([i32.max], np.int32), Tolerance(0, 0))
    assert narrow.max_abs == narrow.min_atol == 2**32 - 1
    # uint64 against int64 has no common integer type in numpy; the difference is still exact.
    u = np.array([2**64 - 1, 2**63 + 1], np.uint64)
    s = np.array([-1, 2**63 - 1], np.int64)
    mixed = compare_arrays("y", u, s, Tolerance(atol=0, rtol=0))
    assert mixed.max_abs == float(2**64) and mixed.min_atol >= 2**64
    assert compare_arrays("y", np.array([True, False]), np.array([True, False]), Tolerance(atol=0, rtol=0))
    assert not compare_arrays("y", np.array([True, False]), np.array([True, True]), Tolerance(atol=0, rtol=0))


def test_aggregate_max_is_order_independent_with_nan():
    # Python's max() keeps or drops a NaN depending on where it is; the aggregate must not.
    ok = compare_arrays("b", [1.0, 2.0], [1.0, 2.5], Tolerance())
    unknown = dataclasses.replace(ok, name="a", max_abs=float("nan"), max_rel=float("nan"))
    for outputs in ([unknown, ok], [ok, unknown]):
        agg = Comparison(outputs)
        assert np.isnan(agg.max_abs) and np.isnan(agg.max_rel)
    assert Comparison([ok]).max_abs == 0.5 and np.isnan(Comparison([]).max_abs)
    # The reviewer's case end to end: a NaN where a number was expected, in either output order.
    exp = {"a": np.array([np.nan, 1.0]), "b": np.array([1.0, 2.0])}
    act = {"a": np.array([1.0, 1.0]), "b": np.array([1.0, 2.5])}
    forward = compare_outputs(exp, act, Tolerance())
    backward = compare_outputs(dict(reversed(list(exp.items()))), act, Tolerance())
    assert forward.max_abs == backward.max_abs == np.inf
    assert forward.max_rel == backward.max_rel == np.inf
