"""`deploykit export`: a block, a network (or a config file) to verified ONNX in the model repository."""

from __future__ import annotations

import click

from deploykit.errors import EXIT_CHECK_FAILED, DeployKitError, UserInputError


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
                 model=None, user=None):
    """The export config: the file (or the block's or network's default), then the flags on top.

    `user`: the user-model flags (module, args, program, inputs, dynamic, no_rewrite, name) when given."""
    from deploykit.export.config import default_config, load_config, parse_config

    if block and model:
        raise click.UsageError("--block and --model exclude each other; pass one of them")
    user = {k: v for k, v in (user or {}).items() if v}
    if user.get("module") or user.get("program") or (
            config_path and (user or not _registry_config(config_path))):
        return user_config(block or model, config_path, variant, opset, batch, size, dynamic_hw, precisions,
                           weights, no_simplify, user)
    if user:
        flags = ", ".join("--" + k.replace("_", "-") for k in user)
        raise click.UsageError(f"{flags} apply to a user model; pass --module or --program (or a config with one)")
    if config_path:
        config = load_config(config_path)
        kind, name = ("block", config.source.block) if config.source.block else ("network", config.source.network)
        for flag, flag_kind, value in (("--block", "block", block), ("--model", "network", model)):
            if value and (flag_kind, value) != (kind, name):
                raise UserInputError(f"{flag} {value} contradicts {config.origin}, which exports the {kind} '{name}'",
                                     hint=f"pass only one of {flag} and --config")
    elif block:
        config = default_config(block)
    elif model:
        from deploykit.networks import default_config as network_config

        config = network_config(model)
    else:
        raise click.UsageError("pass --block NAME, --model NAME or --config FILE")
    origin = config.origin   # the file, or the registry defaults, the fields come from
    data = config.model_dump(mode="json")
    if variant:
        data["source"]["variant"] = variant
    if weights:   # absolute: the sidecar rebuilds the reference from any working directory
        from pathlib import Path

        data["source"]["weights"] = str(Path(weights).resolve())
    if opset:
        data["opset"] = opset
    if batch:
        data["input"]["batch"] = _parse_batch(batch)
    if size:
        for key, value in zip(("height", "width"), _parse_size(size)):
            data["input"][key] = _resize(config.input, key, value, size, origin)
    if dynamic_hw:
        for key in ("height", "width"):
            dim = data["input"][key]
            if _is_range(dim):
                continue  # the config's own range (kept by --size too) wins over the default one
            opt = dim["opt"]
            data["input"][key] = {"opt": opt, "min": max(1, opt // 2), "max": opt * 2}
    if precisions:
        data["precisions"] = list(dict.fromkeys(precisions))
    if no_simplify:
        data["simplify"] = False
    flags = any(v for v in (variant, weights, opset, batch, size, dynamic_hw, precisions, no_simplify))
    return parse_config(data, f"{origin} with the flags" if flags else origin)


def _registry_config(path) -> bool:
    """Whether the config file names a registered block or network (a quick look; load_config validates)."""
    import yaml

    try:
        data = yaml.safe_load(open(path, encoding="utf-8"))
    except Exception:  # noqa: BLE001 - load_config reports an unreadable file properly
        return True
    source = data.get("source") if isinstance(data, dict) else None
    return not (isinstance(source, dict) and ("module" in source or "program" in source))


def parse_args_flag(value: str) -> dict:
    """--args as JSON or YAML text, or @file holding either."""
    import yaml

    text = value
    if value.startswith("@"):
        from pathlib import Path

        path = Path(value[1:])
        if not path.is_file():
            raise UserInputError(f"--args file '{path}' does not exist", hint="pass @path/to/args.yaml or inline JSON")
        text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise UserInputError(f"--args is not JSON or YAML: {str(exc).splitlines()[0]}",
                             hint='e.g. --args \'{"num_classes": 10}\' or --args @args.yaml') from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UserInputError(f"--args must be a mapping of keyword arguments, got {type(data).__name__}",
                             hint='e.g. --args \'{"num_classes": 10, "width": 32}\'')
    return data


def user_config(registry_name, config_path, variant, opset, batch, size, dynamic_hw, precisions, weights,
                no_simplify, user):
    """The config of a user model: --config's `source: {module|program}` and/or the flags."""
    from pathlib import Path

    from deploykit.export.config import load_config, parse_config
    from deploykit.sources.specs import flags_to_config, parse_dynamic_flag, parse_input_flag

    if registry_name:
        raise click.UsageError("--block/--model exclude --module/--program; pass one source")
    for flag, value in (("--batch", batch), ("--size", size), ("--dynamic-hw", dynamic_hw)):
        if value:
            raise click.UsageError(f"{flag} applies to registry blocks and networks; for your model give "
                                   "--input NAME:SHAPE and --dynamic NAME:AXES")
    if user.get("module") and user.get("program"):
        raise click.UsageError("--module and --program exclude each other; pass one of them")
    if config_path:
        config = load_config(config_path)
        if config.source.registry:
            raise UserInputError(f"--module/--program contradict {config.origin}, which exports "
                                 f"'{config.source.label}'", hint="pass only one of them and --config")
        data, origin = config.model_dump(mode="json"), config.origin
    else:
        data, origin = {"source": {}, "precisions": ["fp32", "fp16"]}, "the flags"
    src = data["source"]
    if user.get("module") or user.get("program"):
        for key in ("block", "network", "module", "program"):
            src.pop(key, None)
    if user.get("module"):
        target, _, name = user["module"].rpartition(":")
        src["module"] = (f"{Path(target).resolve()}:{name}" if target.endswith(".py") else user["module"])
    if user.get("program"):
        src["program"] = str(Path(user["program"]).resolve())
        src.pop("args", None)
        src.pop("weights", None)
    if user.get("args") is not None:
        src["args"] = parse_args_flag(user["args"])
    if weights:
        src["weights"] = str(Path(weights).resolve())
    if variant:
        src["variant"] = variant
    if user.get("inputs"):
        flags = {}
        for value in user["inputs"]:
            spec = parse_input_flag(value)
            if spec.name in flags:
                raise UserInputError(f"--input {spec.name} is given twice", hint="declare each input once")
            flags[spec.name] = spec
        for value in user.get("dynamic") or ():
            parse_dynamic_flag(value, flags)
        data["inputs"] = flags_to_config(list(flags.values()))
    elif user.get("dynamic"):
        raise click.UsageError("--dynamic needs the inputs it names declared with --input")
    if user.get("no_rewrite"):
        data["rewrite"] = False
    if user.get("name"):
        data["name"] = user["name"]
    if opset:
        data["opset"] = opset
    if precisions:
        data["precisions"] = list(dict.fromkeys(precisions))
    if no_simplify:
        data["simplify"] = False
    if src.get("module") and not data.get("inputs"):
        raise click.UsageError("--module needs its inputs: --input NAME:SHAPE[:DTYPE] (repeat per forward argument)")
    return parse_config(data, f"{origin} with the flags" if config_path else origin)


def _is_range(dim: dict) -> bool:
    """A dimension with a dynamic range: min or max set and different from opt."""
    return any(dim.get(k) is not None and dim[k] != dim["opt"] for k in ("min", "max"))


def _resize(spec, key: str, value: int, size: str, origin: str) -> dict:
    """--size on one dimension: the new export (opt) size, inside the config's range when it has one."""
    dim = getattr(spec, key)
    if not dim.dynamic:
        return {"opt": value}
    if not dim.lo <= value <= dim.hi:
        raise UserInputError(f"--size {size}: {key} {value} is outside the range {dim.lo}..{dim.hi} that "
                             f"{origin} sets for input.{key}",
                             hint=f"pass a size inside it, or edit input.{key} in the config: widen its min/max "
                                  "or drop them for a static size")
    return {"opt": value, "min": dim.lo, "max": dim.hi}


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
@click.option("--size", help="Spatial size HxW used for export, e.g. 56x56. Where the config gives H or W a "
                             "min/max range, the range is kept and the size must lie inside it (an error otherwise).")
@click.option("--dynamic-hw", is_flag=True, help="Make H and W dynamic: the config's own min/max range where it "
                                                 "sets one, else opt/2 .. opt*2.")
@click.option("--precision", "precisions", multiple=True,
              type=click.Choice(["fp32", "fp16", "bf16", "int8", "int8_trt"]),
              help="Precisions to write (repeatable): bf16 is OpenVINO's bf16 setting, int8 a Q/DQ graph for CPU "
                   "runtimes, int8_trt one for TensorRT; each is gated against fp32 PyTorch.")
@click.option("--calibration", type=click.Path(exists=True), metavar="DIR|FILE.npz",
              help="Real inputs to calibrate INT8 with (without it: random data, with a warning).")
@click.option("--no-simplify", is_flag=True, help="Skip onnxsim.")
@click.option("--force", is_flag=True, help="Replace the latest version of an existing model.")
@click.option("--new-version", is_flag=True, help="Write a new version directory beside the existing ones.")
@click.option("--module", "module", help="Your model: PKG.MOD:CALLABLE or path/to/file.py:CALLABLE, a class or "
                                       "factory returning an nn.Module. This imports and runs your code.")
@click.option("--args", "module_args", help="Keyword arguments of --module's callable: JSON, YAML or @file.")
@click.option("--program", type=click.Path(dir_okay=False), help="A saved torch.export program (.pt2); no code runs.")
@click.option("--input", "inputs", multiple=True, help="A model input NAME:DxDxD[:DTYPE] (float32, float16, int64, "
                                                       "int32, bool), in forward's order; repeatable.")
@click.option("--dynamic", multiple=True, help="Dynamic axes NAME:0,2,3 (batch 1..2x, others x0.5..x2) or "
                                               "NAME:0=1:8:32,2=320:640:1280 (MIN:OPT:MAX); repeatable.")
@click.option("--no-rewrite", is_flag=True, help="Export your model as written (no export-safe block swaps).")
@click.option("--name", help="Model name in the repository (default: the block, network or callable).")
@click.option("--debug", is_flag=True, help="Show your code's traceback when it fails (also DEPLOYKIT_DEBUG=1).")
@click.option("--allow-non-finite", is_flag=True, help="Export even when PyTorch's outputs on the verification "
                                                       "inputs hold NaN or Inf (a failure otherwise).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress output).")
def export(block, model, config_path, variant, weights, out_dir, opset, batch, size, dynamic_hw, precisions,
           calibration, no_simplify, force, new_version, module, module_args, program, inputs, dynamic, no_rewrite,
           name, debug, allow_non_finite, as_json):
    """Export a block, a network or your own model to ONNX, simplify it with onnxsim, and verify every graph
    against PyTorch before writing it to the model repository (Triton layout)."""
    import os
    from pathlib import Path

    if debug:
        from deploykit.sources.user_code import DEBUG_ENV

        previous = os.environ.get(DEBUG_ENV)
        os.environ[DEBUG_ENV] = "1"
        # For this command only (an in-process caller, a test, keeps its environment).
        click.get_current_context().call_on_close(
            lambda: os.environ.pop(DEBUG_ENV, None) if previous is None else os.environ.update({DEBUG_ENV: previous}))

    from deploykit.commands import echo_json, export_failure
    from deploykit.export.pipeline import REPORT_NAME, run_export
    from deploykit.progress import Progress

    if force and new_version:
        raise click.UsageError("--force and --new-version exclude each other; pass one of them")
    from deploykit.errors import require

    require("torch", extra="export", purpose="deploykit export")  # the base install serves and validates only
    config = report = before = None
    try:
        config = build_config(block, config_path, variant, opset, batch, size, dynamic_hw, precisions, weights,
                              no_simplify, model=model,
                              user={"module": module, "args": module_args, "program": program, "inputs": inputs,
                                    "dynamic": dynamic, "no_rewrite": no_rewrite, "name": name})
        if calibration:
            config = config.model_copy(update={"calibration": str(calibration)})
        report = Path(out_dir) / config.model_name / REPORT_NAME
        before = _stamp(report)
        status = run_export(config, out_dir, force=force, new_version=new_version,
                            progress=Progress("quiet" if as_json else None), allow_non_finite=allow_non_finite)
    except DeployKitError as exc:
        if as_json:  # still the one JSON object, in the export's shape; main() prints the error line
            written = report is not None and _stamp(report) not in (None, before)
            echo_json(export_failure(exc.one_line(), model=config.model_name if config is not None else None,
                                     report=str(report) if written else None))
        raise
    if as_json:
        echo_json(status.as_dict())
    else:
        _print_summary(status)
    if not status.passed:
        if not as_json:
            click.echo(f"error: {status.error or 'export failed'}", err=True)
        raise SystemExit(EXIT_CHECK_FAILED)


def _stamp(path):
    """What tells a freshly written report from an older one at the same path."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _print_summary(status) -> None:
    from rich.console import Console
    from rich.table import Table

    from deploykit.export.report import shape_label

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
                      ", ".join(shape_label(s.shape) for s in parity.shapes))
    console.print(table)
    if status.source is not None:
        from deploykit.sources.weights import describe

        seeded = status.source.weights_report.get("seeded_random")
        console.print(describe(status.source.weights_report), style="bold red" if seeded else None, markup=False)
        for note in status.source.notes:
            console.print(note, style="bold yellow", markup=False)
        conv = status.source.conversion
        if conv is not None:
            console.print(conv["summary"] + ("" if conv.get("used", True) else f"\n  not used: {conv['why']}"),
                          markup=False)
    for a in status.artifacts:
        console.print(f"wrote {a.onnx}")
    if status.report_path:
        console.print(f"report {status.report_path}")
