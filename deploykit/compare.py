"""Output comparison with Polygraphy's semantics, returning data rather than a boolean.

An element fails only when BOTH its absolute error exceeds `atol` and its relative error exceeds `rtol`
(relative to |expected|). Non-finite values must match exactly: NaN where the expectation has NaN, +inf and
-inf in the same places with the same sign. Such matching pairs are equal values, so they are left out of the
error statistics; any other non-finite value, or a finite difference that overflows, is an infinite error.
Integer outputs are compared in integer arithmetic, so int64 values above 2**53 are not rounded together.

Besides the verdict, every comparison carries max/mean absolute and relative error, cosine similarity, NaN/Inf
counts and the smallest tolerances that would have passed under the comparison's own mode, so a report can say
by how much a check passed or failed. `bool(comparison)` is the verdict.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

CHECK_MODES = ("elementwise", "max", "mean", "quantile")


@dataclass
class Tolerance:
    atol: float = 1e-5
    rtol: float = 1e-5
    mode: str = "elementwise"
    quantile: float = 0.99

    def __post_init__(self):
        if self.mode not in CHECK_MODES:
            raise ValueError(f"unknown check mode {self.mode!r}; valid: {', '.join(CHECK_MODES)}")


@dataclass
class OutputComparison:
    name: str
    passed: bool
    shape: tuple
    max_abs: float
    mean_abs: float
    max_rel: float
    cosine: float
    min_atol: float       # smallest atol that passes with rtol = 0, under this mode's rule (inf: none does)
    min_rtol: float       # smallest rtol that passes with atol = 0
    nonfinite_expected: int
    nonfinite_actual: int
    atol: float
    rtol: float
    mode: str
    reason: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclass
class Comparison:
    outputs: list[OutputComparison]

    def __bool__(self) -> bool:
        return bool(self.outputs) and all(self.outputs)

    @property
    def max_abs(self) -> float:
        return worst(o.max_abs for o in self.outputs)

    @property
    def max_rel(self) -> float:
        return worst(o.max_rel for o in self.outputs)

    def as_dict(self) -> dict:
        return {"passed": bool(self), "max_abs": self.max_abs, "max_rel": self.max_rel,
                "outputs": [o.as_dict() for o in self.outputs]}


def worst(values) -> float:
    """The largest value, NaN if any is NaN: Python's max() would keep or drop a NaN depending on the order."""
    values = list(values)
    return float(np.max(values)) if values else float("nan")


def compare_arrays(name: str, expected, actual, tol: Tolerance) -> OutputComparison:
    exp = np.asarray(expected)
    act = np.asarray(actual)
    if exp.shape != act.shape:
        nonfinite_e = int((~np.isfinite(exp.astype(np.float64, copy=False))).sum())
        nonfinite_a = int((~np.isfinite(act.astype(np.float64, copy=False))).sum())
        return OutputComparison(name, False, tuple(act.shape), float("inf"), float("inf"), float("inf"), float("nan"),
                                float("inf"), float("inf"), nonfinite_e, nonfinite_a, tol.atol, tol.rtol, tol.mode,
                                reason=f"shape {tuple(act.shape)} != expected {tuple(exp.shape)}")
    flat_e, flat_a = exp.reshape(-1), act.reshape(-1)
    stats = _ErrorStats(tol)
    # float64 would round int64 values above 2**53 together, so 64-bit integers keep to integer arithmetic
    # (float64 holds every narrower integer, and every difference of two, exactly).
    integer = exp.dtype.kind in "biu" and act.dtype.kind in "biu" and 8 in (exp.dtype.itemsize, act.dtype.itemsize)
    # Chunks keep the float64 temporaries in cache: a 32 x 256 x 56 x 56 output is 25 M elements.
    # 8 K elements (64 KiB a temporary) compared 25 M in 0.2 s here; 256 K-element chunks took 0.7 s.
    # Overflow, inf - inf and x / 0 are expected and handled below (an overflowing product only leaves the
    # cosine NaN), so they raise no warnings.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for start in range(0, max(flat_e.size, 1), _CHUNK):
            e, a = flat_e[start:start + _CHUNK], flat_a[start:start + _CHUNK]
            if integer:
                stats.add_integers(e, a)
            else:
                stats.add(e.astype(np.float64), a.astype(np.float64))
    return stats.result(name, tuple(act.shape))


_CHUNK = 1 << 13


