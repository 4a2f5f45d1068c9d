"""gRPC against HTTP on one `deploykit serve`: the same model, binary tensors, concurrency 1, 4 and 8.

One server process serves both protocols (HTTP on --port, gRPC on --grpc-port), so both reach the same
model, scheduler and ONNX Runtime session; only the wire differs. The clients are Triton's own, with
binary tensors both ways (HTTP binary extension, gRPC raw contents), `c` closed loops each (send, wait,
send again) in this process, on the same cores as the server, in two families:

- asyncio: `tritonclient.http.aio` and `tritonclient.grpc.aio`, `c` tasks on one event loop; gRPC both as
  unary ModelInfer calls and as ModelStreamInfer streams (one per loop, perf_analyzer's `--streaming`);
- threads: the blocking `tritonclient.http` and `tritonclient.grpc` clients, one per thread, `c` threads.

Each gRPC pairing is compared with HTTP in the same client family. Every (protocol, clients,
concurrency) window is interleaved with the others in rounds and the median round is reported; before
timing, each protocol's answer is checked bit for bit against a local ONNX Runtime session. The server
runs with `--batching off` so the comparison is of the protocols alone.

The client process keeps freed buffers in glibc's heap as `deploykit serve` does
(`deploykit.serve.server.keep_freed_buffers`): otherwise every 800 KB message the gRPC client builds or
receives is a fresh mmap (~60 page faults a request at concurrency 8, ~0.2 ms of client CPU on the cores
the server shares), a cost of glibc's defaults in this process, not of either protocol's server. Both
protocols' clients live in this one process, so the setting applies to both alike. The table gives the
server's and the client's CPU per request separately.

Target (issue 20): gRPC throughput at concurrency 8 >= the HTTP path's on the same model.

PyTriton (optional benchmark dependency, run by hand, in no extra): where an interpreter with
`nvidia-pytriton` and `onnxruntime` is found (`--pytriton-python`, default this one), the same exported ONNX
file is also served by PyTriton in a child process: Triton's own HTTP and gRPC frontends on 127.0.0.1 ports,
PyTriton's default dynamic batcher, and a Python infer function running one ONNX Runtime session with
deploykit serve's thread settings (default intra-op threads, spinning off). Its windows are alternated with
deploykit's under the same client load, after checking its outputs equal the local session's bit for bit.
nvidia-pytriton 0.7.0 requires numpy<2 (its stub's tensors come back empty under numpy 2), so it usually
lives in a venv of its own:

    python3 -m venv /tmp/pyt && /tmp/pyt/bin/pip install nvidia-pytriton==0.7.0 numpy==1.26.4 onnxruntime
    python benchmarks/serve_protocols.py --pytriton-python /tmp/pyt/bin/python

Without it the script says so in one line and measures deploykit alone.

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
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import closed_loop, closed_loop_async  # noqa: E402
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


PYTRITON_READY = "pytriton: listening"

PYTRITON_CHILD = r"""
import sys, numpy as np, onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor, DynamicBatcher
from pytriton.triton import Triton, TritonConfig
name, onnx, http, grpc, metrics = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
options = ort.SessionOptions()
options.log_severity_level = 3
options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as deploykit serve
session = ort.InferenceSession(onnx, sess_options=options, providers=["CPUExecutionProvider"])
shape = session.get_inputs()[0].shape[1:]

@batch
def infer(input):
    return {"output": session.run(["output"], {"input": input})[0]}

