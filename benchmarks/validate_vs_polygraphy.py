"""`deploykit validate` against `polygraphy run --onnxrt` on a ViT-B/16 export: wall time and peak RSS.

Issue 17's target: validate within 1.5x of Polygraphy's time and memory on the same model. The ViT-B/16 is
written here in plain torch (torchvision does not import in this environment): 16x16 patch embedding, class
token, learned position embedding, 12 pre-norm blocks of 12-head attention and a 3072-wide MLP, 1000-class
head: 86.6M parameters, the same graph shape as torchvision's vit_b_16. It is exported once (static
1x3x224x224, opset 17) with random weights; weights do not change the work either tool does.

Both tools run as fresh subprocesses, as a user runs them, alternating (validate, polygraphy, validate, ...)
so both see the same machine load; each run's peak RSS is its process tree's maximum resident set
(getrusage of a wrapper's only child). Each tool runs the model on one random input on ONNX Runtime's CPU
provider; validate also runs its structure checks, the TensorRT audit and the fp16 range scan.

    python benchmarks/validate_vs_polygraphy.py                # 3 runs each -> results/validate_vs_polygraphy.md
    python benchmarks/validate_vs_polygraphy.py --runs 1 --small   # a 2-block ViT-B, to prove the script works
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "validate_vs_polygraphy.md"
TARGET = 1.5
# A wrapper whose only child is the tool: its RUSAGE_CHILDREN maxrss is the tool's peak RSS.
_WRAPPER = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).returncode; "
            "dt = time.perf_counter() - t; "
            "print(dt, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)")


def build_vit_b16(depth: int = 12):
    """ViT-B/16 (Dosovitskiy et al., arXiv:2010.11929) in plain torch, eval mode."""
    import torch
    from torch import nn

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int):
            super().__init__()
            self.heads, self.scale = heads, (dim // heads) ** -0.5
            self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

        def forward(self, x):
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
            attn = (q @ k.transpose(-2, -1) * self.scale).softmax(dim=-1)
            return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    class Block(nn.Module):
        def __init__(self, dim: int, heads: int, hidden: int):
            super().__init__()
            self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class ViT(nn.Module):
        def __init__(self, depth: int, dim: int = 768, heads: int = 12, hidden: int = 3072, classes: int = 1000):
            super().__init__()
            self.patch = nn.Conv2d(3, dim, 16, 16)
            self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.pos = nn.Parameter(torch.randn(1, 197, dim) * 0.02)
            self.blocks = nn.Sequential(*[Block(dim, heads, hidden) for _ in range(depth)])
            self.norm, self.head = nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, classes)

        def forward(self, x):
            x = self.patch(x).flatten(2).transpose(1, 2)
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
            return self.head(self.norm(self.blocks(x))[:, 0])

    torch.manual_seed(0)
    return ViT(depth).eval()


def export(path: Path, depth: int) -> int:
    """Write the ONNX file; its parameter count."""
    import torch

    model = build_vit_b16(depth)
    with torch.inference_mode():
        torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(path), input_names=["input"],
                          output_names=["logits"], opset_version=17, dynamo=False)
    return sum(p.numel() for p in model.parameters())


def run(command: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB, exit code) of one subprocess."""
    out = subprocess.run([sys.executable, "-c", _WRAPPER, *command], capture_output=True, text=True, check=True)
    seconds, rss_kb, code = out.stdout.split()
    return float(seconds), int(rss_kb) / 1024, int(code)


def measure(model: Path, runs: int, log=print) -> dict[str, list[tuple[float, float, int]]]:
    bin_dir = Path(sys.executable).parent
    commands = {
        "deploykit validate": [str(bin_dir / "deploykit"), "validate", str(model), "--json"],
        "polygraphy run --onnxrt": [shutil.which("polygraphy", path=str(bin_dir)) or "polygraphy", "run",
                                    str(model), "--onnxrt"],
    }
    results: dict[str, list] = {name: [] for name in commands}
    for i in range(runs):
        for name, command in commands.items():   # interleaved: both tools see the same load
            results[name].append(run(command))
            seconds, rss, code = results[name][-1]
            log(f"run {i + 1}/{runs} {name}: {seconds:.2f} s, {rss:.0f} MB, exit {code}")
    return results


def table(results, params: int, depth: int, loaded_note: str) -> str:
    v, p = results["deploykit validate"], results["polygraphy run --onnxrt"]
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    t_ratio, m_ratio = med(v, 0) / med(p, 0), med(v, 1) / med(p, 1)
    lines = [
        "# deploykit validate vs polygraphy run --onnxrt (ViT-B/16, CPU)", "",
        f"Model: ViT-B/16 in plain torch ({depth} blocks, {params / 1e6:.1f}M parameters), ONNX opset 17, "
        "static 1x3x224x224, weights embedded.", "",
        f"Machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}. "
        + loaded_note, "",
        "Runs alternate between the tools; each is a fresh process (imports included); median of "
        f"{len(v)} runs each.", "",
        "| tool | wall s (median) | runs | peak RSS MB (median) | exit codes |",
        "|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        lines.append(f"| {name} | {med(rows, 0):.2f} | {', '.join(f'{r[0]:.2f}' for r in rows)} | "
                     f"{med(rows, 1):.0f} | {', '.join(str(r[2]) for r in rows)} |")
    verdict = lambda r: "within" if r <= TARGET else "OVER"  # noqa: E731
    lines += ["", f"Ratio validate / polygraphy: time {t_ratio:.2f}x ({verdict(t_ratio)} the {TARGET}x target), "
                  f"memory {m_ratio:.2f}x ({verdict(m_ratio)} the {TARGET}x target)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small", action="store_true", help="a 2-block model, to check the script quickly")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--note", default="", help="a line about the machine's load, written into the table")
    args = parser.parse_args(argv)
    depth = 2 if args.small else 12
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "vit_b16" / "model.onnx"
        model.parent.mkdir()
        t0 = time.perf_counter()
        params = export(model, depth)
        print(f"exported {model.stat().st_size / 2**20:.0f} MiB in {time.perf_counter() - t0:.1f} s")
        results = measure(model, args.runs)
    text = table(results, params, depth, args.note)
    print(text)
    if not args.small:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