class _ErrorStats:
    """Running error statistics over chunks; quantile mode keeps the errors to rank them.

    The statistics cover every element except matching non-finite pairs (equal values, no error); they never
    hold a NaN, since a mismatched non-finite value or an overflowing difference counts as an infinite error.
    """

    def __init__(self, tol: Tolerance):
        self.tol = tol
        self.size = 0
        self.count = 0                           # elements in the statistics
        self.nonfinite_e = self.nonfinite_a = 0
        self.nonfinite_mismatch = 0
        self.max_abs = 0                         # a Python int for integer outputs, so it stays exact
        self.max_rel = 0.0
        self.sum_abs = self.sum_rel = 0.0
        self.dot = self.norm_e = self.norm_a = 0.0
        self.bad = 0
        self.abs_kept: list[np.ndarray] = []
        self.rel_kept: list[np.ndarray] = []
        # An integer difference exceeds atol exactly when it exceeds floor(atol); a Python int compares exactly.
        self.atol_floor = math.floor(tol.atol) if math.isfinite(tol.atol) else (-1 if tol.atol < 0 else 1 << 64)

    def add(self, e: np.ndarray, a: np.ndarray) -> None:
        """Add a chunk of float64 values."""
        if e.size == 0:
            return
        self.size += e.size
        abs_err = np.abs(a - e)
        max_abs = float(abs_err.max())          # NaN or inf exactly when some difference is not finite
        if math.isfinite(max_abs):
            rel_err = _relative(abs_err, e)
            self._add_products(e, a)
        else:
            abs_err, rel_err = self._split_nonfinite(e, a, abs_err)
            if abs_err.size == 0:
                return
            max_abs = float(abs_err.max())
        exceeds = abs_err > self.tol.atol if self.tol.mode == "elementwise" else None
        self._add_errors(abs_err, rel_err, max_abs, exceeds)

    def add_integers(self, e: np.ndarray, a: np.ndarray) -> None:
        """Add a chunk of integer (or bool) values: differences and the atol test are exact."""
        if e.size == 0:
            return
        self.size += e.size
        diff = _integer_abs_diff(e, a)
        e_f, a_f = e.astype(np.float64), a.astype(np.float64)
        abs_err = diff.astype(np.float64)       # for the statistics; rounds only differences above 2**53
        self._add_products(e_f, a_f)
        exceeds = diff > self.atol_floor if self.tol.mode == "elementwise" else None
        self._add_errors(abs_err, _relative(abs_err, e_f), int(diff.max()), exceeds)

    def _split_nonfinite(self, e, a, abs_err):
        """Check the non-finite values of a chunk; returns the errors of the elements that stay in the statistics."""
        fin_e, fin_a = np.isfinite(e), np.isfinite(a)
        self.nonfinite_e += int(e.size - np.count_nonzero(fin_e))
        self.nonfinite_a += int(a.size - np.count_nonzero(fin_a))
        both = fin_e & fin_a
        # Equal infinities (e == a) and NaN against NaN are the same value on both sides.
        same = ~fin_e & ~fin_a & ((e == a) | (np.isnan(e) & np.isnan(a)))
        differ = ~both & ~same
        self.nonfinite_mismatch += int(np.count_nonzero(differ))
        self._add_products(np.where(both, e, 0.0), np.where(both, a, 0.0))
        rel_err = _relative(abs_err, e)
        abs_err[differ] = np.inf                # a finite pair that overflowed is inf already
        rel_err[differ] = np.inf
        keep = ~same
        return abs_err[keep], rel_err[keep]

    def _add_products(self, e, a) -> None:
        self.dot += float(np.dot(e, a))
        self.norm_e += float(np.dot(e, e))
        self.norm_a += float(np.dot(a, a))

    def _add_errors(self, abs_err, rel_err, max_abs, exceeds) -> None:
        self.count += abs_err.size
        self.max_abs = max(self.max_abs, max_abs)
        self.max_rel = max(self.max_rel, float(rel_err.max()))
        self.sum_abs += float(abs_err.sum())
        mode = self.tol.mode
        if mode == "elementwise":
            self.bad += int(np.count_nonzero(exceeds & (rel_err > self.tol.rtol)))
        elif mode == "mean":
            self.sum_rel += float(rel_err.sum())
        elif mode == "quantile":
            self.abs_kept.append(abs_err)
            self.rel_kept.append(rel_err)

    def result(self, name: str, shape: tuple) -> OutputComparison:
        tol = self.tol
        mean_abs = self.sum_abs / self.count if self.count else 0.0
        norm = float(np.sqrt(self.norm_e) * np.sqrt(self.norm_a))
        cosine = self.dot / norm if norm > 0 else (1.0 if self.max_abs == 0 else 0.0)
        reason = ""
        # The smallest passing tolerance follows the mode's rule. Relative error is zero exactly where absolute
        # error is, so with the other tolerance at 0 only the statistic itself can pass: the max (elementwise
        # and "max"), the mean or the quantile of the errors.
        if self.nonfinite_mismatch:
            cosine = float("nan")
            passed, min_atol, min_rtol = False, float("inf"), float("inf")
            reason = (f"{self.nonfinite_mismatch} non-finite values differ from the expected ones: "
                      f"{self.nonfinite_a} non-finite in the output, {self.nonfinite_e} expected")
        elif tol.mode == "elementwise":
            passed = self.bad == 0
            min_atol, min_rtol = _float_at_least(self.max_abs), self.max_rel
            if not passed:
                reason = f"{self.bad} of {self.size} elements exceed atol={tol.atol:g} and rtol={tol.rtol:g}"
        else:
            if tol.mode == "quantile":
                a_stat = _quantile(np.concatenate(self.abs_kept), tol.quantile) if self.abs_kept else 0.0
                r_stat = _quantile(np.concatenate(self.rel_kept), tol.quantile) if self.rel_kept else 0.0
            elif tol.mode == "mean":
                a_stat = mean_abs
                r_stat = self.sum_rel / self.count if self.count else 0.0
            else:
                a_stat, r_stat = self.max_abs, self.max_rel
            passed = a_stat <= tol.atol or r_stat <= tol.rtol
            min_atol, min_rtol = _float_at_least(a_stat), r_stat
            if not passed:
                reason = f"{tol.mode} abs error {a_stat:.3g} > atol and rel error {r_stat:.3g} > rtol"
        return OutputComparison(name, passed, shape, float(self.max_abs), mean_abs, self.max_rel, cosine,
                                min_atol=min_atol, min_rtol=min_rtol, nonfinite_expected=self.nonfinite_e,
                                nonfinite_actual=self.nonfinite_a, atol=tol.atol, rtol=tol.rtol, mode=tol.mode,
                                reason=reason)


