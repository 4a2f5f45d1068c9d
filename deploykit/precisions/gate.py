"""The parity gate for reduced-precision artifacts: relative L2 error, cosine and per-output limits.

Element-wise atol/rtol suits fp32 and fp16 graphs, whose errors are rounding noise. A bf16 or INT8 artifact
is a deliberate approximation: single elements may move far while the output as a whole stays faithful, so
it is gated on whole-tensor statistics against fp32 PyTorch: ||actual - expected||_2 / ||expected||_2,
the cosine of the two, and optionally a largest absolute error. The gate fills the same ParityReport the
export report and manifest already print (max abs, max rel, cosine per shape) and adds its own numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from deploykit.compare import Tolerance, compare_outputs
from deploykit.export.verify import ParityReport, ShapeParity


@dataclass(frozen=True)
class GateLimits:
    """Limits one output must meet at every verification shape.

    Args:
        max_rel_l2: largest ||a - e|| / ||e||.
        min_cosine: smallest cosine similarity of a and e (flattened).
        max_abs: largest absolute error of any element (None: not limited).
    """

    max_rel_l2: float
    min_cosine: float
    max_abs: float | None = None


# bf16 keeps 8 mantissa bits (relative step 2**-8 = 0.4 %): errors stay well below 1 % in relative L2.
# INT8 quantizes every activation to 256 levels: a few percent is the honest expectation, and the digits
# accuracy test shows what that costs in top-1 accuracy.
DEFAULT_LIMITS = {
    "bf16": GateLimits(max_rel_l2=0.02, min_cosine=0.9995),
    "int8": GateLimits(max_rel_l2=0.12, min_cosine=0.99),
    "int8_trt": GateLimits(max_rel_l2=0.12, min_cosine=0.99),
}


@dataclass
class GateReport(ParityReport):
    """A ParityReport whose verdict is the gate: every output at every shape within its GateLimits."""

    limits: GateLimits = field(default_factory=lambda: DEFAULT_LIMITS["int8"])
    per_output: dict[str, GateLimits] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)   # per shape and output: rel_l2, cosine, max_abs
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)   # structural failures (e.g. TensorRT Q/DQ rules)

    def __bool__(self) -> bool:
        return super().__bool__() and not self.problems

    @property
    def max_rel_l2(self) -> float:
        return max((m["rel_l2"] for m in self.metrics), default=float("nan"))

    @property
    def min_cosine(self) -> float:
        return min((m["cosine"] for m in self.metrics), default=float("nan"))

    def as_dict(self) -> dict:
        d = super().as_dict()
        d.update({"gate": asdict(self.limits), "gate_per_output": {k: asdict(v) for k, v in self.per_output.items()},
                  "max_rel_l2": self.max_rel_l2, "min_cosine": self.min_cosine, "metrics": self.metrics,
                  "notes": self.notes, "problems": self.problems})
        return d


def rel_l2(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.asarray(expected, np.float64).ravel()
    a = np.asarray(actual, np.float64).ravel()
    norm = float(np.linalg.norm(e))
    diff = float(np.linalg.norm(a - e))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else float("inf"))


def cosine(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.asarray(expected, np.float64).ravel()
    a = np.asarray(actual, np.float64).ravel()
    ne, na = float(np.linalg.norm(e)), float(np.linalg.norm(a))
    if ne == 0 or na == 0:
        return 1.0 if ne == na else 0.0
    return float(np.dot(e, a) / (ne * na))


def judge(expected: dict, actual: dict, limits: GateLimits, per_output: dict[str, GateLimits] | None = None,
          metrics: list | None = None, shape: tuple = ()):
    """A Comparison (deploykit.compare) of one run's outputs whose verdict is the gate's; the relative L2 and
    cosine of every output go to `metrics` when given."""
    per_output = per_output or {}
    tol = Tolerance(atol=limits.max_abs if limits.max_abs is not None else float("inf"), rtol=0.0, mode="max")
    comparison = compare_outputs(expected, actual, tol)
    for out in comparison.outputs:
        lim = per_output.get(out.name, limits)
        e, a = expected.get(out.name), actual.get(out.name)
        if e is None or a is None or np.shape(a) != np.shape(e):
            continue   # compare_outputs already failed it with the reason
        r, c = rel_l2(e, a), cosine(e, a)
        if metrics is not None:
            metrics.append({"shape": list(shape), "output": out.name, "rel_l2": r, "cosine": c, "max_abs": out.max_abs})
        problems = []
        if not r <= lim.max_rel_l2:
            problems.append(f"relative L2 {r:.3g} > {lim.max_rel_l2:g}")
        if not c >= lim.min_cosine:
            problems.append(f"cosine {c:.6f} < {lim.min_cosine:g}")
        if lim.max_abs is not None and not out.max_abs <= lim.max_abs:
            problems.append(f"max abs {out.max_abs:.3g} > {lim.max_abs:g}")
        if problems:
            out.passed = False
            out.reason = "; ".join(problems)
    return comparison


def gate(label: str, runner, input_name: str, expected_by_shape: dict, inputs_by_shape: dict,
         limits: GateLimits, per_output: dict[str, GateLimits] | None = None) -> GateReport:
    """Run `runner` at every verification shape and judge its outputs against fp32 PyTorch's."""
    per_output = dict(per_output or {})
    report = GateReport(label, Tolerance(atol=limits.max_abs if limits.max_abs is not None else float("inf"),
                                         rtol=0.0, mode="max"), limits=limits, per_output=per_output)
    for shape, x in inputs_by_shape.items():
        reason = ""
        try:
            actual = runner.infer({input_name: x})
        except Exception as exc:  # noqa: BLE001 - an engine that rejects a verification shape fails the gate
            actual = {}
            reason = f"{runner.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        comparison = judge(expected_by_shape[shape], actual, limits, per_output, report.metrics, shape)
        if not actual:
            for out in comparison.outputs:
                out.reason = reason
        report.shapes.append(ShapeParity(shape, comparison, actual or None))
    return report
