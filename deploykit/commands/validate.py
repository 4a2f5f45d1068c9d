"""`deploykit validate`: a verdict on any ONNX model.

Structure, TensorRT readiness (audited against the ONNX-TensorRT parser's support lists, no TensorRT
needed), ONNX Runtime at several shapes with NaN/Inf detection, parity with the PyTorch reference, ORT vs
TensorRT with --backend trt, and fp16 readiness. Exit 0 pass, 1 a check failed, 2 unusable input,
3 --backend trt without TensorRT or a GPU, or --backend openvino without openvino. Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import click

from deploykit.commands import echo_json

from deploykit.errors import EXIT_CHECK_FAILED

_MODES = ("elementwise", "max", "mean", "quantile")


@click.command("validate")
@click.argument("path", type=click.Path())
@click.option("--block", help="Compare with this block's PyTorch reference (when no manifest sits beside the model).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Compare with the reference an export config YAML describes.")
@click.option("--model", "model_name", metavar="NAME",
              help="Compare with a network's reference (a registered network name).")
@click.option("--inputs", "inputs", multiple=True, type=click.Path(dir_okay=False), metavar="FILE.npz",
              help="Run on these inputs instead of random ones: one array per graph input, named like it "
                   "(repeatable).")
@click.option("--profile", "profiles", multiple=True, metavar="NAME:MIN:OPT:MAX",
              help="Shape ranges for dynamic inputs, as for `deploykit build` (repeatable); validation runs min, "
                   "opt, max and an odd size.")
@click.option("--atol", multiple=True, metavar="[OUTPUT:]TOL",
              help="Absolute tolerance, for all outputs or one (repeatable).")
@click.option("--rtol", multiple=True, metavar="[OUTPUT:]TOL",
              help="Relative tolerance, for all outputs or one (repeatable).")
@click.option("--check-mode", type=click.Choice(_MODES),
              help="elementwise: an element fails only if it exceeds both atol and rtol (default); max/mean/quantile: "
                   "compare that statistic of the errors.")
@click.option("--quantile", type=click.FloatRange(0, 1), help="Quantile for --check-mode quantile (default 0.99).")
@click.option("--trt", "trt_target", type=click.Choice(["both", "10", "11", "none"]), default="both",
              show_default=True, help="TensorRT versions to audit the graph against (none: skip the audit).")
@click.option("--backend", type=click.Choice(["ort", "trt", "openvino"]), default="ort", show_default=True,
              help="trt: also build a TensorRT engine and compare it with ONNX Runtime (needs TensorRT and a GPU); "
                   "openvino: also run the graph with OpenVINO (f32) and compare (needs openvino).")
@click.option("--no-fp16", "no_fp16", is_flag=True, help="Skip the fp16 readiness check.")
@click.option("--no-run", "no_run", is_flag=True, help="Structure and TensorRT audit only; do not run the model.")
@click.option("--max-input-mb", default=1024.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Refuse shapes whose inputs would need more memory than this.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
              help="Seed of the random inputs.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object with `passed`, `counts`, `summary` and `checks`.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), metavar="FILE.md",
              help="Also write the report as Markdown.")
@click.option("--module", "module", help="Your model's reference, PKG.MOD:CALLABLE or file.py:CALLABLE (runs your "
                                       "code), replacing the sidecar's (or --config's) source.")
@click.option("--args", "module_args", help="--module's keyword arguments: JSON, YAML or @file.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint for the reference (--module or the sidecar's).")
def validate(path, block, config_path, model_name, inputs, profiles, atol, rtol, check_mode, quantile, trt_target,
             backend, no_fp16, no_run, max_input_mb, seed, as_json, report_path, module, module_args, weights):
    """Check an ONNX model: structure, TensorRT readiness (no TensorRT needed), ONNX Runtime at several shapes,
    parity with the PyTorch reference, fp16 readiness. Exit 0 pass, 1 fail, 2 unusable input."""
    from pathlib import Path

    from deploykit.repository_journal import recover_around
    from deploykit.validate.core import ValidateOptions
    from deploykit.validate.core import validate as run_validate

    if block or config_path or model_name:
        from deploykit.errors import require

        require("torch", extra="export", purpose="the PyTorch reference of --block/--config/--model")
    if block is not None:
        from deploykit.blocks import spec

        spec(block)  # unknown names fail here, with the valid ones
    options = ValidateOptions(
        block=block, config_path=config_path, model_name=model_name, seed=seed, inputs=tuple(inputs),
        profiles=tuple(profiles), atol=tuple(atol), rtol=tuple(rtol), check_mode=check_mode, quantile=quantile,
        trt=trt_target, backend=backend, fp16=not no_fp16, run=not no_run, max_input_mb=max_input_mb,
        source=_source_flags(module, module_args, weights),
    )
    recover_around(path)   # a kill during an export into this model's repository is undone or finished first
    report = run_validate(Path(path), options=options)
    if as_json:
        echo_json(report.as_dict())
    else:
        _print_table(report)
    if report_path:
        _write_report(report, Path(report_path))
    if not report.passed:
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_table(report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from deploykit.validate.report import rows

    counts = report.counts()
    title = (f"validate {report.path}: {report.verdict} ({counts['errors']} failed, "
             f"{counts['warnings']} warnings, {counts['skipped']} skipped)")
    table = Table(title=title, show_lines=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=3)
    table.add_column("fix", overflow="fold", ratio=2)
    style = {"pass": "green", "FAIL": "bold red", "warn": "yellow", "note": "cyan", "skip": "dim"}
    current = None
    for category, name, status, detail, fix in rows(report):
        if category != current:  # one section per category: structure, tensorrt, numerics, fp16
            if current is not None:
                table.add_section()
            table.add_row(f"[bold]{category}[/]", "", "", "")
            current = category
        # Plain text: hints carry brackets such as deploykit[export], which rich would take for markup.
        table.add_row(name, f"[{style.get(status, '')}]{status}[/]", escape(detail) if detail else detail,
                      escape(fix) if fix else fix)
    Console().print(table)


def _write_report(report, path) -> None:
    from deploykit.errors import UserInputError
    from deploykit.repository import atomic_write_text
    from deploykit.validate.report import markdown

    try:
        atomic_write_text(path, markdown(report))
    except OSError as exc:
        raise UserInputError(f"cannot write the report to '{path}': {exc.strerror or exc}",
                             hint="pass a writable --report path") from None


def _source_flags(module, module_args, weights) -> dict | None:
    """--module/--args/--weights as source fields (absolute paths), or None when none is given."""
    if not (module or module_args or weights):
        return None
    from pathlib import Path

    from deploykit.commands.export import parse_args_flag

    out = {}
    if module:
        target, _, name = module.rpartition(":")
        out["module"] = f"{Path(target).resolve()}:{name}" if target.endswith(".py") else module
    if module_args is not None:
        out["args"] = parse_args_flag(module_args)
    if weights:
        out["weights"] = str(Path(weights).resolve())
    return out
