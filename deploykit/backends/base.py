"""The runner interface every backend implements (after Polygraphy's backend runners).

A runner is built cheaply, acquires its resources in `activate()` (sessions, engines, device buffers), runs
`infer(feed)` any number of times with a dict of numpy arrays and returns a dict of numpy arrays keyed by output
name, and frees everything in `deactivate()`. It is a context manager doing both.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


class Runner:
    name = "runner"

    def __init__(self):
        self.active = False

    def activate(self) -> "Runner":
        if not self.active:
            self.activate_impl()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self.deactivate_impl()
            self.active = False

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.active:
            raise RuntimeError(f"{self.name}: call activate() (or use the runner as a context manager) first")
        return self.infer_impl(feed)

    # Subclasses implement these.
    def activate_impl(self) -> None: ...

    def deactivate_impl(self) -> None: ...

    def infer_impl(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()
        return False
