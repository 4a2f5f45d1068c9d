"""`deploykit tune MODEL`: try the CPU engines and precisions available (ONNX Runtime fp32 and INT8,
OpenVINO f32, bf16 and INT8), verify each against fp32 PyTorch, time them interleaved, install the fastest
that passes into the model repository (Triton layout), and record the runner-up and why.

Exit 0 a pick was installed, 1 nothing passed, 2 unusable input, 3 a missing optional dependency.
"""

from __future__ import annotations

import click

from deploykit.commands import echo_json
from deploykit.errors import EXIT_CHECK_FAILED


@click.command("tune")
@click.argument("model")
@click.option("--batch", "batches", default="1,8", show_default=True, help="Comma-separated batch sizes to time.")
@click.option("--size", help="Spatial size HxW (default: the export config's).")
@click.option("--calibration", type=click.Path(exists=True), metavar="DIR|FILE.npz",
              help="Real inputs to calibrate INT8 with (without it: random data, with a warning).")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True, help="Interleaved rounds.")
@click.option("--iters", type=click.IntRange(1), default=10, show_default=True, help="Timed calls per round.")
@click.option("--threads", type=click.IntRange(1), help="Intra-op threads for every engine (default: theirs).")
@click.option("--out", "out_dir", default="models", show_default=True, type=click.Path(file_okay=False),
              help="Model repository to install the pick into.")
@click.option("--name", help="Repository entry for the pick (default: MODEL_cpu).")
@click.option("--no-install", is_flag=True, help="Measure and report only.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no progress output).")
def tune(model, batches, size, calibration, rounds, iters, threads, out_dir, name, no_install, as_json):
    """Choose the fastest verified CPU engine and precision for MODEL (a block or network name) by measurement."""
    from pathlib import Path

    from deploykit.bench import source as sources
    from deploykit.blocks import names as block_names
    from deploykit.commands.bench import _parse_batches
    from deploykit.commands.export import _parse_size
    from deploykit.progress import Progress
    from deploykit.repository import check_model_name
    from deploykit.tune.run import markdown, tune as run_tune

    batch_sizes = list(_parse_batches(batches))
    hw = _parse_size(size) if size else None
    if name:
        check_model_name(name)
    from deploykit.errors import require

    require("torch", extra="export", purpose="deploykit tune")  # it exports and verifies against PyTorch
    if model in block_names():
        src = sources.from_block(model, batch_sizes, hw)
    else:
        src = sources.from_network(model, batch_sizes, hw)   # unknown names fail here, with the valid ones
    progress = Progress("quiet" if as_json else None)
    try:
        result = run_tune(src, batches=batch_sizes, out_dir=Path(out_dir), name=name, calibration=calibration,
                          rounds=rounds, iters=iters, threads=threads, install_pick=not no_install,
                          log=progress.info)
    finally:
        src.close()
    if as_json:
        echo_json(result.record())
    else:
        click.echo(markdown(result))
        if result.installed:
            click.echo(f"installed {result.choice.pick.name} as {result.installed}")
    if result.choice.pick is None:
        if not as_json:
            click.echo("error: no candidate passed its gate (see the table)", err=True)
        raise SystemExit(EXIT_CHECK_FAILED)
