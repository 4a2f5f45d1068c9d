"""What the make_export_safe variant tests share: a host model around the block under test, and the check that
a recognised variant was swapped for its twin after proof and still equals the original on new data."""

from __future__ import annotations

import torch
from torch import nn

from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.convert import make_export_safe


class Host(nn.Module):
    """A conv stem, the block under test, a conv after it: the block sits inside a model as in real code."""

    def __init__(self, block, channels):
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.block = block
        self.head = nn.Conv2d(channels, 4, 1)

    def forward(self, x):
        return self.head(self.block(self.stem(x)))


def assert_swapped_after_proof(block, channels, *, kind: str, twin: str, expected: dict, seed: int,
                               proof_size, checks, tol: float):
    """`block` inside a Host is swapped (and only it) for `twin`, recognised as `kind` with at least the
    `expected` arguments, proved within `tol`, and equal to the original at each (size, input scale) of
    `checks`. Returns the replacement record."""
    model = randomize_for_verification(Host(block, channels), seed=seed).eval()
    converted, report = make_export_safe(model, torch.randn(proof_size))
    assert [c.path for c in report.replaced] == ["block"] and not report.not_replaced, report.summary()
    record = report.replaced[0]
    assert record.block == kind and type(converted.block).__name__ == twin
    assert expected.items() <= record.args.items(), record.args
    assert record.max_abs <= tol and record.max_abs_seeded <= tol
    for size, scale in checks:
        x = torch.randn(size) * scale
        with torch.no_grad():
            torch.testing.assert_close(converted(x), model(x), atol=tol, rtol=tol)
    return record
