"""`deploykit bench`: latency, throughput and memory of a block, network or ONNX file across backends."""

from __future__ import annotations

import click

from deploykit.commands import echo_json

from deploykit.errors import EXIT_CHECK_FAILED


def _parse_backends(value: str) -> tuple[str, ...]:
    from deploykit.bench.backends import BACKEND_NAMES
    from deploykit.errors import unknown_name_error

    names = tuple(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    if not names:
        raise click.BadParameter(f"no backend in '{value}'; valid: {', '.join(BACKEND_NAMES)}", param_hint="--backends")
    for name in names:
        if name not in BACKEND_NAMES:
            raise click.BadParameter(unknown_name_error("backend", name, BACKEND_NAMES).message,
                                     param_hint="--backends")
    return names


def _parse_batches(value: str) -> tuple[int, ...]:
    try:
        sizes = tuple(dict.fromkeys(int(p) for p in value.split(",") if p.strip()))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) <= 0:
        raise click.BadParameter(f"'{value}' is not a comma-separated list of positive integers, e.g. 1,8,32",
                                 param_hint="--batch")
    from deploykit.bench.backends import RECOMPILE_LIMIT

    if len(sizes) > RECOMPILE_LIMIT:
        raise click.BadParameter(f"{len(sizes)} batch sizes; at most {RECOMPILE_LIMIT}", param_hint="--batch")
    return sizes


def _check_output_file(path: str | None, flag: str) -> None:
    """Fail before minutes of benchmarking, not after, when a results file cannot be written: its directory
    must exist (none is created for the user) and a file must really be creatable there (as root,
    os.access says yes even for /proc)."""
    import os
    import tempfile
    from pathlib import Path

    from deploykit.errors import UserInputError

    if not path:
        return
    target = Path(path)
    if target.is_dir():
        raise UserInputError(f"{flag} {path} is a directory", hint=f"pass {flag} with a file path")
    parent = target.parent
    if not os.path.lexists(parent):
        raise UserInputError(f"{flag} {path}: the directory '{parent}' does not exist",
                             hint=f"create it first, or pass {flag} with a path in an existing directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".probe", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UserInputError(f"{flag} {path}: '{parent}' is not a directory this user can write in: "
                             f"{exc.strerror or exc}",
                             hint=f"pass {flag} with a path under a directory you can write") from None


def _max_threads() -> int:
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 4 * cores   # beyond this the run only measures the scheduler


def _resolve_device(device: str) -> str:
    from deploykit.errors import MissingDependency

    if device == "cpu":
        return "cpu"
    import importlib.util

    if device == "auto" and importlib.util.find_spec("torch") is None:
        return "cpu"  # the base install benchmarks ONNX Runtime on the CPU; deploykit[export] brings torch
    import torch

    available = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise MissingDependency("--device cuda: no CUDA GPU is visible to PyTorch",
                                hint="run on a machine with an NVIDIA GPU and a CUDA build of torch, or use --device cpu")
    return device


@click.command("bench")
@click.argument("onnx_model", required=False, type=click.Path(exists=False))
@click.option("--block", help="Registered block name (see `deploykit list`).")
@click.option("--model", "network", help="Network name with an export config in export_configs/.")
@click.option("--backends", default="torch,compile,ort,trt", show_default=True,
              help="Comma-separated: torch (eager reference and twin), compile, ort, trt, cudagraph, openvino "
                   "(f32, compiled per batch), openvino-bf16, ort-int8, openvino-int8 (CPU Q/DQ).")
@click.option("--batch", "batches", default="1,8,32", show_default=True, help="Comma-separated batch sizes.")
@click.option("--size", help="Spatial size HxW (default: the export config's).")
@click.option("--warmup", type=click.IntRange(0), default=10, show_default=True, help="Untimed calls first.")
@click.option("--iters", type=click.IntRange(1), default=100, show_default=True, help="Timed calls per backend and batch.")
@click.option("--rounds", type=click.IntRange(1), default=1, show_default=True,
              help="Interleave the timed calls across backends in N rounds (fairer under fluctuating load).")
