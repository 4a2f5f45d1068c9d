"""gRPC against HTTP on one `deploykit serve`: the same model, binary tensors, concurrency 1, 4 and 8.

One server process serves both protocols (HTTP on --port, gRPC on --grpc-port), so both reach the same
model, scheduler and ONNX Runtime session; only the wire differs. The clients are Triton's own asyncio
clients (`tritonclient.http.aio` with binary tensors both ways, `tritonclient.grpc.aio` with raw
contents), `c` closed-loop tasks each (send, wait, send again) in this process, on the same cores as the
server. Every (protocol, concurrency) window is interleaved with the others in rounds and the median
round is reported; before timing, each protocol's answer is checked bit for bit against a local ONNX
Runtime session. The server runs with `--batching off` so the comparison is of the protocols alone.

Target (issue 20): gRPC throughput at concurrency 8 >= the HTTP path's on the same model.

    python benchmarks/serve_protocols.py                     # -> benchmarks/results/serve_protocols.md
    python benchmarks/serve_protocols.py --models se --duration 1 --rounds 1 --out /tmp/quick.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.serve_throughput import (_busy_seconds, _own_seconds, _process_seconds,  # noqa: E402
                                         environment, export_models, load_model)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "serve_protocols.md"
READY = "deploykit serve: listening on"
GRPC = "deploykit serve: gRPC listening on"


class Server:
    """`deploykit serve REPO --port 0 --grpc-port 0 FLAGS` in a subprocess."""

    def __init__(self, repo: Path, flags: list[str]):
        cmd = [sys.executable, "-m", "deploykit", "serve", str(repo), "--port", "0", "--grpc-port", "0", *flags]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-proto-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     start_new_session=True)
        self.http = self.grpc = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.http is None:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(GRPC):
                self.grpc = line.split()[5]
            if line.startswith(READY):
                self.http = line.split()[4].removeprefix("http://")
        if self.http is None or self.grpc is None:
            self.close()
            raise SystemExit(f"server did not start:\n{Path(self.log.name).read_text()}")

    def cpu_seconds(self) -> float:
        return _process_seconds(self.proc.pid)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)


class Protocol:
    """One protocol's asyncio client and the request it sends, prepared once."""

    def __init__(self, name: str, address: str, model):
        self.name, self.model = name, model
        if name == "http":
            import tritonclient.http.aio as client_mod

            self.client = client_mod.InferenceServerClient(address, conn_limit=64)
            tensor = client_mod.InferInput("input", list(model.shape), "FP32")
            tensor.set_data_from_numpy(model.x, binary_data=True)
            self.outputs = [client_mod.InferRequestedOutput("output", binary_data=True)]
        else:
            import tritonclient.grpc.aio as client_mod

            self.client = client_mod.InferenceServerClient(address)
            tensor = client_mod.InferInput("input", list(model.shape), "FP32")
            tensor.set_data_from_numpy(model.x)
            self.outputs = [client_mod.InferRequestedOutput("output")]
        self.inputs = [tensor]

    async def infer(self) -> np.ndarray:
        result = await self.client.infer(self.model.name, self.inputs, outputs=self.outputs)
        return result.as_numpy("output")

    async def measure(self, concurrency: int, seconds: float) -> tuple[float, list[float]]:
        """Requests per second and latencies (ms) of `concurrency` closed loops for `seconds`."""
        stop = time.perf_counter() + seconds
        latencies: list[float] = []

        async def loop():
            while (t0 := time.perf_counter()) < stop:
                await self.infer()
                latencies.append((time.perf_counter() - t0) * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return len(latencies) / (time.perf_counter() - start), latencies

    async def close(self):
        await self.client.close()


async def run(args, models, repo: Path) -> tuple[list[dict], float]:
    server = Server(repo, ["--batching", "off"])
    rows = []
    try:
        for model in models:
            protocols = [Protocol("http", server.http, model), Protocol("grpc", server.grpc, model)]
            for p in protocols:
                for _ in range(3):
                    y = await p.infer()
                    if not np.array_equal(y, model.expected):
                        raise SystemExit(f"{p.name} answered {model.name} differently from a local session")
                await p.measure(max(args.concurrency), min(1.0, args.duration))  # warm-up
            cells = {(p.name, c): [] for p in protocols for c in args.concurrency}
            lats = {key: [] for key in cells}
            for round_ in range(args.rounds):
                for c in args.concurrency:
                    order = protocols if round_ % 2 == 0 else protocols[::-1]  # alternate who goes first
                    for p in order:
                        rate, lat = await p.measure(c, args.duration)
                        cells[(p.name, c)].append(rate)
                        lats[(p.name, c)] += lat
                        print(f"{model.name} round {round_ + 1} c={c} {p.name}: {rate:.0f} req/s", flush=True)
            for (name, c), rates in cells.items():
                rows.append({"model": model.name, "shape": model.shape, "protocol": name, "concurrency": c,
                             "rate": statistics.median(rates), "rates": rates,
                             "p50": float(np.percentile(lats[(name, c)], 50)),
                             "p99": float(np.percentile(lats[(name, c)], 99))})
            for p in protocols:
                await p.close()
        return rows, server.cpu_seconds()
    finally:
        server.close()


def render(rows, env, args, others_cores) -> list[str]:
    libs = ", ".join(f"{k} {v}" for k, v in env["libs"].items())
    lines = [
        "# gRPC vs HTTP on one `deploykit serve`",
        "",
        f"Generated by `python {' '.join(shlex.quote(a) for a in ['benchmarks/serve_protocols.py', *sys.argv[1:]])}`.",
        "",
        f"- Date (UTC): {env['date_utc']}",
        f"- Machine: {env['cpu']}, {env['cores']} usable cores; clients and server share them",
        f"- Python {env['python']}; {libs}",
        f"- Load average (1, 5, 15 min) at start: {env['load_start']}, at end: {env.get('load_end')}",
    ]
    if others_cores is not None:
        lines.append(f"- Background load: other processes kept {others_cores:.2f} of {env['cores']} cores busy on "
                     "average while this ran" + (" (a shared, busy machine: absolute numbers are disturbed; the "
                                                  "interleaved ratios are the comparable part)"
                                                  if others_cores > 0.25 else ""))
    lines += [
        f"- One server, `--batching off`; batch-1 fp32 requests, binary tensors (HTTP binary extension, gRPC raw "
        f"contents); Triton's asyncio clients; {args.rounds} interleaved rounds of {args.duration:g} s per cell, "
        "median reported.",
        "",
        "| model | input | concurrency | HTTP req/s | gRPC req/s | gRPC / HTTP | HTTP p50/p99 ms | gRPC p50/p99 ms |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    for name in dict.fromkeys(r["model"] for r in rows):
        for c in args.concurrency:
            h = next(r for r in rows if r["model"] == name and r["protocol"] == "http" and r["concurrency"] == c)
            g = next(r for r in rows if r["model"] == name and r["protocol"] == "grpc" and r["concurrency"] == c)
            ratio = g["rate"] / h["rate"]
            lines.append(f"| {name} | {'x'.join(map(str, h['shape']))} | {c} | {h['rate']:.0f} | {g['rate']:.0f} | "
                         f"{ratio:.2f}x | {h['p50']:.2f} / {h['p99']:.2f} | {g['p50']:.2f} / {g['p99']:.2f} |")
            if c == 8:
                verdicts.append(f"- {name}: gRPC at concurrency 8 = {ratio:.2f}x HTTP (target >= 1x): "
                                f"**{'met' if ratio >= 1 else 'MISSED'}**")
    return lines + ["", "## Target", "", *verdicts, ""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="se,sam")
    parser.add_argument("--repo", type=Path, help="use (and fill) this model repository instead of a temporary one")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per timed window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    env = environment()
    env["libs"].update({k: v for k, v in (("grpcio", _version("grpcio")), ("protobuf", _version("protobuf"))) if v})
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    tmp = None
    repo = args.repo
    if repo is None:
        tmp = tempfile.TemporaryDirectory(prefix="serve-proto-")
        repo = Path(tmp.name)
    print(f"exporting {', '.join(names)} into {repo} ...", flush=True)
    export_models(names, repo)
    models = [load_model(repo, n, seed=i) for i, n in enumerate(names)]
    busy0, own0, wall0 = _busy_seconds(), _own_seconds(), time.perf_counter()
    rows, server_cpu = asyncio.run(run(args, models, repo))
    wall = time.perf_counter() - wall0
    busy1 = _busy_seconds()
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (_own_seconds() - own0) - server_cpu) / wall
    env["load_end"] = [round(v, 2) for v in os.getloadavg()]
    lines = render(rows, env, args, others)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {args.out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


def _version(dist: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
