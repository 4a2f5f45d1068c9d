"""Large gRPC messages reuse freed heap memory instead of fresh mmaps (server.keep_freed_buffers).

gRPC core mallocs every message it receives and sends; with glibc's default mmap threshold each
800 KB tensor was a new mapping, so the kernel zero-filled ~200 fresh pages per direction per request
(a third of the server's CPU per request). The effect is counted, not timed: the server's minor page
faults over a run of requests (/proc/<pid>/stat), and glibc's own accounting of mmapped blocks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.serve.helpers import REPO_ROOT, LiveServer, make_input, needs_serve_extra

needs_serve_extra()
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (test extra)")

glibc_only = pytest.mark.skipif(not sys.platform.startswith("linux") or
                                __import__("platform").libc_ver()[0] != "glibc", reason="glibc malloc tuning")
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


@glibc_only
def test_large_grpc_requests_do_not_fault_in_fresh_pages(model_repo, reference, tmp_path):
    # A fresh server of its own: glibc's adaptive threshold depends on the process's allocation history.
    with LiveServer(model_repo, "--batching", "off", log_dir=tmp_path) as server:
        per_request, pages_per_request, outputs, x = _faults_under_load(server)
    reference.assert_close("sam", x, {"output": outputs[-1]})
    assert all(np.array_equal(y, outputs[0]) for y in outputs)
    # Before the fix: 100-400 a request (buffers mmapped afresh); now a few dozen at most.
    assert per_request < pages_per_request / 8, (per_request, pages_per_request)


def _faults_under_load(server):
    from concurrent.futures import ThreadPoolExecutor

    x = make_input((1, 64, 56, 56), seed=31)            # 800 KB in, 800 KB out: far above 128 KiB
    pages_per_request = 2 * x.nbytes // PAGE            # what fresh buffers both ways would fault in
    callers, requests = 8, 8                            # several messages in flight, as under load
    clients = [grpcclient.InferenceServerClient(server.grpc_address) for _ in range(callers)]
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)

    def run(client):
        return [client.infer("sam", [tensor], client_timeout=60).as_numpy("output") for _ in range(requests)]

    try:
        with ThreadPoolExecutor(callers) as pool:
            list(pool.map(run, clients))  # warm-up: the heap grows to its working size once
            before = minor_faults(server.proc.pid)
            outputs = [y for ys in pool.map(run, clients) for y in ys]
            per_request = (minor_faults(server.proc.pid) - before) / (callers * requests)
    finally:
        for client in clients:
            client.close()
    return per_request, pages_per_request, outputs, x


PROBE = r"""
import ctypes, json, sys
from deploykit.serve.server import keep_freed_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
applied = keep_freed_buffers()
size = 8 << 20
before = libc.mallinfo2()
block = libc.malloc(size)
ctypes.memset(block, 1, size)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped": during.hblkhd - before.hblkhd,
                  "kept_free": after.fordblks - before.fordblks}))
"""


def probe(env_extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**env, **env_extra}, cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@glibc_only
def test_keep_freed_buffers_serves_large_blocks_from_the_heap_and_keeps_them():
    tuned = probe({})
    assert tuned == {"applied": True, "mmapped": 0, "kept_free": tuned["kept_free"]}
    assert tuned["kept_free"] >= 8 << 20  # freed, but kept for the next message
    # A user's own malloc settings win: nothing applied, and glibc maps the block as it always did.
    untouched = probe({"MALLOC_ARENA_MAX": "4"})
    assert untouched["applied"] is False and untouched["mmapped"] >= 8 << 20
