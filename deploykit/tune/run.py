"""The tune run: export and gate fp32 and INT8 once, verify every candidate, time them interleaved, choose,
write the table (and plot) and install the pick."""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import CheckFailed
from deploykit.tune.candidates import Candidate, candidates
from deploykit.tune.measure import Choice, choose, median_ms, score, speedup, time_interleaved, verify


@dataclass
class TuneResult:
    name: str
    batches: list[int]
    candidates: list[Candidate]
    choice: Choice
    installed: Path | None = None
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict:
        base = next(c for c in self.candidates if c.name == "ort-fp32")
        rows = []
        for c in self.candidates:
            rows.append({"candidate": c.name, "engine": c.engine, "precision": c.precision, "status": c.status,
                         "reason": c.reason, "installable": c.installable,
                         "max_rel_l2": max((m["rel_l2"] for m in c.metrics), default=None),
                         "min_cosine": min((m["cosine"] for m in c.metrics), default=None),
                         "median_ms": {str(b): median_ms(c, b) for b in c.times_ms},
                         "geomean_ms": score(c) if c.times_ms else None,
                         "speedup_vs_ort_fp32": speedup(c, base) if c.times_ms and base.times_ms else None})
        ch = self.choice
        return {"model": self.name, "batches": self.batches, "candidates": rows,
                "pick": ch.pick.name if ch.pick else None, "runner_up": ch.runner_up.name if ch.runner_up else None,
                "why": ch.why, "installed": str(self.installed) if self.installed else None, "notes": self.notes}


def tune(source, *, batches: list[int], out_dir: Path, name: str | None = None, calibration=None, rounds: int = 5,
         iters: int = 10, threads: int | None = None, seed: int = 0, install_pick: bool = True,
         plot: bool = True, log: Callable[[str], None] = lambda _m: None) -> TuneResult:
    """Tune one model (a deploykit.bench.source BenchSource with a PyTorch reference and export config)."""
    from deploykit.export.pipeline import run_export
    from deploykit.export.verify import make_input

    config = source.config.model_copy(update={"precisions": ["fp32", "int8"],
                                              "calibration": str(calibration) if calibration else None})
    work = Path(tempfile.mkdtemp(prefix="deploykit-tune-"))
    try:
        log("export fp32 and INT8 (gated against PyTorch)")
        status = run_export(config, work / "models", force=True)
        fp32 = next((a for a in status.artifacts if a.precision == "fp32"), None)
        if fp32 is None:
            raise CheckFailed(f"the fp32 export failed, so there is nothing to tune: {status.error}")
        int8 = next((a for a in status.artifacts if a.precision == "int8"), None)
        int8_problem = "" if int8 else f"the INT8 graph failed its gate: {status.error}"
        cands = candidates(fp32.onnx, int8.onnx if int8 else None, int8_problem,
                           openvino=_has_openvino())
        inputs = {b: make_input((b, source.channels, source.height, source.width), seed + b) for b in batches}
        expected = {b: source.expected(x) for b, x in inputs.items()}
        try:
            verify(cands, inputs, expected, source.input_name, threads, log)
            log(f"time {sum(c.status == 'ok' for c in cands)} candidates interleaved: {rounds} rounds x {iters} calls")
            time_interleaved(cands, inputs, source.input_name, rounds=rounds, iters=iters, log=log)
        finally:
            for c in cands:
                c.close()
        result = TuneResult(config.model_name, list(batches), cands, choose(cands))
        if calibration is None and int8 is not None:
            from deploykit.precisions.calibration import RANDOM_WARNING

            result.notes.append(RANDOM_WARNING)
        plot_path = work / "tune.png" if plot and importlib.util.find_spec("matplotlib") else None
        if plot_path is not None:
            write_plot(result, plot_path)
        if install_pick and result.choice.pick is not None:
            pick = result.choice.pick
            source_dir = (fp32 if pick.precision != "int8" else int8).onnx.parents[1]
            from deploykit.tune.install import install

            result.installed = install(pick, source_dir, Path(out_dir), name or f"{config.model_name}_cpu",
                                       result.record(), markdown(result), plot_path)
        return result
    finally:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def _has_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def markdown(result: TuneResult) -> str:
    rec = result.record()
    batches = result.batches
    head = ("| candidate | engine | precision | verdict | rel L2 | cosine | "
            + " | ".join(f"batch {b} ms" for b in batches) + " | speed vs ORT fp32 |")
    lines = [f"# deploykit tune: {result.name}", "",
             f"- pick: **{rec['pick']}**" + (f", runner-up {rec['runner_up']}: {rec['why']}" if rec["runner_up"]
                                             else f" ({rec['why']})"),
             "- every candidate was verified against fp32 PyTorch at each batch size before it was timed; "
             "times are median ms of interleaved calls", "", head,
             "|" + "---|" * (7 + len(batches))]
    for r in rec["candidates"]:
        rel = f"{r['max_rel_l2']:.2e}" if r["max_rel_l2"] is not None else "-"
        cos = f"{r['min_cosine']:.6f}" if r["min_cosine"] is not None else "-"
        times = " | ".join(f"{r['median_ms'][str(b)]:.3f}" if str(b) in r["median_ms"] else "-" for b in batches)
        sp = f"{r['speedup_vs_ort_fp32']:.2f}x" if r["speedup_vs_ort_fp32"] else "-"
        verdict = "pass" if r["status"] == "ok" else f"FAIL: {r['reason']}".replace("|", "/")
        if not r["installable"]:
            verdict += " (baseline, not installed)"
        lines.append(f"| {r['candidate']} | {r['engine']} | {r['precision']} | {verdict} | {rel} | {cos} | {times} "
                     f"| {sp} |")
    lines += [""] + [f"- note: {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_plot(result: TuneResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for c in result.candidates:
        if c.times_ms:
            xs = sorted(c.times_ms)
            ax.plot(xs, [median_ms(c, b) for b in xs], marker="o", label=f"{c.name} ({c.precision})")
    ax.set_xlabel("batch size")
    ax.set_ylabel("median latency (ms)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_title(f"deploykit tune: {result.name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
