"""The published networks: ONNX Runtime (CPU) vs eager PyTorch (CPU), and export + verify wall time (issue 7).

For every registered network (or `--networks a,b`), at its export config's size (224 x 224; HA-CNN 160 x 64):

1. `deploykit export --model NAME --json` runs as a fresh subprocess, as a user would run it, into a temporary
   model repository: build, dynamo export, ONNX checks, verified onnxsim, fp16 conversion, parity at the
   config's batch sizes (min/opt/max), artifacts. Its wall time is the "export + verify" column. Issue 7's
   target: <= 60 s for the ResNet-50-class networks.
2. The verified fp32 graph runs in ONNX Runtime (CPU EP, default optimizations) against eager PyTorch on the
   same seeded weights: the reference network (the authors' computation, what a user runs today) and the
   export-safe network, at batch 1 and 8, the same intra-op threads for all. Calls are interleaved across
   backends in rounds; the table gives medians. ORT's outputs are compared with PyTorch's first. Target: ORT
   faster than eager PyTorch on every network.

    python benchmarks/networks.py                         # -> benchmarks/results/networks.md
    python benchmarks/networks.py --networks smt_t --iters 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # after the path set-up above

TARGET_EXPORT_SECONDS = 60.0
# The ResNet-50-class networks the export-time target applies to.
RESNET50_CLASS = {"resnet50_cbam", "resnet50_bam", "se_resnet50", "gsop_resnet50", "epsanet50_small",
                  "sa_resnet50", "sknet50"}
BACKENDS = ("torch-reference", "torch-safe", "onnxruntime")


def run_export(name: str, out_dir: Path, threads: int | None = None, timeout: float = 1800) -> dict:
    """`python -m deploykit export --model NAME --json` in a subprocess: wall seconds, report, exit code."""
    return common.timed_cli_export(["--model", name], out_dir, timeout=timeout, threads=threads)


def time_backends(name: str, onnx_path: Path, batches, warmup: int, iters: int, threads: int, monitor) -> dict:
    """Median milliseconds per (backend, batch), plus ORT's max abs difference from PyTorch."""
    import numpy as np
    import torch

    from deploykit.backends.ort import OrtRunner
    from deploykit.networks import default_config
    from deploykit.sources import build_source

    torch.set_num_threads(threads)
    config = default_config(name)
    mods = build_source(config)
    h, w = config.input.height.opt, config.input.width.opt
    out: dict = {"ms": {}, "max_abs": {}}
    with OrtRunner(onnx_path, threads=threads) as ort, torch.inference_mode():
        runs = {
            "torch-reference": lambda x: mods.reference(torch.from_numpy(x)),
            "torch-safe": lambda x: mods.exported(torch.from_numpy(x)),
            "onnxruntime": lambda x: ort.infer({config.input.name: x}),
        }
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, h, w)).astype(np.float32)
            expected = runs["torch-reference"](x).numpy()
            actual = runs["onnxruntime"](x)[config.output_name]
            out["max_abs"][batch] = float(np.abs(actual - expected).max())
            for _ in range(warmup):
                for fn in runs.values():
                    fn(x)
            samples = {b: [] for b in runs}
            for _ in range(iters):
                for backend, fn in runs.items():  # interleaved: load drifts hit every backend alike
                    monitor.start()
                    t0 = time.perf_counter()
                    fn(x)
                    samples[backend].append(time.perf_counter() - t0)
                    monitor.stop()
            for backend, values in samples.items():
                out["ms"][(backend, batch)] = statistics.median(values) * 1e3
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", help="comma-separated names (default: every registered network)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    parser.add_argument("--out", default=str(common.RESULTS / "networks.md"))
    args = parser.parse_args(argv)

    from deploykit import networks
    from deploykit.bench.env import LoadMonitor, environment, load_average, usable_cores

    names = [n.strip() for n in args.networks.split(",")] if args.networks else networks.names()
    for n in names:
        networks.spec(n)
    batches = [int(b) for b in args.batches.split(",")]
    threads = args.threads or usable_cores()
    env = environment("cpu", threads)
    monitor = LoadMonitor()
    results = {}
    with tempfile.TemporaryDirectory(prefix="deploykit-networks-bench-") as tmp:
        for name in names:
            print(f"[{name}] export + verify ...", file=sys.stderr, flush=True)
            monitor.start()
            exported = run_export(name, Path(tmp) / "models", args.threads)
            monitor.stop()
            entry = {"export": exported}
            report = exported["report"] or {}
            if exported["code"] == 0 and report.get("onnx"):
                from deploykit.onnx_utils.graph import count_shape_nodes

                manifest = json.loads(Path(report["manifest"]).read_text())
                b = manifest["config"]["input"]["batch"]
                entry["batch"] = f"{b['min']}:{b['opt']}:{b['max']}"
                entry["shape_nodes"] = count_shape_nodes(report["onnx"])
                print(f"[{name}] {exported['wall']:.1f} s; timing backends ...", file=sys.stderr, flush=True)
                entry["timing"] = time_backends(name, Path(report["onnx"]), batches, args.warmup, args.iters,
                                                threads, monitor)
            results[name] = entry
    env["load_average_end"] = load_average()
    lines = render(results, batches, env, monitor.verdict(usable_cores()), args)
    path = common.write_markdown(args.out, lines)
    print(f"wrote {path}", file=sys.stderr)
    return 0


