"""Facts about the machine a command runs on that decide what it can take on."""

from __future__ import annotations

import math
import os

from deploykit.errors import UserInputError

# Verification and benchmarking hold the input, outputs and intermediates at the largest shape at once: an
# input over this share of the machine's memory cannot be run.
MAX_INPUT_SHARE_OF_MEMORY = 1 / 8


def physical_memory() -> int | None:
    """Bytes of RAM, None where the system does not say (then only a MemoryError stops an oversized run)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_input_fits(shapes, *, what: str, hint: str, itemsize: int = 4) -> None:
    """Refuse, before any work, shapes whose input alone would crowd out the machine's memory."""
    memory = physical_memory()
    if memory is None or not shapes:
        return
    largest = max(shapes, key=math.prod)
    need = math.prod(largest) * itemsize
    if need > memory * MAX_INPUT_SHARE_OF_MEMORY:
        raise UserInputError(
            f"{what} at {'x'.join(map(str, largest))} needs {need / 2**30:.1f} GiB for the input alone, and the "
            f"outputs and intermediates several times that; this machine has {memory / 2**30:.1f} GiB", hint=hint)
