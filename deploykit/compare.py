"""Output comparison with Polygraphy's semantics, returning data rather than a boolean.

An element fails only when BOTH its absolute error exceeds `atol` and its relative error exceeds `rtol`
(relative to |expected|). Besides the verdict, every comparison carries max/mean absolute and relative error,
cosine similarity, NaN/Inf counts and the smallest tolerances that would have passed, so a report can say by
how much a check passed or failed. `bool(comparison)` is the verdict.
"""

from __future__ import annotations

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
    min_atol: float       # atol that passes with rtol = 0
    min_rtol: float       # rtol that passes with atol = 0
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
        return max((o.max_abs for o in self.outputs), default=float("nan"))

    @property
    def max_rel(self) -> float:
        return max((o.max_rel for o in self.outputs), default=float("nan"))

    def as_dict(self) -> dict:
        return {"passed": bool(self), "max_abs": self.max_abs, "max_rel": self.max_rel,
                "outputs": [o.as_dict() for o in self.outputs]}


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
    # Chunks keep the float64 temporaries in cache: a 32 x 256 x 56 x 56 output is 25 M elements.
    # 8 K elements (64 KiB a temporary) compared 25 M in 0.2 s here; 256 K-element chunks took 0.7 s.
    for start in range(0, max(flat_e.size, 1), _CHUNK):
        stats.add(flat_e[start:start + _CHUNK].astype(np.float64), flat_a[start:start + _CHUNK].astype(np.float64))
    return stats.result(name, tuple(act.shape))


_CHUNK = 1 << 13


class _ErrorStats:
    """Running error statistics over chunks; quantile mode keeps the (finite) errors to rank them."""

    def __init__(self, tol: Tolerance):
        self.tol = tol
        self.size = 0
        self.nonfinite_e = self.nonfinite_a = 0
        self.nan_mismatch = False
        self.max_abs = self.max_rel = 0.0
        self.sum_abs = self.dot = self.norm_e = self.norm_a = 0.0
        self.bad = 0
        self.finite_count = 0
        self.abs_stat = self.rel_stat = 0.0      # running max or sum of the finite errors ("max"/"mean")
        self.abs_kept: list[np.ndarray] = []
        self.rel_kept: list[np.ndarray] = []

    def add(self, e: np.ndarray, a: np.ndarray) -> None:
        if e.size == 0:
            return
        self.size += e.size
        abs_err = np.abs(a - e)
        finite = np.isfinite(abs_err)
        all_finite = bool(finite.all())
        if not all_finite:  # |a - e| is finite exactly where both are: count only when it is not everywhere
            fin_e, fin_a = np.isfinite(e), np.isfinite(a)
            self.nonfinite_e += int(e.size - np.count_nonzero(fin_e))
            self.nonfinite_a += int(a.size - np.count_nonzero(fin_a))
            self.nan_mismatch = self.nan_mismatch or not np.array_equal(np.isnan(e), np.isnan(a))
        denom = np.abs(e)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel_err = np.divide(abs_err, denom)
        zero = ~(denom > 0)
        if zero.any():  # 0/0 is no error, x/0 an infinite one (a NaN expectation counts as 0 here)
            rel_err[zero] = np.where(abs_err[zero] > 0, np.inf, 0.0)
        with np.errstate(invalid="ignore"):
            # np.maximum, unlike max(), carries a NaN through: a NaN output makes the maxima NaN.
            self.max_abs = float(np.maximum(self.max_abs, abs_err.max()))
            self.max_rel = float(np.maximum(self.max_rel, rel_err.max()))
            self.sum_abs += float(abs_err.sum())
            self.dot += float(np.dot(e, a))
            self.norm_e += float(np.dot(e, e))
            self.norm_a += float(np.dot(a, a))
        mode = self.tol.mode
        if mode == "elementwise":
            bad = (abs_err > self.tol.atol) & (rel_err > self.tol.rtol)
            self.bad += int(np.count_nonzero(bad if all_finite else bad & finite))
            return
        abs_f, rel_f = abs_err[finite], rel_err[finite]
        if mode == "quantile":
            self.abs_kept.append(abs_f)
            self.rel_kept.append(rel_f)
        elif abs_f.size:
            self.finite_count += abs_f.size
            if mode == "max":
                self.abs_stat = max(self.abs_stat, float(abs_f.max()))
                self.rel_stat = max(self.rel_stat, float(rel_f.max()))
            else:  # mean
                self.abs_stat += float(abs_f.sum())
                self.rel_stat += float(rel_f.sum())

    def result(self, name: str, shape: tuple) -> OutputComparison:
        tol = self.tol
        mean_abs = self.sum_abs / self.size if self.size else 0.0
        norm = float(np.sqrt(self.norm_e) * np.sqrt(self.norm_a))
        cosine = self.dot / norm if norm > 0 else (1.0 if self.max_abs == 0 else 0.0)
        reason = ""
        if self.nonfinite_a != self.nonfinite_e or (self.nonfinite_a and self.nan_mismatch):
            passed, reason = False, f"{self.nonfinite_a} non-finite values in output vs {self.nonfinite_e} expected"
        elif tol.mode == "elementwise":
            passed = self.bad == 0
            if not passed:
                reason = f"{self.bad} of {self.size} elements exceed atol={tol.atol:g} and rtol={tol.rtol:g}"
        else:
            if tol.mode == "quantile":
                abs_all = np.concatenate(self.abs_kept) if self.abs_kept else np.zeros(0)
                rel_all = np.concatenate(self.rel_kept) if self.rel_kept else np.zeros(0)
                a_stat = float(np.quantile(abs_all, tol.quantile)) if abs_all.size else 0.0
                r_stat = float(np.quantile(rel_all, tol.quantile)) if rel_all.size else 0.0
            elif tol.mode == "mean" and self.finite_count:
                a_stat, r_stat = self.abs_stat / self.finite_count, self.rel_stat / self.finite_count
            else:
                a_stat, r_stat = self.abs_stat, self.rel_stat
            passed = a_stat <= tol.atol or r_stat <= tol.rtol
            if not passed:
                reason = f"{tol.mode} abs error {a_stat:.3g} > atol and rel error {r_stat:.3g} > rtol"
        return OutputComparison(name, passed, shape, self.max_abs, mean_abs, self.max_rel, cosine,
                                min_atol=self.max_abs, min_rtol=self.max_rel, nonfinite_expected=self.nonfinite_e,
                                nonfinite_actual=self.nonfinite_a, atol=tol.atol, rtol=tol.rtol, mode=tol.mode,
                                reason=reason)


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
