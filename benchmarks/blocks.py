"""All nine blocks across backends: the results table for issue 8 (and issue 3's twin-vs-reference target).

CPU (default): eager PyTorch reference, eager export-safe twin, torch.compile (inductor) of the twin and ONNX
Runtime (CPU EP, default graph optimizations) on the verified export, at batch 1 and 8, every block at its
export config's input size, the same intra-op threads for all, timed calls interleaved across backends in
rounds. Every backend's outputs are checked against the PyTorch reference before it is timed.

    python benchmarks/blocks.py                      # -> benchmarks/results/blocks_cpu.md
    python benchmarks/blocks.py --device cuda        # -> benchmarks/results/blocks_cuda.md (needs a GPU)

GPU (`--device cuda`): eager vs torch.compile vs CUDA graphs (plus ONNX Runtime's CUDA EP and TensorRT when
installed), and each block's achieved memory bandwidth, (input + output + parameter bytes) / median latency,
against a device-to-device copy bandwidth measured in the same run. That byte count is the least traffic the
block can cause, so the achieved figure is a lower bound.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # after the path set-up above

from deploykit.bench.stats import geomean

# Rows of deploykit bench that the tables use, by backend name.
REF, TWIN, COMPILE = "torch-eager-reference", "torch-eager-safe", "torch-compile"
ORT_CPU, ORT_CUDA, TRT, GRAPH = "onnxruntime-cpu", "onnxruntime-cuda", "tensorrt", "cuda-graph"

TARGET_ORT_SPEEDUP = 2.0
TARGET_TWIN_RATIO = 1.05
TARGET_BATCH = 8


@dataclass
class BlockRun:
    name: str
    result: object | None = None          # deploykit.bench.BenchResult
    error: str | None = None
    param_bytes: int = 0
    extra: dict = field(default_factory=dict)

    def median(self, backend: str, batch: int) -> float | None:
        if self.result is None:
            return None
        row = self.result.row(backend, batch)
        return row.stats.median_ms if row is not None and row.status == "ok" and row.stats else None

    def problem(self, backend: str, batch: int) -> str | None:
        if self.result is None:
            return self.error
        row = self.result.row(backend, batch)
        if row is None:
            return "not run"
        return None if row.status == "ok" else f"{row.status}: {row.reason}"


def ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num is not None and den else None


def copy_bandwidth(device: str, nbytes: int = 1 << 28, iters: int = 20) -> float:
    """Device-to-device copy bandwidth in GB/s (bytes read + written per second), median of `iters`."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * nbytes / times[len(times) // 2] / 1e9


def min_bytes(channels: int, height: int, width: int, batch: int, param_bytes: int, out_per_sample: int) -> int:
    """Least traffic of one call: read the input and the parameters once, write the output once (fp32)."""
    return batch * channels * height * width * 4 + batch * out_per_sample * 4 + param_bytes


def run_blocks(blocks, settings_kwargs: dict, log=print, size: tuple[int, int] | None = None) -> list[BlockRun]:
    """Benchmark every block with deploykit.bench; a block that cannot be built or exported becomes an error.
    `size` (H, W) replaces every block's export-config size (quick checks only)."""
    from deploykit.bench import BenchSettings, run_bench
    from deploykit.bench.source import from_block

    runs = []
    for name in blocks:
        log(f"== {name}")
        run = BlockRun(name)
        src = None
        try:
            src = from_block(name, settings_kwargs["batches"], size)
            run.param_bytes = sum(t.numel() * t.element_size() for t in
                                  [*src.safe.parameters(), *src.safe.buffers()])
            run.extra["input"] = (src.channels, src.height, src.width)
            run.result = run_bench(src, BenchSettings(**settings_kwargs), log=lambda m: log(f"   {m}"))
            run.extra["export"] = src.export_info
        except Exception as exc:  # noqa: BLE001 - one broken block must not hide the other eight
            run.error = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
            log(f"   failed: {run.error}")
        finally:
            if src is not None:
                src.close()
        runs.append(run)
    return runs


