"""Click commands, one module each, imported by deploykit.cli only when run.

With `--json` a command prints exactly one JSON object on stdout, failures included: a command prints its own
(`echo_json`), and where it fails before it could (a usage error, unusable input), deploykit.cli prints
`failure_json(...)`, the same shape with empty results and the one-line `error`.
"""

from __future__ import annotations

import json

import click

_printed = {"json": False}


def echo_json(obj) -> None:
    """Print the command's one JSON object on stdout and remember that it was printed."""
    click.echo(json.dumps(obj, indent=2, default=str))
    _printed["json"] = True


def json_printed() -> bool:
    return _printed["json"]


def reset_json() -> None:
    _printed["json"] = False


def export_failure(error: str, *, model: str | None = None, report: str | None = None) -> dict:
    """`deploykit export --json` for an export that stopped before it had a status: its shape, no results."""
    return {"passed": False, "model": model, "onnx": None, "manifest": None, "parity": {}, "artifacts": [],
            "exporter": None, "attempts": [], "simplified": False, "stages": [], "first_failed_stage": None,
            "error": error, "report": report, "weights": None, "conversion": None, "allow_non_finite": False}


def failure_json(command: str | None, error: str) -> dict:
    """The `--json` object of a command that failed before printing its own, in that command's shape."""
    if command == "export":
        return export_failure(error)
    if command == "validate":
        return {"model": None, "passed": False, "counts": {}, "summary": error, "checks": [],
                "error": error}
    if command == "build":
        return {"onnx": None, "status": "failed", "failed_step": "arguments", "error": error,
                "notes": []}
    if command == "bench":
        return {"passed": False, "source": None, "settings": None, "environment": None, "load": {}, "rows": [],
                "error": error}
    if command == "list":
        return {"passed": False, "blocks": [], "networks": [], "error": error}
    return {"passed": False, "error": error}

