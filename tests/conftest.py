"""Shared fixtures: an in-process CLI runner with real exit codes, and small export configs."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def cli(capsys):
    """Run `deploykit ARGS` through deploykit.cli.main (the console script) and capture everything."""
    from deploykit.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


# Small but real: dynamic batch 1..4 at 14x14 keeps every export in a few seconds.
SMALL = ("--size", "14x14", "--batch", "1:2:4")


@pytest.fixture
def small_flags():
    return SMALL
