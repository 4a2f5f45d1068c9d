"""The verdict's building blocks: a Check per finding, and the report that collects them.

Severity decides what a failed check means: "error" fails the verdict (exit 1), "warning" is reported but
passes, "info" is a note. Each check carries its category (structure, tensorrt, numerics, fp16), a one-line
detail, and where there is one, the fix a user can apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("error", "warning", "info")
CATEGORIES = ("structure", "tensorrt", "numerics", "fp16")


@dataclass
class Check:
    """One check or finding.

    Attributes:
        name: stable identifier ("onnx_checker", "parity[1x64x14x14]", "trt_unsupported_op").
        passed: False when the check found a problem.
        detail: one line saying what was found.
        severity: "error" (decides the verdict), "warning" or "info".
        data: structured facts for --json (numbers, node names, versions).
        category: structure, tensorrt, numerics or fp16.
        fix: what to do about it, when something can be done.
        skipped: the check did not run (no reference to compare with, --no-run): it neither passes nor
            fails, and is counted apart so a skipped comparison never reads as a proven one.
    """

    name: str
    passed: bool
    detail: str = ""
    severity: str = "error"
    data: dict | None = None
    category: str = "structure"
    fix: str | None = None
    skipped: bool = False

    def as_dict(self) -> dict:
        d = {"name": self.name, "passed": self.passed, "detail": self.detail, "severity": self.severity,
             "category": self.category}
        if self.skipped:
            d["skipped"] = True
        if self.fix:
            d["fix"] = self.fix
        if self.data is not None:
            d["data"] = self.data
        return d

    @property
    def status(self) -> str:
        """"pass", "skip", "FAIL" (a failed error), "warn" or "note" (a failed warning or info)."""
        if self.skipped:
            return "skip"
        if self.passed:
            return "pass"
        return {"error": "FAIL", "warning": "warn"}.get(self.severity, "note")


@dataclass
class ValidationReport:
    """Every check of one validation, in the order they ran.

    Attributes:
        path: the ONNX file.
        checks: the checks.
        summary: facts about the model and the run (inputs, shapes run, support data source) for --json.
    """

    path: str
    checks: list[Check] = field(default_factory=list)
    summary: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks if c.severity == "error")

    def add(self, name: str, passed: bool, detail: str = "", **kw) -> Check:
        check = Check(name, passed, detail, **kw)
        self.checks.append(check)
        return check

    def extend(self, checks) -> None:
        self.checks.extend(checks)

    def counts(self) -> dict[str, int]:
        out = {"errors": 0, "warnings": 0, "notes": 0, "passed": 0, "skipped": 0}
        for c in self.checks:
            key = "skipped" if c.skipped else "passed" if c.passed else {"error": "errors", "warning": "warnings"}.get(c.severity, "notes")
            out[key] += 1
        return out

    @property
    def verdict(self) -> str:
        """PASSED or FAILED, and what was not proven when a PASSED verdict compared nothing with PyTorch."""
        if not self.passed:
            return "FAILED"
        if any(c.name == "parity" and c.skipped for c in self.checks):
            return "PASSED (outputs were not compared with PyTorch)"
        return "PASSED"

    def as_dict(self) -> dict:
        return {"model": self.path, "passed": self.passed, "verdict": self.verdict, "counts": self.counts(),
                "summary": self.summary,
                "checks": [c.as_dict() for c in self.checks]}