def _relative(abs_err: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """|error| / |expected|; against an expected 0, no error is 0 and any error an infinite one."""
    denom = np.abs(expected)
    rel_err = abs_err / denom
    zero = denom == 0
    if zero.any():
        rel_err[zero] = np.where(abs_err[zero] > 0, np.inf, 0.0)
    return rel_err


def _integer_abs_diff(e: np.ndarray, a: np.ndarray) -> np.ndarray:
    """|a - e| of 64-bit integers without rounding or overflow, as uint64 (which holds any such difference)."""
    common = np.result_type(e, a)
    if common.kind == "f":  # uint64 against a signed type: numpy would go through float64, Python ints don't
        return np.abs(a.astype(object) - e.astype(object))
    e, a = e.astype(common, copy=False), a.astype(common, copy=False)
    # The subtraction wraps modulo 2**64; taken the non-negative way round, its bits read as uint64 are exact.
    return np.where(a >= e, a - e, e - a).view(np.uint64)


def _quantile(values: np.ndarray, q: float) -> float:
    """np.quantile's default (linear) rule, except that interpolating towards inf gives inf, where numpy gives NaN.

    Reorders `values` in place.
    """
    n = values.size
    index = (n - 1) * q                     # numpy's virtual index for this rule
    lo = min(max(int(math.floor(index)), 0), n - 1)
    hi = min(lo + 1, n - 1)
    t = index - lo
    values.partition([lo, hi])
    below, above = float(values[lo]), float(values[hi])
    if t <= 0 or below == above:
        return below
    if math.isinf(above):
        return above
    # numpy's two-sided form of the interpolation, so a finite result matches np.quantile to the bit
    return below + (above - below) * t if t < 0.5 else above - (above - below) * (1 - t)


def _float_at_least(value) -> float:
    """The nearest float not below `value`: a tolerance rounded down from an exact integer error would not pass."""
    f = float(value)
    return float(np.nextafter(f, np.inf)) if f < value else f


def compare_outputs(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray],
                    tol: Tolerance | Mapping[str, Tolerance]) -> Comparison:
    """Compare every expected output; `tol` may be one Tolerance or one per output name."""
    results = []
    for name, exp in expected.items():
        t = tol.get(name, Tolerance()) if isinstance(tol, Mapping) else tol
        if name not in actual:
            results.append(OutputComparison(name, False, (), float("inf"), float("inf"), float("inf"), float("nan"),
                                            float("inf"), float("inf"), 0, 0, t.atol, t.rtol, t.mode,
                                            reason="output missing"))
            continue
        results.append(compare_arrays(name, exp, actual[name], t))
    return Comparison(results)