config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                      metrics_port=metrics, allow_metrics=False, log_verbose=0)
with Triton(config=config) as triton:
    triton.bind(model_name=name, infer_func=infer, inputs=[Tensor(name="input", dtype=np.float32, shape=shape)],
                outputs=[Tensor(name="output", dtype=np.float32, shape=(-1,) * len(shape))],
                config=ModelConfig(max_batch_size=8, batcher=DynamicBatcher()), strict=False)
    triton.run()
    print(f"pytriton: listening 127.0.0.1:{http} 127.0.0.1:{grpc}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytriton_missing(python: str) -> str | None:
    """Why `python` cannot run PyTriton (None: it can)."""
    probe = ("import numpy, onnxruntime, pytriton, importlib.metadata as m; "
             "print(m.version('nvidia-pytriton'), numpy.__version__)")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if done.returncode != 0:
        return f"{python} cannot import pytriton/onnxruntime"
    version, numpy_version = done.stdout.split()
    if int(numpy_version.split(".")[0]) >= 2:
        return f"nvidia-pytriton {version} under {python} has numpy {numpy_version} (it needs numpy<2)"
    return None


class PyTritonServer:
    """PyTriton serving one ONNX file in a child process (Triton's HTTP and gRPC frontends)."""

    def __init__(self, python: str, model):
        import sysconfig

        env = dict(os.environ)
        # Triton's Python stub links libpython3.X; point it at this Python's own (not the distribution's).
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        ports = [str(_free_port()) for _ in range(3)]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="pytriton-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([python, "-c", PYTRITON_CHILD, model.name, str(model.onnx), *ports],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     env=env, start_new_session=True)
        self.http = self.grpc = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith(PYTRITON_READY):
                self.http, self.grpc = line.split()[2:4]
                break
        if self.http is None:
            self.close()
            raise SystemExit(f"PyTriton did not start:\n{Path(self.log.name).read_text()[-3000:]}")

    def cpu_seconds(self) -> float:
        """CPU of the child and everything under it (tritonserver, its Python stub)."""
        total, todo = 0.0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            total += _process_seconds(pid)
            try:
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                pass
        return total

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        os.unlink(self.log.name)


class Protocol:
    """One way of loading a server: a protocol, a client family and the request, prepared once.

    `name` is the protocol and mode: "http", "grpc" (unary ModelInfer calls) or "grpc-stream"
    (ModelStreamInfer: each closed loop keeps one bidirectional stream open and sends its next request
    when the last answer arrives, as perf_analyzer's `--streaming` does). `clients` is "asyncio" (Triton's
    asyncio clients, all loops as tasks of this process's event loop) or "threads" (Triton's blocking
    clients, one client per thread, as a threaded Python application would use them).
    """

    def __init__(self, name: str, address: str, model, server: str = "deploykit", clients: str = "asyncio"):
        self.name, self.address, self.model, self.server, self.clients = name, address, model, server, clients
        if clients == "asyncio":
            self.client, self.inputs, self.outputs = self._prepare("aio")

    def _prepare(self, flavour: str):
        """A client of this protocol (flavour "aio" or "sync") and the request's inputs and outputs."""
        import importlib

        base = "tritonclient.http" if self.name == "http" else "tritonclient.grpc"
        module = importlib.import_module(base + (".aio" if flavour == "aio" else ""))
        tensor = module.InferInput("input", list(self.model.shape), "FP32")
        if self.name == "http":
            limits = {"conn_limit": 64} if flavour == "aio" else {}
            client = module.InferenceServerClient(self.address, **limits)
            tensor.set_data_from_numpy(self.model.x, binary_data=True)
            outputs = [module.InferRequestedOutput("output", binary_data=True)]
        else:
            client = module.InferenceServerClient(self.address)
            tensor.set_data_from_numpy(self.model.x)
            outputs = [module.InferRequestedOutput("output")]
        return client, [tensor], outputs

    @property
    def label(self) -> str:
        return f"{self.server} {self.name} ({self.clients})"

    async def infer(self) -> np.ndarray:
        if self.clients == "threads":
            client, inputs, outputs = self._prepare("sync")
            try:
                return client.infer(self.model.name, inputs, outputs=outputs).as_numpy("output")
            finally:
                client.close()
        if self.name == "grpc-stream":
            async with Stream(self) as stream:
                return await stream.infer()
        result = await self.client.infer(self.model.name, self.inputs, outputs=self.outputs)
        return result.as_numpy("output")

    async def measure(self, concurrency: int, seconds: float) -> tuple[float, list[float]]:
        """Requests per second and latencies (ms) of `concurrency` closed loops for `seconds`."""
        if self.clients == "threads":
            return await asyncio.to_thread(self._measure_threads, concurrency, seconds)
        stop = time.perf_counter() + seconds
        latencies: list[float] = []

        async def loop():
            if self.name != "grpc-stream":
                return await closed_loop_async(self.infer, stop, latencies)
            async with Stream(self) as stream:
                await closed_loop_async(stream.infer, stop, latencies)

        start = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return len(latencies) / (time.perf_counter() - start), latencies

    def _measure_threads(self, concurrency: int, seconds: float) -> tuple[float, list[float]]:
        """`concurrency` threads, each with its own blocking client (made and warmed before the clock starts)."""
        latencies: list[float] = []
        gate = threading.Barrier(concurrency + 1)
        window = {}
        errors: list[BaseException] = []

        def loop():
            client, inputs, outputs = self._prepare("sync")
            try:
                client.infer(self.model.name, inputs, outputs=outputs)
                gate.wait()
                gate.wait()   # the window's stop time is set between the two
                closed_loop(lambda: client.infer(self.model.name, inputs, outputs=outputs).as_numpy("output"),
                            window["stop"], latencies)   # list.append is atomic: the threads share it
            except BaseException as exc:  # noqa: BLE001 - re-raised in the measuring thread
                errors.append(exc)
                gate.abort()
            finally:
                client.close()

        threads = [threading.Thread(target=loop) for _ in range(concurrency)]
        for t in threads:
            t.start()
        try:
            gate.wait()
            start = time.perf_counter()
            window["stop"] = start + seconds
            gate.wait()
        except threading.BrokenBarrierError:
            pass
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return len(latencies) / (time.perf_counter() - start), latencies

    async def close(self):
        if self.clients == "asyncio":
            await self.client.close()


class Stream:
    """One open ModelStreamInfer stream of Triton's asyncio gRPC client, one request in flight at a time."""

    def __init__(self, protocol: Protocol):
        self.protocol = protocol
        self.requests: asyncio.Queue = asyncio.Queue()

    async def __aenter__(self):
        async def requests():
            while (request := await self.requests.get()) is not None:
                yield request

        self.answers = self.protocol.client.stream_infer(requests()).__aiter__()
        return self

    async def __aexit__(self, *exc):
        await self.requests.put(None)
        async for _ in self.answers:  # drain to the end of the stream
            pass

    async def infer(self) -> np.ndarray:
        p = self.protocol
        await self.requests.put({"model_name": p.model.name, "inputs": p.inputs, "outputs": p.outputs})
        result, error = await self.answers.__anext__()
        if error is not None:
            raise error
        return result.as_numpy("output")


async def run(args, models, repo: Path) -> tuple[list[dict], float]:
    server = Server(repo, ["--batching", "off"])
    rows, other_cpu = [], 0.0
    try:
        for model in models:
            protocols = [Protocol("http", server.http, model), Protocol("grpc", server.grpc, model),
                         Protocol("grpc-stream", server.grpc, model),
                         Protocol("http", server.http, model, clients="threads"),
                         Protocol("grpc", server.grpc, model, clients="threads")]
            pytriton = PyTritonServer(args.pytriton_python, model) if args.pytriton else None
            if pytriton is not None:
                protocols += [Protocol("http", pytriton.http, model, "pytriton"),
                              Protocol("grpc", pytriton.grpc, model, "pytriton")]
            for p in protocols:
                for _ in range(3):
                    y = await p.infer()
                    if not np.array_equal(y, model.expected):
                        raise SystemExit(f"{p.label} answered {model.name} differently from a local session")
                await p.measure(max(args.concurrency), min(1.0, args.duration))  # warm-up
            cells = {(p.server, p.name, p.clients, c): [] for p in protocols for c in args.concurrency}
            lats = {key: [] for key in cells}
            cpu = {key: [] for key in cells}   # (server, client) CPU ms per request of each window
            for round_ in range(args.rounds):
                for c in args.concurrency:
                    order = protocols if round_ % 2 == 0 else protocols[::-1]  # alternate who goes first
                    for p in order:
                        serving = server if p.server == "deploykit" else pytriton
                        s0, c0 = serving.cpu_seconds(), _own_seconds()
                        rate, lat = await p.measure(c, args.duration)
                        s1, c1 = serving.cpu_seconds(), _own_seconds()
                        key = (p.server, p.name, p.clients, c)
                        cells[key].append(rate)
                        lats[key] += lat
                        cpu[key].append(((s1 - s0) * 1e3 / max(1, len(lat)), (c1 - c0) * 1e3 / max(1, len(lat))))
                        print(f"{model.name} round {round_ + 1} c={c} {p.label}: {rate:.0f} req/s", flush=True)
            for key, rates in cells.items():
                who, name, clients, c = key
                rows.append({"model": model.name, "shape": model.shape, "server": who, "protocol": name,
                             "clients": clients, "concurrency": c, "rate": statistics.median(rates), "rates": rates,
                             "p50": float(np.percentile(lats[key], 50)), "p99": float(np.percentile(lats[key], 99)),
                             "server_ms": statistics.median(x[0] for x in cpu[key]),
                             "client_ms": statistics.median(x[1] for x in cpu[key])})
            for p in protocols:
                await p.close()
            if pytriton is not None:
                other_cpu += pytriton.cpu_seconds()
                pytriton.close()
        return rows, server.cpu_seconds() + other_cpu
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
        f"contents); Triton's asyncio and blocking clients; {args.rounds} interleaved rounds of {args.duration:g} s "
        "per cell, median reported.",
        "- Client process: glibc keeps freed buffers (mmap threshold 32 MiB, as `deploykit serve` sets it): "
        + ("applied" if env.get("client_malloc") else "NOT applied (not glibc, or MALLOC_* set)") + ".",
        "- CPU ms/request: utime + stime over each window divided by the requests it answered, of the server "
        "process (`/proc/<pid>/stat`, all its threads) and of this client process, median of the rounds. The "
        "server's is the attributable cost of a protocol; the client's shares the same 2 cores, so it caps "
        "req/s as well.",
        "",
        "Three pairings, each against HTTP with the same client family: Triton's asyncio clients with unary gRPC "
        "calls; the same with ModelStreamInfer, one stream per closed loop (perf_analyzer's `--streaming`); and "
        "Triton's blocking clients, one per thread.",
        "",
        "| model | input | concurrency | clients | gRPC mode | HTTP req/s | gRPC req/s | gRPC / HTTP | "
        "server CPU ms/req HTTP / gRPC | client CPU ms/req HTTP / gRPC | HTTP p50/p99 ms | gRPC p50/p99 ms |",
        "| :--- | :--- | ---: | :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    verdicts = []
    pairings = [("asyncio", "grpc", "unary"), ("asyncio", "grpc-stream", "streaming"), ("threads", "grpc", "unary")]
    for name in dict.fromkeys(r["model"] for r in rows):
        for c in args.concurrency:
            for clients, grpc_name, mode in pairings:
                h = _row(rows, name, "deploykit", "http", c, clients)
                g = _row(rows, name, "deploykit", grpc_name, c, clients)
                ratio = g["rate"] / h["rate"]
                lines.append(f"| {name} | {'x'.join(map(str, h['shape']))} | {c} | {clients} | {mode} | "
                             f"{h['rate']:.0f} | {g['rate']:.0f} | {ratio:.2f}x | "
                             f"{h['server_ms']:.2f} / {g['server_ms']:.2f} | "
                             f"{h['client_ms']:.2f} / {g['client_ms']:.2f} | "
                             f"{h['p50']:.2f} / {h['p99']:.2f} | {g['p50']:.2f} / {g['p99']:.2f} |")
                if c == 8:
                    verdicts.append(f"- {name}, {clients} clients, gRPC {mode}: {ratio:.2f}x HTTP at concurrency 8 "
                                    f"(target >= 1x): **{'met' if ratio >= 1 else 'MISSED'}**")
    lines += ["", "## Target", "", *verdicts, ""]
    if not any(r["server"] == "pytriton" for r in rows):
        return lines + [f"PyTriton was not compared: {args.pytriton_skipped}.", ""]
    lines += [
        "## deploykit serve against PyTriton",
        "",
        f"PyTriton {env.get('pytriton', '')}: Triton's HTTP and gRPC frontends and its default dynamic batcher "
        "(max_batch_size 8), the same ONNX file in a Python infer function (one ONNX Runtime session, spinning off); "
        "deploykit `--batching off`. Windows of the four servers x protocols alternated within each round; the "
        "same clients and requests; outputs equal bit for bit before timing.",
        "",
        "| model | protocol | concurrency | deploykit req/s | PyTriton req/s | deploykit / PyTriton | "
        "deploykit p50/p99 ms | PyTriton p50/p99 ms |",
        "| :--- | :--- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in dict.fromkeys(r["model"] for r in rows):
        for proto in ("http", "grpc"):
            for c in args.concurrency:
                d, t = _row(rows, name, "deploykit", proto, c), _row(rows, name, "pytriton", proto, c)
                lines.append(f"| {name} | {'HTTP' if proto == 'http' else 'gRPC'} | {c} | {d['rate']:.0f} | "
                             f"{t['rate']:.0f} | {d['rate'] / t['rate']:.2f}x | {d['p50']:.2f} / {d['p99']:.2f} | "
                             f"{t['p50']:.2f} / {t['p99']:.2f} |")
    return lines + [""]


def _row(rows, model: str, server: str, protocol: str, c: int, clients: str = "asyncio") -> dict:
    return next(r for r in rows if r["model"] == model and r["server"] == server and r["protocol"] == protocol
                and r["concurrency"] == c and r["clients"] == clients)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="se,sam")
    parser.add_argument("--repo", type=Path, help="use (and fill) this model repository instead of a temporary one")
    parser.add_argument("--concurrency", default="1,4,8")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per timed window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--pytriton-python", default=sys.executable,
                        help="an interpreter with nvidia-pytriton, onnxruntime and numpy<2 (default: this one)")
    parser.add_argument("--no-pytriton", action="store_true", help="measure deploykit alone")
    args = parser.parse_args(argv)
    args.pytriton_skipped = "--no-pytriton" if args.no_pytriton else pytriton_missing(args.pytriton_python)
    args.pytriton = args.pytriton_skipped is None
    if not args.pytriton:
        print(f"PyTriton not compared: {args.pytriton_skipped}; measuring deploykit alone", flush=True)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]

    from deploykit.serve.server import keep_freed_buffers

    client_malloc = keep_freed_buffers()
    env = environment()
    env["libs"].update({k: v for k, v in (("grpcio", _version("grpcio")), ("protobuf", _version("protobuf"))) if v})
    if args.pytriton:
        env["pytriton"] = subprocess.run([args.pytriton_python, "-c", "import importlib.metadata as m; "
                                          "print(m.version('nvidia-pytriton'))"], capture_output=True,
                                         text=True).stdout.strip()
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
    env["client_malloc"] = client_malloc
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
