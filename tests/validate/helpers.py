"""Small helpers the validate tests share for reading a --json report."""

from __future__ import annotations

# Two optimization profiles for model_zoo.two_inputs (a repeated input name starts the next profile).
TWO_PROFILES = ("--profile", "a:1x4:2x4:2x4", "--profile", "b:1x4:2x4:2x4",   # profile 1: batch 1..2
                "--profile", "a:3x4:4x4:4x4", "--profile", "b:3x4:4x4:4x4")   # profile 2: batch 3..4


def failed(report) -> list[tuple[str, str]]:
    """(name, severity) of every check that did not pass, sorted: what a case must match exactly."""
    return sorted((c["name"], c["severity"]) for c in report["checks"] if not c["passed"])


def checks_named(report, name: str) -> list[dict]:
    return [c for c in report["checks"] if c["name"] == name]
