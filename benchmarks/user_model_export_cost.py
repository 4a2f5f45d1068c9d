"""Cost of trust: `deploykit export --module` of a user model vs a bare `torch.onnx.export` of the same model.

The deploykit side is the whole command as a user runs it (a fresh subprocess: import, build, export-safe
rewrite with its parity checks, dynamo export, ONNX checker, parity at min/opt/max/odd, verified onnxsim, fp16
conversion and its parity, report and repository entry). The bare side is a fresh subprocess that builds the
same model and calls `torch.onnx.export(dynamo=True)` with the same dynamic batch, nothing else. The two alternate
in rounds (bare, deploykit, bare, deploykit ...) so both see the same machine load; the table gives medians and
the ratio per model. Target (issue 16): ratio <= 2.

    python benchmarks/user_model_export_cost.py                       # -> benchmarks/results/user_model_export_cost.md
    python benchmarks/user_model_export_cost.py --rounds 1 --size 64  # a quick check
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 2.0
MODELS = {"se_resnet50": (HERE / "user_models" / "se_resnet50.py", "SEResNet50")}

BARE = """
import importlib.util, sys, torch
spec = importlib.util.spec_from_file_location("m", sys.argv[1]); m = importlib.util.module_from_spec(spec)
spec.loader.exec_module(m)
model = getattr(m, sys.argv[2])().eval()
size = int(sys.argv[4])
batch = torch.export.Dim("batch", min=1, max=8)
program = torch.onnx.export(model, (torch.randn(2, 3, size, size),), dynamo=True, input_names=["images"],
                            output_names=["output"], dynamic_shapes=({0: batch},), verbose=False, report=False)
program.save(sys.argv[3])
"""


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "user_model_export_cost.md")
    parser.add_argument("--note", default="", help="a line about the machine (e.g. that it was loaded)")
    args = parser.parse_args()

    rows = []
    for name, (path, factory) in MODELS.items():
        bare, kit = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                bare.append(timed([sys.executable, "-c", BARE, str(path), factory, f"{tmp}/bare{r}.onnx",
                                   str(args.size)]))
                kit.append(timed([sys.executable, "-m", "deploykit", "export", "--module", f"{path}:{factory}",
                                  "--input", f"images:2x3x{args.size}x{args.size}", "--dynamic", "images:0=1:2:8",
                                  "--out", f"{tmp}/repo{r}", "--json"]))
                print(f"{name} round {r + 1}: bare {bare[-1]:.1f} s, deploykit {kit[-1]:.1f} s", flush=True)
        b, k = statistics.median(bare), statistics.median(kit)
        rows.append((name, b, k, k / b))

    lines = ["# Cost of trust: `deploykit export --module` vs bare `torch.onnx.export`", "",
             f"Input {args.size}x{args.size}, dynamic batch 1..8, {args.rounds} interleaved round(s) per model, "
             "each command a fresh subprocess (imports included on both sides). deploykit: export-safe rewrite, "
             "dynamo export, checker, parity at 4 shapes, verified onnxsim, fp16 and its parity, report, "
             f"repository entry. Target ratio <= {TARGET_RATIO:g}.", ""]
    if args.note:
        lines += [f"Machine: {args.note}", ""]
    lines += ["| model | bare torch.onnx.export (s, median) | deploykit export (s, median) | ratio | target met |",
              "|---|---|---|---|---|"]
    lines += [f"| {n} | {b:.1f} | {k:.1f} | {ratio:.2f} | {'yes' if ratio <= TARGET_RATIO else 'NO'} |"
              for n, b, k, ratio in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
