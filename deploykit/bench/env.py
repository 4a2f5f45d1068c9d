"""The machine a benchmark ran on: CPU, cores, memory, library versions, date, and the background load.

A results table is only meaningful with these beside it. `LoadMonitor` measures how busy the machine was
with *other* processes while the timed calls ran: CPU time of the whole machine (/proc/stat) minus this
process's own CPU time, divided by wall time, i.e. the average number of cores others kept busy.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import os
import platform
import time
from pathlib import Path

VERSIONED = ("deploykit", "torch", "onnxruntime", "onnxruntime-gpu", "onnx", "onnxsim", "numpy", "tensorrt",
             "matplotlib")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def gpu_name(device: str) -> str | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def environment(device: str = "cpu", threads: int | None = None) -> dict:
    """Everything a results table records about where and when it was measured."""
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "memory_gib": memory_gib(),
        "device": device,
        "gpu": gpu_name(device),
        "threads": threads,
        "versions": versions(),
        "load_average_start": load_average(),
    }


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have been busy since boot (user+nice+system+irq+softirq+steal)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(v) for v in fields]
    busy = ticks[0] + ticks[1] + ticks[2] + sum(ticks[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# Below this much timed wall time, /proc/stat's 10 ms ticks cannot say how busy other processes were.
MIN_JUDGED_SECONDS = 0.5


class LoadMonitor:
    """Accumulates, over the stretches between start() and stop(), the cores other processes kept busy."""

    def __init__(self):
        self.wall = 0.0
        self.other = 0.0
        self.available = _machine_busy_seconds() is not None
        self._mark: tuple[float, float, float] | None = None

    def start(self) -> None:
        if self.available:
            self._mark = (time.perf_counter(), _machine_busy_seconds(), _own_cpu_seconds())

    def stop(self) -> None:
        if not self.available or self._mark is None:
            return
        t0, busy0, own0 = self._mark
        self.wall += time.perf_counter() - t0
        # Both counters tick every 10 ms, so one short stretch can read far off either way; the signed sum over
        # all stretches averages that out (clipping each stretch at 0 would only ever add).
        self.other += (_machine_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)
        self._mark = None

    @property
    def other_cores(self) -> float | None:
        """Average number of cores busy with other processes while measuring (None when unknown)."""
        if not self.available or self.wall < MIN_JUDGED_SECONDS:
            return None
        return max(0.0, self.other / self.wall)

    def verdict(self, cores: int) -> str:
        """A one-line note for results tables: quiet, or loaded and by how much."""
        other = self.other_cores
        if not self.available:
            return "background load unknown (no /proc/stat)"
        if other is None:
            return (f"background load not judged: {self.wall:.2f} s of timed calls is too short for the kernel's "
                    f"10 ms CPU accounting (at least {MIN_JUDGED_SECONDS:g} s needed)")
        share = other / max(cores, 1)
        state = "QUIET" if share < 0.1 else "LOADED"
        return (f"{state}: other processes kept {other:.2f} of {cores} cores busy on average during the "
                f"timed calls ({share:.0%})")
