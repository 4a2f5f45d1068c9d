"""`deploykit build`: an ONNX model to a TensorRT plan in the model repository (Triton layout).

Exit codes: 0 built, 1 TensorRT rejected the graph or the build, 2 unusable input or flags, 3 TensorRT or a
GPU is missing (one line says which, and how to get it).
"""

from __future__ import annotations

import click

from deploykit.commands import echo_json

from deploykit.errors import DeployKitError


@click.command("build")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "int8"]),
              help="Engine precision; default: the graph's own. fp16 means the fp16 graph from `deploykit export` "
                   "(on TensorRT 10 an fp32 graph may also take the FP16 builder flag); int8 needs Q/DQ nodes.")
@click.option("--profile", "profiles", multiple=True, metavar="NAME:MIN:OPT:MAX",
              help="Optimization profile shapes, e.g. input:1x64x56x56:8x64x56x56:32x64x56x56 (repeatable; a "
                   "repeated input name starts the next profile). Default: the ranges in the export's deploykit.json.")
@click.option("--workspace", metavar="SIZE", help="Workspace memory limit, e.g. 2GiB or 512MiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="Timing cache file, read if present and written back.")
@click.option("--opt-level", type=click.IntRange(0, 5), help="Builder optimization level 0-5 (TensorRT's default: 3).")
@click.option("--out", "out_dir", default="models", show_default=True, type=click.Path(file_okay=False),
              help="Model repository directory.")
@click.option("--name", help="Model name in the repository (default: the ONNX model's name + '_trt').")
@click.option("--model-version", default=1, show_default=True, type=click.IntRange(min=1), help="Version directory.")
@click.option("--verbose", is_flag=True, help="Show TensorRT's info messages too.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (TensorRT messages still go to stderr).")
def build(model, precision, profiles, workspace, timing_cache, opt_level, out_dir, name, model_version, verbose, as_json):
    """Build a TensorRT engine from an ONNX model: strongly typed where TensorRT supports it, profiles from the
    export's ranges, a plain model.plan with config.pbtxt and a deploykit.json sidecar. Needs TensorRT and a GPU."""
    from pathlib import Path

    from deploykit.trt.builder import BuildSettings, parse_size
    from deploykit.trt.pipeline import BuildReport, build_model

    report = BuildReport(onnx=str(model))

    def sink(severity: str, message: str) -> None:
        click.echo(f"tensorrt {severity.lower()}: {message}", err=True)

    try:
        settings = BuildSettings(
            workspace=parse_size(workspace) if workspace else None, opt_level=opt_level,
            timing_cache=Path(timing_cache) if timing_cache else None, verbose=verbose,
        )
        from deploykit.repository_journal import recover, recover_around

        recover_around(model)   # interrupted installs in the repositories read and written are settled first
        recover(out_dir)
        build_model(Path(model), precision=precision, profile_flags=list(profiles), settings=settings,
                    out_dir=out_dir, name=name, version=model_version, report=report, sink=sink)
    except DeployKitError as exc:
        if report.status != "failed":  # raised before the pipeline started (a bad flag)
            report.status, report.error = "failed", exc.one_line()
        if as_json:
            echo_json(report.as_dict())
        else:
            for issue in getattr(exc, "issues", []):
                click.echo(f"parser error: {issue}", err=True)
        raise
    if as_json:
        echo_json(report.as_dict())
        return
    _print_summary(report)


def _print_summary(report) -> None:
    d = report.details
    out, precision = d["output"], d["precision"]
    typing = "strongly typed" if precision["strongly_typed"] else "weakly typed"
    click.echo(f"built {out['model']} v{out['version']}: {precision['precision']} ({typing}, from the "
               f"{precision['source']}) with TensorRT {d['tensorrt']['version']} on {d['gpu']['name']} "
               f"(sm {d['gpu']['compute_capability']}) in {d['build']['seconds']:.1f} s")
    for number, text in enumerate(out["profiles"]):
        click.echo(f"  profile {number}: {text}")
    cache = d["build"].get("timing_cache")
    if cache:
        click.echo(f"  timing cache {cache['path']}: {cache['status']}, {cache.get('written_bytes', 0)} bytes written")
    for note in report.notes:
        click.echo(f"  note: {note}")
    click.echo(f"wrote {out['plan']}\nwrote {out['sidecar']}\nwrote {out['config']}")