def _load_summary(runs) -> tuple[str, dict]:
    """The background load over all timed calls of the run, and the environment of the first result."""
    wall = other = 0.0
    env: dict = {}
    for r in runs:
        if r.result is None:
            continue
        env = env or dict(r.result.environment)
        t = r.result.load.get("timed_seconds") or 0.0
        c = r.result.load.get("other_cores")
        if c is not None:
            wall += t
            other += c * t
        env["load_average_end"] = r.result.environment.get("load_average_end")
    if not env:
        return "unknown (no block produced a result)", env
    cores = env.get("cores", 1)
    if wall <= 0:
        return "unknown", env
    avg = other / wall
    state = "QUIET" if avg / cores < 0.1 else "LOADED"
    return (f"{state}: other processes kept {avg:.2f} of {cores} cores busy on average during the timed calls "
            f"({avg / cores:.0%})" + ("; the lead should rerun this on a quiet machine" if state == "LOADED" else "")), env


def render_cpu(runs, batches, missing, settings_kwargs) -> list[str]:
    load_note, env = _load_summary(runs)
    lines = common.header(
        "Blocks on CPU: eager PyTorch vs torch.compile vs ONNX Runtime", env, load_note,
        notes=[f"Settings: {settings_kwargs['warmup']} warm-up calls, {settings_kwargs['iters']} timed calls in "
               f"{settings_kwargs['rounds']} interleaved rounds per backend and batch; seed {settings_kwargs['seed']}",
               "Eager PyTorch under torch.inference_mode; torch.compile = inductor, default mode, dynamic=False, "
               "compiling the export-safe twin (the same math as the ONNX graph); ONNX Runtime CPU EP with "
               "default graph optimizations on the graph `deploykit export` writes (exported, simplified, verified)",
               "Every backend's outputs were compared with the PyTorch reference (fp32, atol/rtol 1e-4) before "
               "timing; a backend that differs is marked failed and not timed",
               "GPU section (`--device cuda`: CUDA eager vs torch.compile vs CUDA graphs, achieved vs copy "
               "bandwidth): implemented, but NOT RUN: no GPU was lent to the task that produced this file"])
    if load_note.startswith("LOADED") and (env.get("threads") or 1) > 1:
        lines += ["**Caution:** measured on a loaded machine with more than one thread. PyTorch's OpenMP "
                  "threads wait at every parallel region for a peer the scheduler has taken off its core, so "
                  "eager and torch.compile latencies inflate far more than ONNX Runtime's; the ratios below "
                  "overstate ONNX Runtime's lead. A `--threads 1` run is less sensitive to load.", ""]
    if missing:
        lines += [f"Not benchmarked (block module not written yet): {', '.join(missing)}", ""]

    for batch in batches:
        lines += [f"## Batch {batch}: median latency (ms) and ratios", ""]
        rows = []
        for r in runs:
            ref, twin, comp, ort = (r.median(b, batch) for b in (REF, TWIN, COMPILE, ORT_CPU))
            problems = [f"{lbl}: {p}" for lbl, b in (("ref", REF), ("twin", TWIN), ("compile", COMPILE),
                                                     ("ort", ORT_CPU)) if (p := r.problem(b, batch))]
            shape = "x".join(map(str, r.extra.get("input", ()))) or "-"
            rows.append([r.name, shape, common.fmt_ms(ref), common.fmt_ms(twin), common.fmt_ms(comp),
                         common.fmt_ms(ort), common.fmt_ratio(ratio(twin, ref), 3),
                         common.fmt_ratio(ratio(ref, ort)), common.fmt_ratio(ratio(comp, ort)),
                         "; ".join(problems)])
        speed = [ratio(r.median(REF, batch), r.median(ORT_CPU, batch)) for r in runs]
        vs_comp = [ratio(r.median(COMPILE, batch), r.median(ORT_CPU, batch)) for r in runs]
        twin_r = [ratio(r.median(TWIN, batch), r.median(REF, batch)) for r in runs]
        rows.append(["**geomean**", "", "", "", "", "", common.fmt_ratio(_gm(twin_r), 3),
                     common.fmt_ratio(_gm(speed)), common.fmt_ratio(_gm(vs_comp)), _coverage(speed, runs)])
        lines += common.md_table(
            ["block", "C x H x W", "eager ref", "eager twin", "torch.compile", "ORT", "twin / ref",
             "ORT speedup vs eager ref", "ORT speedup vs compile", "problems"], rows, align="llrrrrrrrl")
        lines.append("")

    lines += ["## Targets", ""]
    lines += targets_cpu(runs, batches)
    lines += ["", "## Details: median / p90 / p99 latency (ms), throughput (items/s), peak memory growth (MiB)", ""]
    detail = []
    for r in runs:
        if r.result is None:
            detail.append([r.name, "-", "-", "error", "-", "-", "-", r.error])
            continue
        for row in r.result.rows:
            s = row.stats
            detail.append([r.name, row.label, row.batch, row.status,
                           f"{common.fmt_ms(s.median_ms)} / {common.fmt_ms(s.p90_ms)} / {common.fmt_ms(s.p99_ms)}"
                           if s else "-", f"{s.throughput:.0f}" if s else "-",
                           f"{row.peak_mem_mib:.1f}" if row.peak_mem_mib is not None else "-",
                           common.fmt_err(row.max_abs_err) if row.outputs_checked else row.reason])
    lines += common.md_table(["block", "backend", "batch", "status", "median / p90 / p99", "items/s",
                              "peak MiB", "max abs err vs reference (or reason)"], detail, align="llrlrrrl")
    return lines


