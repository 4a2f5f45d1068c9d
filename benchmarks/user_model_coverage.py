"""Coverage of user models: make_export_safe, torch.onnx export and ONNX Runtime parity (fp32, fp16), per model.

The corpus is tests/user_models (the models the test suite drives through the CLI) plus this benchmark's own
extra models (benchmarks/user_model_corpus.py): common vision architectures with attention blocks, written in
the style of their published code. For each model:

1. build it, give it seeded non-trivial weights (`randomize_for_verification`, seed 0), eval mode;
2. `make_export_safe(model, example_inputs)`: recognised blocks swapped after proof, look-alikes kept;
3. export the converted model with the dynamo exporter (the torchscript one when dynamo fails), every
   dynamic dimension of its input specs dynamic in the graph, then simplify it with onnxsim as the export
   pipeline does (kept unsimplified when onnxsim fails);
4. fp32: ONNX Runtime CPU, both graphs, against the *original* PyTorch model at the min, opt and max of every
   dynamic dimension, pass when max |ort - torch| / max |torch| <= 1e-4 on every output;
5. fp16: the simplified graph converted by deploykit.export.fp16 (fp16 weights and activations, fp32 I/O), at
   opt, pass when the same relative error is <= 1e-2 on every output.

A model passes when 2-5 all pass. Target (issue 16): at least 90 % of the corpus.

    python benchmarks/user_model_coverage.py            # -> benchmarks/results/user_model_coverage.md
    python benchmarks/user_model_coverage.py --only se_resnet,mobilenetv3
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402 - puts the repository on sys.path

FP32_TOL, FP16_TOL, TARGET = 1e-4, 1e-2, 0.90


@dataclass
class Row:
    name: str
    corpus: str
    swapped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    exporter: str = "-"
    simplified: bool = False
    fp32: float | None = None
    fp16: float | None = None
    passed: bool = False
    expected_swaps: bool = True
    error: str = ""
    seconds: float = 0.0


def entries():
    """(name, corpus, build, input specs, expected swapped, expected kept) for every model of both corpora."""
    import user_model_corpus

    from tests.user_models import CORPUS, InputSpec

    out = [(e.name, "tests/user_models", e.build, e.inputs, e.swapped, e.kept) for e in CORPUS]
    for name, (factory, chw, hw, swapped, kept) in user_model_corpus.EXTRA.items():
        dynamic = {0: (1, 2, 4)}
        if hw is not None:
            dynamic.update({2: (hw[0], chw[1], hw[1]), 3: (hw[0], chw[2], hw[1])})
        out.append((name, "benchmark", factory, (InputSpec("images", (2, *chw), "float32", dynamic),), swapped, kept))
    return out


def _sizes(specs, which: int) -> dict:
    return {s.name: tuple(s.dynamic[d][which] if d in s.dynamic else n for d, n in enumerate(s.shape)) for s in specs}


def _inputs(specs, sizes, seed):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return tuple(s.example(gen, sizes[s.name]) for s in specs)


def _leaves(out):
    if isinstance(out, dict):
        return [leaf for k in out for leaf in _leaves(out[k])]
    if isinstance(out, (tuple, list)):
        return [leaf for o in out for leaf in _leaves(o)]
    return [out]


def _rel(expected, got) -> float:
    import numpy as np

    expected, got = np.asarray(expected, np.float64), np.asarray(got, np.float64)
    if expected.shape != got.shape or not np.isfinite(got).all():
        return float("inf")
    return float(np.abs(expected - got).max() / max(np.abs(expected).max(), 1e-12))


def measure(name, corpus, build, specs, swapped, kept, workdir: Path) -> Row:
    import onnx
    import onnxruntime as ort
    import torch

    from deploykit.blocks.init import randomize_for_verification
    from deploykit.export.exporters import export_onnx
    from deploykit.export.fp16 import convert_to_fp16
    from deploykit.export.simplify import simplify
    from deploykit.networks.convert import make_export_safe

    row = Row(name, corpus)
    start = time.perf_counter()
    try:
        torch.manual_seed(0)
        model = randomize_for_verification(build(), seed=0).eval()
        opt = _sizes(specs, 1)
        example = _inputs(specs, opt, seed=1)
        converted, report = make_export_safe(model, example)
        row.swapped = [c.block for c in report.replaced]
        row.kept = [c.block for c in report.not_replaced]
        row.expected_swaps = sorted(row.swapped) == sorted(swapped) and sorted(row.kept) == sorted(kept)
        if not report:
            raise RuntimeError(f"make_export_safe's model check failed: {report.summary()}")
        names = [s.name for s in specs]
        with torch.no_grad():
            n_out = len(_leaves(model(*example)))
        outputs = [f"output_{i}" for i in range(n_out)]
        axes_names = {0: "batch", 2: "height", 3: "width"}
        dynamic_axes = {s.name: {d: (axes_names.get(d, f"d{d}"), lo, hi) for d, (lo, _, hi) in s.dynamic.items()}
                        for s in specs}
        path = workdir / f"{name}.onnx"
        errors = []
        for exporter in ("dynamo", "torchscript"):
            try:
                export_onnx(converted, example, path, exporter=exporter, input_names=names, output_names=outputs,
                            dynamic_axes=dynamic_axes)
                row.exporter = exporter
                break
            except Exception as exc:  # noqa: BLE001 - record and try the other exporter
                errors.append(f"{exporter}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
        else:
            raise RuntimeError("; ".join(errors))
        exported = onnx.load(str(path))
        simplified = simplify(exported)
        row.simplified = simplified.ok
        graphs = [exported] + ([simplified.model] if simplified.ok else [])
        worst, where = 0.0, ""
        for graph in graphs:   # the exporter's graph and the simplified one that ships, as the pipeline checks
            session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
            for which in (0, 1, 2):
                xs = _inputs(specs, _sizes(specs, which), seed=10 + which)
                with torch.no_grad():
                    expected = [t.numpy() for t in _leaves(model(*xs))]
                got = session.run(None, {n: x.numpy() for n, x in zip(names, xs)})
                err = max(_rel(e, g) for e, g in zip(expected, got))
                if err > worst:
                    worst, where = err, f"{('min', 'opt', 'max')[which]} size {list(_sizes(specs, which).values())}"
        row.fp32 = worst
        fp16 = ort.InferenceSession(convert_to_fp16(graphs[-1]).SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        xs = _inputs(specs, opt, seed=20)
        with torch.no_grad():
            expected = [t.numpy() for t in _leaves(model(*xs))]
        got = fp16.run(None, {n: x.numpy() for n, x in zip(names, xs)})
        row.fp16 = max(_rel(e, g) for e, g in zip(expected, got))
        row.passed = row.fp32 <= FP32_TOL and row.fp16 <= FP16_TOL
        if not row.passed:
            row.error = (f"fp32 parity beyond tolerance, worst at the {where}" if row.fp32 > FP32_TOL
                         else "fp16 parity beyond tolerance")
    except Exception as exc:  # noqa: BLE001 - one model's failure is a row, not the end of the run
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        traceback.print_exc(file=sys.stderr)
    row.seconds = time.perf_counter() - start
    return row


def render(rows: list[Row], env, load_note) -> list[str]:
    passed = sum(r.passed for r in rows)
    share = passed / len(rows) if rows else 0.0
    lines = common.header("User-model coverage: make_export_safe -> ONNX -> ONNX Runtime parity", env, load_note,
                          notes=[
        "Corpus: tests/user_models (the test suite's user models) and benchmarks/user_model_corpus.py (this "
        "benchmark's extra models); weights `randomize_for_verification(seed 0)`, eval mode",
        f"fp32: ORT CPU vs the original PyTorch model at min, opt and max of every dynamic dimension, max |diff| / "
        f"max |torch| <= {FP32_TOL:g} on every output; fp16: deploykit's fp16 conversion at opt, <= {FP16_TOL:g}",
        "swapped / kept: the blocks make_export_safe replaced after proof / recognised but kept (with a reason in "
        "its report); 'as expected' compares them with the corpus' declared expectation",
        "Seconds include the export and are disturbed by other work on the machine",
    ])
    table = [[r.name, r.corpus, ", ".join(r.swapped) or "-", ", ".join(r.kept) or "-",
              "yes" if r.expected_swaps else "**no**", r.exporter + ("" if r.simplified else " (not simplified)"), common.fmt_err(r.fp32), common.fmt_err(r.fp16),
              f"{r.seconds:.1f}", "pass" if r.passed else f"**FAIL**: {r.error}"] for r in rows]
    lines += common.md_table(["model", "corpus", "swapped", "kept", "as expected", "exporter", "fp32 rel err",
                              "fp16 rel err", "s", "result"], table, align="llllllrrrl")
    lines += ["", "## Target (issue 16)", "",
              f"- {passed} of {len(rows)} models export and verify in fp32 and fp16: {100 * share:.0f} % "
              f"(target >= {100 * TARGET:.0f} %) -> {common.verdict(share >= TARGET if rows else None)}"]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: the whole corpus)")
    parser.add_argument("--out", help="markdown file (default benchmarks/results/user_model_coverage.md)")
    args = parser.parse_args(argv)

    from deploykit.bench.env import LoadMonitor, environment, load_average

    todo = entries()
    if args.only:
        wanted = {n.strip() for n in args.only.split(",") if n.strip()}
        unknown = wanted - {e[0] for e in todo}
        if unknown:
            parser.error(f"unknown model(s) {sorted(unknown)}; known: {', '.join(e[0] for e in todo)}")
        todo = [e for e in todo if e[0] in wanted]
    env = environment("cpu", None)
    monitor = LoadMonitor()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in todo:
            monitor.start()
            row = measure(*entry, Path(tmp))
            monitor.stop()
            print(f"{row.name}: {'pass' if row.passed else 'FAIL ' + row.error} ({row.seconds:.1f} s)",
                  file=sys.stderr, flush=True)
            rows.append(row)
    env["load_average_end"] = load_average()
    note = monitor.verdict(env["cores"])
    out = Path(args.out) if args.out else common.RESULTS / "user_model_coverage.md"
    common.write_markdown(out, render(rows, env, note))
    print(out)
    return 0 if rows and all(r.passed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
