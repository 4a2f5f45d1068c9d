"""`deploykit serve` as a command: exit codes and one-line errors, no torch, graceful shutdown under load."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.serve.helpers import REPO_ROOT, LiveServer, make_input, needs_serve_extra

needs_serve_extra()


def run_cli(*args: str, prelude: str = "", timeout: float = 120) -> subprocess.CompletedProcess:
    code = (f"{prelude}\nimport sys\nfrom deploykit.cli import main\nmain({list(args)!r})")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr, proc.stderr
    assert lines and lines[-1].startswith("error: "), proc.stderr
    return lines[-1]


def test_help_lists_the_options_without_heavy_imports():
    code = ("import sys\nfrom deploykit.cli import main\n"
            "try:\n    main(['serve', '--help'])\nexcept SystemExit as exc:\n    assert exc.code in (0, None)\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'fastapi', 'uvicorn', 'tritonclient') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for option in ("--host", "--port", "--batching", "--max-batch", "--max-queue-delay-us", "--max-body-size",
                   "--instances", "--threads", "127.0.0.1"):
        assert option in proc.stdout, option


def test_the_server_never_imports_torch(model_repo):
    code = ("import sys\nfrom deploykit.serve.models import Repository\nfrom deploykit.serve.app import create_app\n"
            f"create_app(Repository.load({str(model_repo)!r}))\n"
            "assert 'torch' not in sys.modules\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr


def test_unusable_repository_or_flags_exit_2(tmp_path):
    proc = run_cli("serve", str(tmp_path / "missing"), "--port", "0")
    assert proc.returncode == 2 and "does not exist" in one_error_line(proc)
    (tmp_path / "empty").mkdir()
    proc = run_cli("serve", str(tmp_path / "empty"), "--port", "0")
    assert proc.returncode == 2 and "has no model" in one_error_line(proc)
    proc = run_cli("serve", str(tmp_path / "empty"), "--max-body-size", "lots")
    assert proc.returncode == 2 and "--max-body-size" in proc.stderr
    proc = run_cli("serve", str(tmp_path / "empty"), "--batching", "sometimes")
    assert proc.returncode == 2


def test_port_in_use_exits_2(model_repo):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cli("serve", str(model_repo), "--port", str(port))
    line = one_error_line(proc)
    assert proc.returncode == 2 and "already in use" in line and "--port" in line


def test_missing_serve_extra_exits_3_with_the_install_command(model_repo):
    proc = run_cli("serve", str(model_repo), "--port", "0", prelude="import sys; sys.modules['fastapi'] = None")
    line = one_error_line(proc)
    assert proc.returncode == 3 and "pip install 'deploykit[serve]'" in line


def test_accepted_connections_get_tcp_nodelay():
    """Without TCP_NODELAY on accepted sockets, responses stall ~40 ms on delayed ACKs."""
    from deploykit.serve.server import bind_socket

    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen = {}

    async def scenario():
        def on_connect(reader, writer):
            sock = writer.get_extra_info("socket")
            seen["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            writer.close()

        server = await asyncio.start_server(on_connect, sock=listener)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(scenario())
    assert seen["nodelay"] != 0


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(model_repo, tmp_path, reference):
    """docker stop sends SIGTERM: requests already received still get their answers, then the exit code is 0.

    The batcher is told to hold a partial batch for 2 s, so requests are certainly still waiting in the
    server when the signal arrives.
    """
    requests = 6  # se batches up to 4: at least two wait out the delay
    inputs = [make_input((1, 64, 14, 14), seed=700 + i) for i in range(requests)]
    live = LiveServer(model_repo, "--batching", "on", "--max-queue-delay-us", "2000000", log_dir=tmp_path).start()
    host, port = live.address.rsplit(":", 1)
    results: list = [None] * requests
    finished = [0.0] * requests

    def send(i: int, sent: threading.Event) -> None:
        x = inputs[i]
        head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                       "parameters": {"binary_data_size": x.nbytes}}],
                           "parameters": {"binary_data_output": True}}).encode()
        body = head + x.tobytes()
        request = (f"POST /v2/models/se/infer HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                   f"Inference-Header-Content-Length: {len(head)}\r\nConnection: close\r\n\r\n").encode() + body
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(request)
            sent.set()
            chunks = []
            while chunk := sock.recv(1 << 20):
                chunks.append(chunk)
        results[i] = b"".join(chunks)
        finished[i] = time.perf_counter()

    try:
        events = [threading.Event() for _ in range(requests)]
        threads = [threading.Thread(target=send, args=(i, events[i])) for i in range(requests)]
        for t in threads:
            t.start()
        assert all(e.wait(30) for e in events)
        time.sleep(0.3)  # the server has read them all; some wait in the batcher
        signalled = time.perf_counter()
        live.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
        code = live.proc.wait(60)
    finally:
        live.stop()
    assert code == 0, live.log()
    assert "deploykit serve: stopped" in live.log()
    assert max(finished) > signalled, "no request was still in flight at SIGTERM; the test proved nothing"
    for i, raw in enumerate(results):
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (i, head[:200])
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:])
        n = int(headers["inference-header-content-length"])
        doc = json.loads(body[:n])
        y = np.frombuffer(body[n:], dtype="<f4").reshape(doc["outputs"][0]["shape"])
        reference.assert_close("se", inputs[i], {"output": y})
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=5).close()
