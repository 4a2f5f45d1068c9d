"""Benchmark results and their renderings: JSON-able dict, CSV, a rich table and a latency-vs-batch plot.

A row is one backend at one batch size. Its status is
    ok          outputs matched PyTorch within tolerance, then it was timed
    failed      it broke, or its outputs differed from PyTorch: no timings are reported (a fast wrong answer
                is not a result)
    skipped     not applicable here (TensorRT without a GPU, torch without a PyTorch source), with the reason
    unverified  timed, but nothing could check its outputs (an ONNX file without a deploykit manifest)
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.bench.stats import LatencyStats

STATUSES = ("ok", "failed", "skipped", "unverified")

CSV_FIELDS = (
    "source", "backend", "label", "variant", "device", "batch", "status", "reason", "outputs_checked",
    "checked_against", "max_abs_err", "max_rel_err", "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms",
    "max_ms", "samples", "throughput_per_s", "setup_s", "peak_mem_mib", "mem_kind", "timer", "threads",
)


@dataclass
class BenchRow:
    backend: str
    label: str
    variant: str | None
    device: str
    batch: int
    status: str = "ok"
    reason: str = ""
    outputs_checked: bool = False
    checked_against: str | None = None
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    stats: LatencyStats | None = None
    setup_s: float | None = None
    peak_mem_mib: float | None = None
    mem_kind: str | None = None
    timer: str | None = None

    @property
    def timed(self) -> bool:
        return self.stats is not None and self.status in ("ok", "unverified")

    def as_dict(self) -> dict:
        return {
            "backend": self.backend, "label": self.label, "variant": self.variant, "device": self.device,
            "batch": self.batch, "status": self.status, "reason": self.reason,
            "outputs_checked": self.outputs_checked, "checked_against": self.checked_against,
            "max_abs_err": self.max_abs_err, "max_rel_err": self.max_rel_err,
            "latency_ms": ({k: v for k, v in self.stats.as_dict().items() if k not in ("throughput", "samples")}
                           if self.stats else None),
            "samples": self.stats.samples if self.stats else 0,
            "throughput_per_s": self.stats.throughput if self.stats else None,
            "setup_s": self.setup_s, "peak_mem_mib": self.peak_mem_mib, "mem_kind": self.mem_kind,
            "timer": self.timer,
        }


@dataclass
class BenchResult:
    source: dict
    settings: dict
    environment: dict
    rows: list[BenchRow] = field(default_factory=list)
    load: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No backend failed (skipped and unverified rows do not fail a run)."""
        return not any(r.status == "failed" for r in self.rows)

    def row(self, backend: str, batch: int) -> BenchRow | None:
        return next((r for r in self.rows if r.backend == backend and r.batch == batch), None)

    def as_dict(self) -> dict:
        return {"passed": self.passed, "source": self.source, "settings": self.settings,
                "environment": self.environment, "load": self.load, "rows": [r.as_dict() for r in self.rows]}

    # ------------------------------------------------------------------------------------ CSV
    def csv_text(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            s = r.stats
            writer.writerow({
                "source": self.source.get("name"), "backend": r.backend, "label": r.label, "variant": r.variant,
                "device": r.device, "batch": r.batch, "status": r.status, "reason": r.reason,
                "outputs_checked": r.outputs_checked, "checked_against": r.checked_against,
                "max_abs_err": _g(r.max_abs_err), "max_rel_err": _g(r.max_rel_err),
                "median_ms": _g(s and s.median_ms), "p90_ms": _g(s and s.p90_ms), "p99_ms": _g(s and s.p99_ms),
                "mean_ms": _g(s and s.mean_ms), "min_ms": _g(s and s.min_ms), "max_ms": _g(s and s.max_ms),
                "samples": s.samples if s else 0, "throughput_per_s": _g(s and s.throughput),
                "setup_s": _g(r.setup_s), "peak_mem_mib": _g(r.peak_mem_mib), "mem_kind": r.mem_kind or "",
                "timer": r.timer or "", "threads": self.environment.get("threads"),
            })
        return buf.getvalue()

    def write_csv(self, path: str | Path) -> Path:
        from deploykit.repository import atomic_write_text

        return atomic_write_text(path, self.csv_text())

    # ------------------------------------------------------------------------------------ table
    def rich_table(self):
        """The rows as a rich Table; reasons for failed and skipped rows are in `footer_lines()`."""
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        src = self.source
        env = self.environment
        title = (f"deploykit bench {src.get('kind')} {src.get('name')} "
                 f"(C,H,W={tuple(src.get('input', []))}, {env.get('device')}, threads={env.get('threads')})")
        # A light box and short headers keep all columns readable in an 80-column terminal.
        table = Table(title=title, caption="latency in ms; MiB = peak memory growth; abs err = max vs PyTorch",
                      box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 0, 0, 1))
        for col, justify in (("backend", "left"), ("batch", "right"), ("status", "left"), ("median", "right"),
                             ("p90", "right"), ("p99", "right"), ("items/s", "right"), ("MiB", "right"),
                             ("abs err", "right")):
            table.add_column(col, justify=justify)
        colors = {"ok": "green", "failed": "red", "skipped": "yellow", "unverified": "magenta"}
        for r in self.rows:
            s = r.stats
            table.add_row(
                escape(r.label), str(r.batch), f"[{colors.get(r.status, 'white')}]{r.status}[/]",
                _f(s and s.median_ms), _f(s and s.p90_ms), _f(s and s.p99_ms), _f(s and s.throughput, 0),
                _f(r.peak_mem_mib, 1), f"{r.max_abs_err:.1e}" if r.max_abs_err is not None else "-",
            )
        return table

    def footer_lines(self) -> list[str]:
        """Why rows failed or were skipped (once per backend and reason), the load, what outputs were checked."""
        lines = []
        reasons: dict[tuple[str, str, str], list[int]] = {}
        for r in self.rows:
            if r.status != "ok" and r.reason:
                reasons.setdefault((r.label, r.status, r.reason), []).append(r.batch)
        for (label, status, reason), batches in reasons.items():
            lines.append(f"{label} {status} at batch {', '.join(map(str, batches))}: {reason}")
        if self.load.get("verdict"):
            lines.append(self.load["verdict"])
        checked = {r.checked_against for r in self.rows if r.outputs_checked}
        if checked:
            lines.append(f"outputs checked against {', '.join(sorted(checked))} before timing "
                         f"(tolerance atol {self.settings.get('atol')}, rtol {self.settings.get('rtol')})")
        return lines

    # ------------------------------------------------------------------------------------ plot
    def plot(self, path: str | Path) -> Path:
        """Median latency (bars to p90) vs batch size, one line per timed backend; PNG written atomically."""
        from deploykit.errors import require

        require("matplotlib", extra="bench", purpose="--plot")
        import matplotlib

        matplotlib.use("Agg")  # no display needed, and never a GUI backend from a CLI
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullLocator

        fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
        plotted = 0
        for backend in dict.fromkeys(r.backend for r in self.rows):
            rows = sorted((r for r in self.rows if r.backend == backend and r.timed), key=lambda r: r.batch)
            if not rows:
                continue
            xs = [r.batch for r in rows]
            med = [r.stats.median_ms for r in rows]
            up = [r.stats.p90_ms - r.stats.median_ms for r in rows]
            ax.errorbar(xs, med, yerr=[[0] * len(xs), up], marker="o", capsize=3, label=rows[0].label)
            plotted += 1
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r.batch for r in self.rows})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("batch size")
        ax.set_ylabel("latency per call, ms (median; bar to p90)")
        env = self.environment
        ax.set_title(f"{self.source.get('name')} on {env.get('gpu') or env.get('cpu')}, "
                     f"threads={env.get('threads')}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if plotted:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no backend produced a verified timing", ha="center", transform=ax.transAxes)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            fig.savefig(tmp, format="png")
            tmp.replace(path)
        finally:
            plt.close(fig)
            tmp.unlink(missing_ok=True)
        return path


def _g(value) -> str:
    return "" if value is None or value is False else f"{value:.6g}"


def _f(value, digits: int | None = None) -> str:
    """Fixed digits when given, else about four significant figures (0.0642, 1.124, 84.02, 1353.2)."""
    if value is None or value is False:
        return "-"
    if digits is None:
        digits = 4 if value < 1 else 3 if value < 10 else 2 if value < 100 else 1
    return f"{value:.{digits}f}"