def _gm(values) -> float | None:
    vals = [v for v in values if v is not None]
    return geomean(vals) if vals else None


def _coverage(values, runs) -> str:
    n = sum(v is not None for v in values)
    return f"over {n} of {len(runs)} blocks" if n != len(runs) else f"over all {n} blocks"


def targets_cpu(runs, batches) -> list[str]:
    """The issue 8 and issue 3 targets with the measured values and met / MISSED."""
    b = TARGET_BATCH if TARGET_BATCH in batches else max(batches)
    speed = {r.name: ratio(r.median(REF, b), r.median(ORT_CPU, b)) for r in runs}
    vs_comp = {r.name: ratio(r.median(COMPILE, b), r.median(ORT_CPU, b)) for r in runs}
    complete = all(v is not None for v in speed.values()) and bool(speed)
    g = _gm(speed.values())
    slowest = min(((v, k) for k, v in speed.items() if v is not None), default=(None, None))
    slower = [k for k, v in speed.items() if v is not None and v < 1.0]
    lines = [
        f"- Issue 8, ORT CPU vs eager PyTorch (reference) at batch {b}, geometric-mean speedup >= "
        f"{TARGET_ORT_SPEEDUP:g}x: measured {common.fmt_ratio(g)} ({_coverage(speed.values(), runs)}) -> "
        f"{common.verdict(None if g is None else (g >= TARGET_ORT_SPEEDUP and complete))}",
        f"- Issue 8, no block slower under ORT than eager at batch {b}: slowest {slowest[1]} at "
        f"{common.fmt_ratio(slowest[0])}" + (f"; slower: {', '.join(slower)}" if slower else "") + " -> "
        f"{common.verdict(None if slowest[0] is None else (not slower and complete))}",
    ]
    gc = _gm(vs_comp.values())
    lines.append(f"- Issue 8, ORT CPU ahead of torch.compile on the geometric mean at batch {b}: ORT is "
                 f"{common.fmt_ratio(gc)} faster ({_coverage(vs_comp.values(), runs)}) -> "
                 f"{common.verdict(None if gc is None else gc > 1.0)}")
    for bb in batches:
        tw = {r.name: ratio(r.median(TWIN, bb), r.median(REF, bb)) for r in runs}
        over = [f"{k} {v:.3f}" for k, v in tw.items() if v is not None and v > TARGET_TWIN_RATIO]
        gt = _gm(tw.values())
        lines.append(
            f"- Issue 3 and 8, export-safe twin / reference in eager PyTorch at batch {bb}: per block <= "
            f"{TARGET_TWIN_RATIO} ({'over: ' + ', '.join(over) if over else 'none over'}) -> "
            f"{common.verdict(None if gt is None else not over)}; geometric mean {common.fmt_ratio(gt, 3)} "
            f"(target <= 1.0) -> {common.verdict(None if gt is None else gt <= 1.0)}")
    return lines


