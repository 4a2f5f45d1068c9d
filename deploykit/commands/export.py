"""`deploykit export`: a block, a network (or a config file) to verified ONNX in the model repository."""

from __future__ import annotations

import json

import click

from deploykit.errors import EXIT_CHECK_FAILED, UserInputError


def _parse_batch(value: str) -> dict:
    try:
        parts = [int(p) for p in value.split(":")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) <= 0:
        raise click.BadParameter(f"'{value}' is not MIN:OPT:MAX with positive integers, e.g. 1:8:32", param_hint="--batch")
    return {"min": parts[0], "opt": parts[1], "max": parts[2]}


def _parse_size(value: str) -> tuple[int, int]:
    try:
        h, w = (int(p) for p in value.lower().split("x"))
    except ValueError:
        raise click.BadParameter(f"'{value}' is not HxW, e.g. 224x224", param_hint="--size") from None
    if h <= 0 or w <= 0:
        raise click.BadParameter(f"'{value}' has a zero or negative size", param_hint="--size")
    return h, w


def build_config(block, config_path, variant, opset, batch, size, dynamic_hw, precisions, weights, no_simplify,
                 model=None):
    """The export config: the file (or the block's or network's default), then the flags on top."""
    from deploykit.export.config import default_config, load_config, parse_config

    if block and model:
        raise click.UsageError("--block and --model exclude each other; pass one of them")
    if config_path:
        config = load_config(config_path)
        if block and config.source.block and block != config.source.block:
            raise UserInputError(f"--block {block} contradicts the config's block '{config.source.block}'",
                                 hint="pass only one of them")
        if model and config.source.network != model:
            raise UserInputError(f"--model {model} contradicts the config's source "
                                 f"'{config.source.network or config.source.block}'", hint="pass only one of them")
    elif block:
        config = default_config(block)
    elif model:
        from deploykit.networks import default_config as network_config

        config = network_config(model)
    else:
        raise click.UsageError("pass --block NAME, --model NAME or --config FILE")
    data = config.model_dump(mode="json")
    if variant:
        data["source"]["variant"] = variant
    if weights:
        data["source"]["weights"] = weights
    if opset:
        data["opset"] = opset
    if batch:
        data["input"]["batch"] = _parse_batch(batch)
    if size:
        h, w = _parse_size(size)
        data["input"]["height"], data["input"]["width"] = {"opt": h}, {"opt": w}
    if dynamic_hw:
        for key in ("height", "width"):
            opt = data["input"][key]["opt"]
            # A generous default range around the export size; a config can set its own.
            data["input"][key] = {"opt": opt, "min": max(1, opt // 2), "max": opt * 2}
    if precisions:
        data["precisions"] = list(dict.fromkeys(precisions))
    if no_simplify:
        data["simplify"] = False
    return parse_config(data, config_path or f"defaults of '{block or model}' with flags")


@click.command("export")
@click.option("--block", help="Registered block name (see `deploykit list`).")
@click.option("--model", "model", help="Registered network name (see `deploykit list`); default config "
                                       "export_configs/<model>.yaml.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Export config YAML (default: export_configs/<block>.yaml).")
@click.option("--variant", type=click.Choice(["safe", "reference"]), help="Export-safe twin (default) or the reference.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Local checkpoint to load (the authors' layout).")
@click.option("--out", "out_dir", default="models", show_default=True, type=click.Path(file_okay=False), help="Model repository directory.")
@click.option("--opset", type=click.IntRange(13, 23), help="ONNX opset.")
@click.option("--batch", help="Batch range MIN:OPT:MAX, e.g. 1:8:32.")
@click.option("--size", help="Spatial size HxW used for export, e.g. 56x56.")
@click.option("--dynamic-hw", is_flag=True, help="Make H and W dynamic (opt/2 .. opt*2 unless the config sets a range).")
@click.option("--precision", "precisions", multiple=True, type=click.Choice(["fp32", "fp16"]), help="Precisions to write (repeatable).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--force", is_flag=True, help="Replace the latest version of an existing model.")
@click.option("--new-version", is_flag=True, help="Write a new version directory beside the existing ones.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress output).")
def export(block, model, config_path, variant, weights, out_dir, opset, batch, size, dynamic_hw, precisions,
           no_simplify, force, new_version, as_json):
    """Export a block or network to ONNX, simplify it with onnxsim, and verify every graph against PyTorch
    before writing it to the model repository (Triton layout)."""
    from deploykit.export.pipeline import run_export
    from deploykit.progress import Progress

    if force and new_version:
        raise click.UsageError("--force and --new-version exclude each other")
    config = build_config(block, config_path, variant, opset, batch, size, dynamic_hw, precisions, weights, no_simplify,
                          model=model)
    status = run_export(config, out_dir, force=force, new_version=new_version,
                        progress=Progress("quiet" if as_json else None))
    if as_json:
        click.echo(json.dumps(status.as_dict(), indent=2, default=str))
    else:
        _print_summary(status)
    if not status.passed:
        if not as_json:
            click.echo(f"error: {status.error or 'export failed'}", err=True)
        raise SystemExit(EXIT_CHECK_FAILED)


def _print_summary(status) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not status.parity:
        if status.report_path:
            console.print(f"report {status.report_path}")
        return
    table = Table(title=f"export {status.config.model_name}: {'PASSED' if status.passed else 'FAILED'}")
    for col in ("precision", "check", "passed", "max abs", "max rel", "shapes"):
        table.add_column(col)
    for precision, parity in status.parity.items():
        table.add_row(precision, parity.label, str(bool(parity)), f"{parity.max_abs:.2e}", f"{parity.max_rel:.2e}",
                      ", ".join("x".join(map(str, s.shape)) for s in parity.shapes))
    console.print(table)
    for a in status.artifacts:
        console.print(f"wrote {a.onnx}")
    if status.report_path:
        console.print(f"report {status.report_path}")
