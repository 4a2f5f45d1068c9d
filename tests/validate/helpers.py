"""Small helpers the validate tests share for reading a --json report."""

from __future__ import annotations


def failed(report) -> list[tuple[str, str]]:
    """(name, severity) of every check that did not pass, sorted: what a case must match exactly."""
    return sorted((c["name"], c["severity"]) for c in report["checks"] if not c["passed"])


def checks_named(report, name: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"] == name]
