"""Peak memory of a stretch of work: resident-set growth on the host, max allocated bytes on a CUDA device.

Host memory is read from /proc/self/status (Linux). The kernel's high-water mark VmHWM can be reset by
writing "5" to /proc/self/clear_refs; when that is not allowed a background thread samples VmRSS every
millisecond instead (it can miss a spike shorter than that). Elsewhere host memory is not measured.
The figure is the growth over the resident size at the start. Before starting, glibc's `malloc_trim(0)`
hands freed heap pages back to the kernel, so buffers that malloc would otherwise recycle silently are
faulted in again and counted; memory still held by a backend (its weights, ONNX Runtime's arena from an
earlier batch) is not counted again.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+)\s+kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _malloc_trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: freed memory may then be recycled unseen
        pass


def _reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    # The reset worked when the mark dropped to (about) the current size.
    return hwm is not None and rss is not None and hwm <= rss + 64


class PeakMemory:
    """Context manager measuring peak memory growth; read `.mib` and `.kind` after the block.

    Args:
        device: "cpu" for host RSS growth, "cuda"/"cuda:N" for torch.cuda max allocated growth.
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.mib: float | None = None
        self.kind = "unavailable"
        self._start = 0
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled_peak = 0
        self._hwm = False

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
            return self
        _malloc_trim()
        start = _status_kib("VmRSS")
        if start is None:
            return self
        self._start = start
        self._hwm = _reset_high_water_mark()
        self.kind = "rss_delta"
        if not self._hwm:
            self._sampled_peak = start
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            rss = _status_kib("VmRSS")
            if rss is not None and rss > self._sampled_peak:
                self._sampled_peak = rss

    def __exit__(self, *exc) -> bool:
        if self.kind == "cuda_max_allocated":
            import torch

            torch.cuda.synchronize(self.device)
            self.mib = max(0, torch.cuda.max_memory_allocated(self.device) - self._start) / 2**20
        elif self.kind == "rss_delta":
            if self._sampler is not None:
                self._stop.set()
                self._sampler.join()
                peak = max(self._sampled_peak, _status_kib("VmRSS") or 0)
            else:
                peak = _status_kib("VmHWM") or self._start
            self.mib = max(0, peak - self._start) / 1024
        return False
