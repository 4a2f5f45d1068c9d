"""Fixtures for the validate tests: write a zoo model and run `deploykit validate` on it through the CLI."""

from __future__ import annotations

import pytest

from tests.validate import model_zoo


@pytest.fixture
def write_model(tmp_path):
    """write_model(model, name="case") -> path of tmp_path/name/model.onnx."""

    def write(m, name: str = "case"):
        return model_zoo.write(m, tmp_path / name)

    return write


@pytest.fixture
def run_validate(cli):
    """run_validate(path, *flags) -> (CliResult, report dict or None); always asks for --json."""

    def run(path, *flags):
        result = cli("validate", str(path), "--json", *flags)
        report = result.json() if result.exit_code in (0, 1) else None
        return result, report

    return run
