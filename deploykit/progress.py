"""Progress for long pipelines: a rich spinner on a terminal, plain lines when piped, nothing with --json.

Everything goes to stderr so stdout stays clean for results (`--json` prints one object there).
"""

from __future__ import annotations

import contextlib
import sys
import time


class Progress:
    def __init__(self, mode: str | None = None):
        if mode is None:
            mode = "rich" if sys.stderr.isatty() else "plain"
        self.mode = mode
        self._console = None
        if mode == "rich":
            from rich.console import Console

            self._console = Console(stderr=True)

    def info(self, message: str) -> None:
        if self.mode == "rich":
            self._console.print(message, highlight=False)
        elif self.mode == "plain":
            print(message, file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str):
        """Announce a stage; on exit print its outcome and duration. The block may set `.detail`."""
        record = _StageRecord(name)
        start = time.perf_counter()
        status = None
        if self.mode == "rich":
            status = self._console.status(f"{name} ...")
            status.start()
        try:
            yield record
        except BaseException:
            self._finish(record, "failed", time.perf_counter() - start, status)
            raise
        self._finish(record, record.outcome, time.perf_counter() - start, status)

    def _finish(self, record, outcome, seconds, status):
        if status is not None:
            status.stop()
        detail = f" - {record.detail}" if record.detail else ""
        if self.mode == "rich":
            color = {"ok": "green", "failed": "red"}.get(outcome, "yellow")
            self._console.print(f"[{color}]{outcome:>7}[/{color}] {record.name} ({seconds:.1f}s){detail}", highlight=False)
        elif self.mode == "plain":
            print(f"[{outcome}] {record.name} ({seconds:.1f}s){detail}", file=sys.stderr, flush=True)


class _StageRecord:
    def __init__(self, name: str):
        self.name = name
        self.outcome = "ok"
        self.detail = ""
