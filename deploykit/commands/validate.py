"""`deploykit validate`: structure, ONNX Runtime and PyTorch parity; exit 0 pass, 1 fail, 2 unusable input."""

from __future__ import annotations

import json

import click

from deploykit.errors import EXIT_CHECK_FAILED


@click.command("validate")
@click.argument("path", type=click.Path())
@click.option("--block", help="Compare with this block's PyTorch reference (when no manifest sits beside the model).")
@click.option("--seed", default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with `passed` and `checks`.")
def validate(path, block, seed, as_json):
    """Check an ONNX model (checker, shape inference, ONNX Runtime) and compare its outputs with PyTorch."""
    from pathlib import Path

    from deploykit.validate.core import validate as run_validate

    if block is not None:
        from deploykit.blocks import spec

        spec(block)  # unknown names fail here, with the valid ones
    report = run_validate(Path(path), block=block, seed=seed)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"validate {report.path}: {'PASSED' if report.passed else 'FAILED'}")
        for col in ("check", "passed", "detail"):
            table.add_column(col)
        for c in report.checks:
            mark = "yes" if c.passed else ("no" if c.severity == "error" else "warn")
            table.add_row(c.name, mark, c.detail)
        Console().print(table)
    if not report.passed:
        raise SystemExit(EXIT_CHECK_FAILED)
