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
    exp = np.asarray(expected, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    nonfinite_e = int((~np.isfinite(exp)).sum())
    nonfinite_a = int((~np.isfinite(act)).sum())
    if exp.shape != act.shape:
        return OutputComparison(name, False, tuple(act.shape), float("inf"), float("inf"), float("inf"), float("nan"),
                                float("inf"), float("inf"), nonfinite_e, nonfinite_a, tol.atol, tol.rtol, tol.mode,
                                reason=f"shape {tuple(act.shape)} != expected {tuple(exp.shape)}")
    abs_err = np.abs(act - exp)
    denom = np.abs(exp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = np.where(denom > 0, abs_err / denom, np.where(abs_err > 0, np.inf, 0.0))
    finite = np.isfinite(abs_err)
    max_abs = float(abs_err.max()) if abs_err.size else 0.0
    mean_abs = float(abs_err.mean()) if abs_err.size else 0.0
    max_rel = float(rel_err.max()) if rel_err.size else 0.0
    flat_e, flat_a = exp.ravel(), act.ravel()
    norm = float(np.linalg.norm(flat_e) * np.linalg.norm(flat_a))
    cosine = float(np.dot(flat_e, flat_a) / norm) if norm > 0 else (1.0 if max_abs == 0 else 0.0)

    reason = ""
    if nonfinite_a != nonfinite_e or (nonfinite_a and not np.array_equal(np.isnan(exp), np.isnan(act))):
        passed, reason = False, f"{nonfinite_a} non-finite values in output vs {nonfinite_e} expected"
    elif tol.mode == "elementwise":
        bad = (abs_err > tol.atol) & (rel_err > tol.rtol) & finite
        passed = not bool(bad.any())
        if not passed:
            reason = f"{int(bad.sum())} of {bad.size} elements exceed atol={tol.atol:g} and rtol={tol.rtol:g}"
    else:
        stat = {"max": np.max, "mean": np.mean,
                "quantile": lambda a: np.quantile(a, tol.quantile)}[tol.mode]
        a_stat = float(stat(abs_err[finite])) if finite.any() else 0.0
        r_stat = float(stat(rel_err[finite])) if finite.any() else 0.0
        passed = a_stat <= tol.atol or r_stat <= tol.rtol
        if not passed:
            reason = f"{tol.mode} abs error {a_stat:.3g} > atol and rel error {r_stat:.3g} > rtol"
    return OutputComparison(name, passed, tuple(act.shape), max_abs, mean_abs, max_rel, cosine,
                            min_atol=max_abs, min_rtol=max_rel, nonfinite_expected=nonfinite_e,
                            nonfinite_actual=nonfinite_a, atol=tol.atol, rtol=tol.rtol, mode=tol.mode, reason=reason)


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