def render(results: dict, batches, env: dict, load_note: str, args) -> list[str]:
    from deploykit import networks

    lines = common.header("Networks: ONNX Runtime vs eager PyTorch on CPU, export + verify time", env, load_note, [
        "ONNX Runtime runs the verified fp32 graph of `deploykit export --model NAME` (dynamo export, onnxsim, "
        "dynamic batch); eager PyTorch runs the reference network (the authors' computation) and the export-safe "
        "network, all with the same seeded weights and intra-op threads.",
        f"Median of {args.iters} interleaved calls after {args.warmup} warm-up rounds; input 224x224 "
        "(HA-CNN 160x64). Speedup = eager reference / ORT.",
        "Export + verify = wall time of the `deploykit export --model NAME` subprocess (imports included) at the "
        "shipped config: fp32 and fp16 graphs, each verified at the config's min/opt/max batch.",
    ])
    headers = ["network", "params (M)"]
    for b in batches:
        headers += [f"torch ref b{b} ms", f"torch safe b{b} ms", f"ORT b{b} ms", f"speedup b{b}"]
    headers += ["ORT max abs", "ORT faster"]
    rows, all_faster = [], True
    for name, entry in results.items():
        t = entry.get("timing")
        row = [name, f"{networks.spec(name).params_m:g}"]
        faster = None
        if t is None:
            row += ["-"] * (4 * len(batches)) + ["-", f"export failed: {entry['export']['stderr']}"]
            all_faster = False
        else:
            faster = True
            for b in batches:
                ref, safe, ort = (t["ms"][(k, b)] for k in BACKENDS)
                faster &= ort < ref
                row += [common.fmt_ms(ref), common.fmt_ms(safe), common.fmt_ms(ort), common.fmt_ratio(ref / ort)]
            row += [common.fmt_err(max(t["max_abs"].values())), "yes" if faster else "**no**"]
            all_faster &= faster
        rows.append(row)
    lines += ["## ONNX Runtime vs eager PyTorch (CPU)", ""]
    lines += common.md_table(headers, rows, "l" + "r" * (len(headers) - 2) + "c")
    lines += ["", f"Target, ORT faster than eager PyTorch on every network at every batch: "
                  f"{common.verdict(all_faster)}.", ""]

    lines += ["## Export + verify", ""]
    headers = ["network", "batch min:opt:max", "wall s", "build", "export", "simplify + verify", "fp16 + verify",
               "fp32 max abs", "fp16 max abs", "shape nodes", "exporter", "ResNet-50 class", "<= 60 s"]
    rows, met = [], True
    for name, entry in results.items():
        e = entry["export"]
        rep = e["report"] or {}
        stages = {s["name"]: s["seconds"] for s in rep.get("stages", [])}
        parity = rep.get("parity", {})
        cls = name in RESNET50_CLASS
        ok = e["code"] == 0 and e["wall"] <= TARGET_EXPORT_SECONDS
        if cls:
            met &= ok
        wall = f"{e['wall']:.1f}" + ("" if e["code"] == 0 else f" (exit {e['code']})")
        rows.append([name, entry.get("batch", "-"), wall,
                     *(f"{stages.get(s, 0):.1f}" for s in ("build", "export", "simplify", "fp16")),
                     common.fmt_err(parity.get("fp32", {}).get("max_abs")),
                     common.fmt_err(parity.get("fp16", {}).get("max_abs")),
                     entry.get("shape_nodes", "-"), rep.get("exporter") or "-", "yes" if cls else "",
                     ("yes" if ok else "**no**") if cls else ""])
    lines += common.md_table(headers, rows, "llrrrrrrrrrcc")
    lines += ["", f"Target, export + verify <= {TARGET_EXPORT_SECONDS:g} s for the ResNet-50-class networks: "
                  f"{common.verdict(met)}.", ""]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
