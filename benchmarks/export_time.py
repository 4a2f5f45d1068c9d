"""Wall time of `deploykit export --block X` (export + simplify + verify, fp32 and the config's fp16) per block.

Each export runs as a fresh subprocess, as a user would run it, into a temporary model repository, at the
block's default config (export_configs/<block>.yaml, else the registry defaults). The table gives the
subprocess wall time (what the user waits, Python start-up and imports included), the pipeline's own time
(the sum of its stage timings from `--json`), and the stages. Issue 4's target: <= 10 s per block.

    python benchmarks/export_time.py                    # -> benchmarks/results/export_time.md
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common

TARGET_SECONDS = 10.0


def time_export(block: str, out_dir: Path, python: str = sys.executable, timeout: float = 900) -> dict:
    """One `python -m deploykit export --block NAME --json` run: wall seconds, its JSON and exit code."""
    return common.timed_cli_export(["--block", block], out_dir, python=python, timeout=timeout)


def import_time(python: str = sys.executable) -> float:
    """Seconds for a fresh interpreter to import what every export needs (torch, onnx, onnxruntime)."""
    t0 = time.perf_counter()
    subprocess.run([python, "-c", "import torch, onnx, onnxruntime, onnxsim"], check=True, capture_output=True)
    return time.perf_counter() - t0


def measure(blocks, repeat: int, log=print, monitor=None) -> tuple[list[dict], float]:
    """Export every block `repeat` times; `monitor` (a LoadMonitor) records the background load meanwhile."""
    rows = []
    imports = import_time()
    log(f"imports alone: {imports:.1f} s")
    for name in blocks:
        runs = []
        with tempfile.TemporaryDirectory(prefix="deploykit-export-time-") as tmp:
            for i in range(repeat):
                if monitor is not None:
                    monitor.start()
                try:
                    runs.append(time_export(name, Path(tmp) / "models"))
                finally:
                    if monitor is not None:
                        monitor.stop()
                log(f"{name} run {i + 1}: {runs[-1]['wall']:.1f} s (exit {runs[-1]['code']})")
        ok = [r for r in runs if r["code"] == 0 and r["report"]]
        last = (ok or runs)[-1]
        stages = {}
        if last["report"]:
            for st in last["report"].get("stages", []):
                stages[st["name"]] = st["seconds"]
        pipeline = [sum(s["seconds"] for s in r["report"]["stages"]) for r in ok]
        rows.append({
            "name": name, "walls": [r["wall"] for r in runs], "codes": [r["code"] for r in runs],
            "wall": statistics.median(r["wall"] for r in runs), "pipeline": statistics.median(pipeline) if pipeline else None,
            "stages": stages, "passed": bool(ok) and len(ok) == len(runs),
            "precisions": sorted(last["report"].get("parity", {})) if last["report"] else [],
            "exporter": last["report"].get("exporter") if last["report"] else None,
            "error": None if ok else (last["report"] or {}).get("error") or last["stderr"],
        })
    return rows, imports


STAGES = ("build", "export", "check", "simplify", "fp16", "write")


def render(rows, missing, env, imports: float, repeat: int, load_note: str | None = None) -> list[str]:
    from deploykit.bench.stats import geomean

    lines = common.header("`deploykit export --block X`: wall time per block", env, load_note, notes=[
        f"Each block exported {repeat}x as a fresh subprocess (`python -m deploykit export --block X --out TMP "
        f"--force --json`) at its default config; the median is shown",
        "Wall = what the user waits (interpreter start and imports included); pipeline = the sum of the "
        "export's own stage timings (build, export, check, simplify+verify, fp16+verify, write)",
        f"A fresh interpreter importing torch, onnx, onnxruntime and onnxsim took {imports:.1f} s in this run",
    ])
    if missing:
        lines += [f"Not measured (block module not written yet): {', '.join(missing)}", ""]
    table = []
    for r in rows:
        st = r["stages"]
        table.append([r["name"], f"{r['wall']:.1f}", f"{r['pipeline']:.1f}" if r["pipeline"] is not None else "-",
                      *[f"{st[s]:.1f}" if s in st else "-" for s in STAGES],
                      ", ".join(r["precisions"]) or "-", r["exporter"] or "-",
                      "ok" if r["passed"] else f"FAILED: {r['error']}",
                      "met" if r["wall"] <= TARGET_SECONDS and r["passed"] else "**MISSED**"])
    lines += common.md_table(["block", "wall s", "pipeline s", *[f"{s} s" for s in STAGES], "precisions",
                              "exporter", "result", f"<= {TARGET_SECONDS:g} s"], table,
                             align="lrr" + "r" * len(STAGES) + "llll")
    over = [r["name"] for r in rows if not (r["wall"] <= TARGET_SECONDS and r["passed"])]
    lines += ["", "## Target (issue 4)", "",
              f"- Every block <= {TARGET_SECONDS:g} s wall at its default config: "
              + ("all within" if not over else f"missed by {', '.join(over)}")
              + f"; worst {max((r['wall'] for r in rows), default=float('nan')):.1f} s, geometric mean "
              f"{geomean(r['wall'] for r in rows):.1f} s -> {common.verdict(not over if rows else None)}"]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", help="comma-separated block names (default: every registered block)")
    parser.add_argument("--repeat", type=int, default=3, help="exports per block; the median is reported")
    parser.add_argument("--out", help="markdown file (default benchmarks/results/export_time.md)")
    args = parser.parse_args(argv)

    from deploykit.bench.env import LoadMonitor, environment, load_average

    names, missing = common.block_names(args.blocks)
    env = environment("cpu", None)
    log = lambda m: print(m, file=sys.stderr, flush=True)
    monitor = LoadMonitor()
    rows, imports = measure(names, max(1, args.repeat), log=log, monitor=monitor)
    env["load_average_end"] = load_average()
    note = monitor.verdict(env["cores"]).replace("timed calls", "exports")
    out = Path(args.out) if args.out else common.RESULTS / "export_time.md"
    common.write_markdown(out, render(rows, missing, env, imports, max(1, args.repeat), note))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