def render_cuda(runs, batches, missing, settings_kwargs, copy_gbs: float) -> list[str]:
    load_note, env = _load_summary(runs)
    lines = common.header(
        "Blocks on GPU: CUDA eager vs torch.compile vs CUDA graphs, against the copy bandwidth", env, load_note,
        notes=[f"Settings: {settings_kwargs['warmup']} warm-up, {settings_kwargs['iters']} timed calls in "
               f"{settings_kwargs['rounds']} rounds; CUDA events time the PyTorch backends",
               f"Device-to-device copy bandwidth measured in this run: {copy_gbs:.1f} GB/s (bytes read + written)",
               "Achieved bandwidth = (input + output + parameter bytes) / median latency of the fastest verified "
               "backend: the least traffic the block can cause, so a lower bound"])
    if missing:
        lines += [f"Not benchmarked (block module not written yet): {', '.join(missing)}", ""]
    backends = [(REF, "eager ref"), (TWIN, "eager twin"), (COMPILE, "torch.compile"), (GRAPH, "CUDA graph"),
                (ORT_CUDA, "ORT CUDA"), (TRT, "TensorRT")]
    for batch in batches:
        lines += [f"## Batch {batch}: median latency (ms) and achieved bandwidth", ""]
        rows = []
        for r in runs:
            meds = [r.median(b, batch) for b, _ in backends]
            best = min((m for m in meds if m is not None), default=None)
            c, h, w = r.extra.get("input", (0, 0, 0))
            nbytes = min_bytes(c, h, w, batch, r.param_bytes, c * h * w)
            gbs = nbytes / (best / 1e3) / 1e9 if best else None
            problems = [f"{lbl}: {p}" for (b, lbl) in backends if (p := r.problem(b, batch))
                        and not p.startswith("skipped")]
            rows.append([r.name, f"{c}x{h}x{w}", *[common.fmt_ms(m) for m in meds],
                         f"{gbs:.1f}" if gbs else "-", f"{gbs / copy_gbs:.0%}" if gbs else "-",
                         "; ".join(problems) or r.error or ""])
        lines += common.md_table(["block", "C x H x W", *[lbl for _, lbl in backends], "achieved GB/s",
                                  "of copy BW", "problems"], rows, align="ll" + "r" * 8 + "l")
        lines.append("")
    skipped = sorted({f"{row.label}: {row.reason}" for r in runs if r.result for row in r.result.rows
                      if row.status == "skipped"})
    if skipped:
        lines += ["Skipped backends:", ""] + [f"- {s}" for s in skipped]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", help="comma-separated block names (default: every registered block)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batches", help="comma-separated (default 1,8 on cpu, 8,128 on cuda)")
    parser.add_argument("--backends", help="override the backends (deploykit bench names)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, help="intra-op threads for every backend (default: PyTorch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", help="HxW for every block instead of its export config's (quick checks)")
    parser.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)  # tests: "eager"
    parser.add_argument("--out", help="markdown file (default benchmarks/results/blocks_<device>.md)")
    args = parser.parse_args(argv)

    blocks, missing = common.block_names(args.blocks)
    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    batches = tuple(int(b) for b in (args.batches or ("1,8" if args.device == "cpu" else "8,128")).split(","))
    default_backends = "torch,compile,ort" if args.device == "cpu" else "torch,compile,cudagraph,ort,trt"
    settings = {"backends": tuple((args.backends or default_backends).split(",")), "batches": batches,
                "warmup": args.warmup, "iters": args.iters, "rounds": args.rounds, "threads": args.threads,
                "device": args.device, "seed": args.seed, "compile_backend": args.compile_backend}
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: --device cuda needs a GPU visible to PyTorch", file=sys.stderr)
            return 3
        copy_gbs = copy_bandwidth("cuda")
        runs = run_blocks(blocks, settings, log=lambda m: print(m, file=sys.stderr, flush=True), size=size)
        lines = render_cuda(runs, batches, missing, settings, copy_gbs)
    else:
        runs = run_blocks(blocks, settings, log=lambda m: print(m, file=sys.stderr, flush=True), size=size)
        lines = render_cpu(runs, batches, missing, settings)
    out = Path(args.out) if args.out else common.RESULTS / f"blocks_{args.device}.md"
    common.write_markdown(out, lines)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