@click.option("--threads", type=click.IntRange(1, _max_threads()),
              help="Intra-op threads for every backend (default: PyTorch's; at most 4 per usable core).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto picks cuda when PyTorch sees a GPU.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the benchmark input.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (no table, no progress).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="Also write the rows as CSV.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also write a PNG of latency vs batch per backend (needs matplotlib: deploykit[bench]).")
@click.option("--module", "module", help="MODEL.onnx's PyTorch reference, PKG.MOD:CALLABLE or file.py:CALLABLE (runs "
                                       "your code), replacing the sidecar's source.")
@click.option("--args", "module_args", help="--module's keyword arguments: JSON, YAML or @file.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint for the reference (--module or the sidecar's).")
def bench(onnx_model, block, network, backends, batches, size, warmup, iters, rounds, threads, device, seed,
          as_json, csv_path, plot_path, module, module_args, weights):
    """Benchmark a block (--block), a network (--model) or an ONNX file across backends.

    Every backend's outputs are compared with PyTorch before it is timed; a backend whose outputs differ is
    reported as failed, without timings, and the command exits 1. Backends that cannot run here (TensorRT
    without a GPU) are skipped with the reason.
    """
    from deploykit.commands.export import _parse_size
    from deploykit.errors import require

    chosen = [flag for flag, v in (("--block", block), ("--model", network), ("MODEL.onnx", onnx_model)) if v]
    if len(chosen) != 1:
        raise click.UsageError("pass exactly one of --block NAME, --model NAME or MODEL.onnx"
                               + (f"; got {', '.join(chosen)}" if chosen else ""))
    from deploykit.commands.validate import _source_flags

    source_flags = _source_flags(module, module_args, weights)
    if source_flags and not onnx_model:
        raise click.UsageError("--module/--args/--weights name the reference of MODEL.onnx; pass the ONNX file")
    if source_flags:
        require("torch", extra="export", purpose="the PyTorch reference of --module/--weights")
    backend_names = _parse_backends(backends)
    batch_sizes = _parse_batches(batches)
    hw = _parse_size(size) if size else None
    if block or network:  # a block or network is built in PyTorch; an ONNX file needs only ONNX Runtime
        require("torch", extra="export", purpose="benchmarking a --block or --model")
    if plot_path:  # fail before minutes of benchmarking, not after
        require("matplotlib", extra="bench", purpose="--plot")
    _check_output_file(csv_path, "--csv")
    _check_output_file(plot_path, "--plot")

    from deploykit.bench import source as sources
    from deploykit.bench.run import BenchSettings, run_bench
    from deploykit.progress import Progress

    progress = Progress("quiet" if as_json else None)
    dev = _resolve_device(device)
    if block:
        src = sources.from_block(block, batch_sizes, hw)
    elif network:
        src = sources.from_network(network, batch_sizes, hw)
    else:
        src = sources.from_onnx(onnx_model, hw, batch_sizes, source_flags)
    from deploykit.machine import check_input_fits

    check_input_fits([s for b in batch_sizes for s in src.input_shapes(b).values()], what="benchmarking",
                     hint="lower the largest --batch or the --size")
    settings = BenchSettings(backends=backend_names, batches=batch_sizes, warmup=warmup, iters=iters,
                             rounds=rounds, threads=threads, device=dev, seed=seed)
    try:
        result = run_bench(src, settings, log=progress.info)
    finally:
        src.close()
    if not any(r.stats for r in result.rows) and result.passed:
        # Every row skipped: batch sizes the graph refuses are caught before running, so what is left is
        # backends this machine cannot run (TensorRT or CUDA without a GPU).
        from deploykit.errors import MissingDependency

        reasons = "; ".join(dict.fromkeys(f"{r.label}: {r.reason}" for r in result.rows if r.reason))
        raise MissingDependency(f"nothing was measured: {reasons or 'no backend ran'}",
                                hint="add a backend this machine can run, e.g. --backends ort")
    try:
        if csv_path:
            result.write_csv(csv_path)
        if plot_path:
            result.plot(plot_path)
    except OSError as exc:
        from deploykit.errors import UserInputError

        raise UserInputError(f"could not write the results: {exc}", hint="pass --csv/--plot paths you can write")
    if as_json:
        echo_json(result.as_dict())
    else:
        from rich.console import Console

        console = Console()
        console.print(result.rich_table())
        for line in result.footer_lines():  # plain text: reasons carry brackets such as deploykit[trt]
            console.print(line, highlight=False, markup=False)
        for path in (csv_path, plot_path):
            if path:
                console.print(f"wrote {path}", highlight=False, markup=False)
    if not result.passed:
        if not as_json:
            failed = sorted({r.label for r in result.rows if r.status == "failed"})
            click.echo(f"error: {', '.join(failed)} failed (see the reasons above); their timings are not results",
                       err=True)
        raise SystemExit(EXIT_CHECK_FAILED)
