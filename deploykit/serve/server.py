"""Running the app: load the repository, bind the socket, serve with uvicorn, shut down gracefully.

The repository is loaded (every session created, every config checked) before the socket is bound, so a
broken model fails the command at once with exit code 2 instead of a server that is up but cannot answer.
The socket is bound here rather than by uvicorn so that `--port 0` works (the chosen port is printed) and
an address already in use is a one-line error.

SIGTERM (docker stop) and SIGINT (Ctrl-C) both shut down gracefully: readiness turns false, no new
connections are accepted, requests in flight finish (up to `graceful_timeout_s`), queued batches are run,
sessions are released, and the process exits 0. A second Ctrl-C forces the exit.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import socket
import sys
import threading
from collections.abc import Callable

from deploykit.errors import UserInputError, require
from deploykit.serve.settings import ServeSettings

READY_LINE = "deploykit serve: listening on"
GRPC_LINE = "deploykit serve: gRPC listening on"
METRICS_LINE = "deploykit serve: metrics at"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (IPv6 when the host is an IPv6 literal)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted connections only when the listening
    # socket says TCP, and without it small response writes wait ~40 ms on delayed ACKs (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserInputError(f"{host}:{port} is already in use",
                                 hint="stop the other server or pass another --port (0 picks a free one)") from None
        raise UserInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                             hint="check --host (an address of this machine) and --port") from None
    sock.set_inheritable(True)
    return sock


# glibc mallopt parameters (malloc.h) and the largest mmap threshold it accepts on 64-bit systems.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20
TRIM_THRESHOLD = 256 << 20


def keep_freed_buffers() -> bool:
    """Let glibc reuse freed tensor-sized buffers instead of returning them to the kernel at once.

    gRPC core allocates each received and sent message (800 KB for a 1x64x56x56 fp32 tensor) with malloc;
    above glibc's mmap threshold (128 KiB, raised only as far as the largest block freed so far) every
    such buffer is a fresh mmap, and a top of heap past twice that is trimmed, so each request paid 300-400
    page faults plus munmap: ~0.8 ms of server CPU, a third of a gRPC request. Serving blocks
    up to 32 MiB from the heap and trimming only past 256 MiB keeps them reused. The price: after a burst,
    freed heap (never more than the burst's peak, and trimmed past 256 MiB) stays resident for reuse. The
    HTTP path reuses uvloop's read buffer and gains little.
    Returns whether it applied: not on other C libraries, and not when the user tunes malloc through the
    environment (MALLOC_* or GLIBC_TUNABLES), which wins.
    """
    import ctypes
    import os
    import platform

    if platform.libc_ver()[0] != "glibc" or any(k == "GLIBC_TUNABLES" or k.startswith("MALLOC_")
                                                for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def make_server(app, settings: ServeSettings, *, on_ready: Callable[[], None] = lambda: None,
                make_grpc: Callable | None = None, on_grpc: Callable[[int], None] = lambda _port: None):
    """A uvicorn Server that reports readiness and treats SIGTERM like SIGINT (graceful, exit 0).

    With `make_grpc` (called on the event loop, returning a bound grpc.aio server and its port), the gRPC
    service runs on the same loop: bound before anything is served (a port in use fails the command),
    started once the app's lifespan has started the schedulers, and stopped (with the graceful timeout
    for calls in flight) before they stop.
    """
    uvicorn = require("uvicorn", extra="serve", purpose="deploykit serve")

    class Server(uvicorn.Server):
        grpc_server = None

        async def serve(self, sockets=None):
            if make_grpc is not None:
                self.grpc_server, port = make_grpc()
                on_grpc(port)
            await super().serve(sockets=sockets)

        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.grpc_server is not None and self.started and not self.should_exit:
                await self.grpc_server.start()
            if self.started and not self.should_exit:
                on_ready()

        async def shutdown(self, sockets=None):
            if self.grpc_server is not None:
                await self.grpc_server.stop(settings.graceful_timeout_s)
            await super().shutdown(sockets=sockets)

        def handle_exit(self, sig, frame):
            app.state.serving["ready"] = False  # health checks fail while requests in flight drain
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the captured signal after shutting down, so SIGTERM would end the process
            # with -15 after a clean drain; a server stopped on purpose should exit 0.
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, log_level=settings.log_level if settings.log_level != "info" else "warning",
                            access_log=settings.log_level == "debug", lifespan="on",
                            # uvicorn waits with asyncio.wait_for, so a fraction of a second is honoured.
                            timeout_graceful_shutdown=settings.graceful_timeout_s, server_header=False)
    return Server(config)


def serve(root, settings: ServeSettings | None = None, *, out: Callable[[str], None] | None = None,
          err: Callable[[str], None] | None = None) -> int:
    """Load `root`, listen, and serve until stopped. Returns the exit code (0 after a graceful stop).

    Raises:
        UserInputError: the repository or the address cannot be used (exit 2).
        MissingDependency: the serve extra is missing, or no model can run here (exit 3).
    """
    settings = settings or ServeSettings()
    keep_freed_buffers()
    out = out or (lambda m: print(m, flush=True))
    err = err or (lambda m: print(m, file=sys.stderr, flush=True))
    require("fastapi", extra="serve", purpose="deploykit serve")
    require("uvicorn", extra="serve", purpose="deploykit serve")
    if settings.grpc_port is not None:
        require("grpc", extra="serve", purpose="deploykit serve's gRPC endpoint (or pass --no-grpc)")

    from deploykit.serve.app import create_app
    from deploykit.serve.models import Repository

    repository = Repository.load(root, settings, log=lambda m: err(f"warning: {m}"))
    for mv in repository.versions():
        sched = mv.scheduler
        how = (f"dynamic batching up to {sched.max_batch}, max queue delay {int(sched.max_delay_s * 1e6)} us"
               if sched.batching else "no batching")
        decision = mv.model.batching_decision
        if decision is not None:
            per_sample = ", ".join(f"batch {n} {t * 1e6:.0f} us" for n, t in sorted(decision.per_sample_s.items()))
            how += f" (measured per sample: {per_sample}; {decision.describe()})"
        err(f"loaded {mv.label} ({mv.model.platform}, max_batch_size {mv.model.max_batch_size}, {how}, "
            f"{sched.instances} instance(s))")
    sock = bind_socket(settings.host, settings.port)
    sockets = [sock]
    app = create_app(repository, settings)
    url = url_of(sock)
    if settings.metrics_port is not None:
        metrics_sock = bind_socket(settings.host, settings.metrics_port)
        sockets.append(metrics_sock)
        app.state.metrics_port = metrics_sock.getsockname()[1]
        out(f"{METRICS_LINE} {url_of(metrics_sock)}/metrics")
    make_grpc = None
    if settings.grpc_port is not None:
        from deploykit.serve.grpc_service import create_grpc_server

        def make_grpc():
            return create_grpc_server(repository, app.state.serving, settings.host, settings.grpc_port,
                                      settings.max_body_bytes)

    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    server = make_server(app, settings, make_grpc=make_grpc,
                         on_grpc=lambda port: out(f"{GRPC_LINE} {host}:{port}"),
                         on_ready=lambda: out(f"{READY_LINE} {url} ({len(repository.models)} model(s))"))
    try:
        server.run(sockets=sockets)
    finally:
        for each in sockets:
            each.close()
    err("deploykit serve: stopped")
    return 0
