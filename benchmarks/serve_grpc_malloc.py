"""Server CPU and page faults per request with and without `keep_freed_buffers`, interleaved, one run.

Server A is `deploykit serve` as shipped; server B gets `MALLOC_PERTURB_=0` (glibc's default, a no-op),
which makes `keep_freed_buffers` stand aside, i.e. the old allocator behaviour. Both serve the same
repository with `--batching off`; the HTTP and gRPC clients of both take turns in every round. Prints
median server CPU ms/request, client CPU ms/request, req/s and the server's minor faults per request.

    python benchmarks/serve_protocols.py --models se --repo /tmp/r --rounds 1 --duration 0.2  # exports se
    python benchmarks/serve_grpc_malloc.py --repo /tmp/r --model se --c 1,8
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.serve_protocols import Protocol, Server  # noqa: E402
from benchmarks.serve_throughput import _own_seconds, load_model  # noqa: E402


def minor_faults(pid: int) -> int:
    """minflt of a process (/proc/<pid>/stat field 10)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


async def requests(p: Protocol, n: int, concurrency: int) -> int:
    """`n` requests in all from `concurrency` closed loops (a count, so both servers answer the same work)."""
    done = 0

    async def loop():
        nonlocal done
        while done < n:
            done += 1
            await p.infer()

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done


async def run(args) -> None:
    model = load_model(args.repo, args.model, 0)
    shipped = Server(args.repo, ["--batching", "off"])
    os.environ["MALLOC_PERTURB_"] = "0"   # the child inherits it: keep_freed_buffers stands aside
    try:
        old = Server(args.repo, ["--batching", "off"])
    finally:
        del os.environ["MALLOC_PERTURB_"]
    try:
        clients = [(label, srv, Protocol(proto, srv.http if proto == "http" else srv.grpc, model))
                   for label, srv in (("A", shipped), ("B", old)) for proto in ("http", "grpc")]
        for _, _, p in clients:
            assert np.array_equal(await p.infer(), model.expected)
            await p.measure(8, 1.0)
        samples: dict[tuple, list] = {}
        for r in range(args.rounds):
            for c in [int(x) for x in args.c.split(",")]:
                for label, srv, p in (clients if r % 2 == 0 else clients[::-1]):
                    pid = srv.proc.pid
                    f0, s0, c0, t0 = minor_faults(pid), srv.cpu_seconds(), _own_seconds(), time.perf_counter()
                    n = await requests(p, args.n, c)
                    f1, s1, c1, t1 = minor_faults(pid), srv.cpu_seconds(), _own_seconds(), time.perf_counter()
                    samples.setdefault((label, p.name, c), []).append(
                        ((s1 - s0) / n * 1e3, (c1 - c0) / n * 1e3, n / (t1 - t0), (f1 - f0) / n))
        for key, values in sorted(samples.items()):
            server_ms, client_ms, rate, faults = (float(np.median([v[i] for v in values])) for i in range(4))
            print(f"{key[0]} {key[1]} c={key[2]}: server {server_ms:.3f} ms/req client {client_ms:.3f} ms/req "
                  f"{rate:.0f} req/s faults/req {faults:.0f}", flush=True)
        for _, _, p in clients:
            await p.close()
    finally:
        shipped.close()
        old.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=800, help="requests per client window")
    ap.add_argument("--c", default="8", help="comma-separated concurrencies")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--model", default="se")
    ap.add_argument("--repo", type=Path, required=True, help="a repository with the model exported")
    asyncio.run(run(ap.parse_args(argv)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
