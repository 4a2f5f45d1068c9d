"""Server CPU and page faults per request with and without `keep_freed_buffers`, interleaved, one run.

Server A is `deploykit serve` as shipped; server B gets `MALLOC_PERTURB_=0` (glibc's default, a no-op),
which makes `keep_freed_buffers` stand aside, i.e. the old allocator behaviour. Both serve the same
repository with `--batching off`; the HTTP and gRPC clients of both take turns in every round. Prints
median server CPU ms/request, client CPU ms/request, req/s and the server's minor faults per request.

    python benchmarks/serve_protocols.py --models se --repo /tmp/r --rounds 1 --duration 0.2  # exports se
    python benchmarks/serve_grpc_malloc.py --repo /tmp/r --model se --c 1,8
"""
import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.serve_protocols import Protocol, Server  # noqa: E402
from benchmarks.serve_throughput import load_model  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=800)
ap.add_argument("--c", default="8")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--model", default="se")
ap.add_argument("--repo", type=Path, required=True, help="a repository with the model exported")
a = ap.parse_args()


def own():
    t = os.times()
    return t.user + t.system


def flt(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])



async def main():
    repo = a.repo
    m = load_model(repo, a.model, 0)
    A = Server(repo, ["--batching", "off"])
    os.environ["MALLOC_PERTURB_"] = "0"
    B = Server(repo, ["--batching", "off"])
    del os.environ["MALLOC_PERTURB_"]
    try:
        ps = [(lab, srv, Protocol(p, srv.http if p == "http" else srv.grpc, m))
              for lab, srv in (("A", A), ("B", B)) for p in ("http", "grpc")]
        for _, _, p in ps:
            assert np.array_equal(await p.infer(), m.expected)
            await p.measure(8, 1.0)
        res = {}
        for r in range(a.rounds):
            for c in [int(x) for x in a.c.split(",")]:
                for lab, srv, p in (ps if r % 2 == 0 else ps[::-1]):
                    done = 0

                    async def loop():
                        nonlocal done
                        while done < a.n:
                            done += 1
                            await p.infer()
                    f0, s0, c0, t0 = flt(srv.proc.pid), srv.cpu_seconds(), own(), time.perf_counter()
                    await asyncio.gather(*(loop() for _ in range(c)))
                    f1, s1, c1, t1 = flt(srv.proc.pid), srv.cpu_seconds(), own(), time.perf_counter()
                    n = done
                    res.setdefault((lab, p.name, c), []).append(
                        ((s1 - s0) / n * 1e3, (c1 - c0) / n * 1e3, n / (t1 - t0), (f1 - f0) / n))
        for k, v in sorted(res.items()):
            med = [float(np.median([x[i] for x in v])) for i in range(4)]
            print(f"{k[0]} {k[1]} c={k[2]}: server {med[0]:.3f} ms/req client {med[1]:.3f} ms/req "
                  f"{med[2]:.0f} req/s faults/req {med[3]:.0f}", flush=True)
        for _, _, p in ps:
            await p.close()
    finally:
        A.close()
        B.close()

asyncio.run(main())
