"""The block zoo: one paper per module, each with a faithful reference and an export-safe twin.

Public API (kept stable by later work):
    names()                                   -> registered block names
    spec(name)                                -> BlockSpec (paper, defaults, input shape), no torch import
    create(name, variant="reference"|"safe", **overrides) -> torch.nn.Module
    example_input(name, batch=1, **overrides) -> NCHW tensor the block accepts
    load_checkpoint(module, path_or_state)    -> loads the authors' checkpoints (see checkpoints.py)
"""

from __future__ import annotations

from deploykit.blocks.registry import BLOCKS, VARIANTS, BlockSpec, names, spec


def create(name: str, variant: str = "reference", **overrides):
    """Build block `name` with its registry defaults updated by `overrides`.

    Args:
        name: a registered block name (`names()`).
        variant: "reference" (faithful to the authors' code) or "safe" (the export-safe twin).
        **overrides: constructor arguments replacing the registry defaults.
    """
    from deploykit._registry import build

    block = spec(name)
    return build(block, "block", variant, lambda v: block.reference if v == "reference" else block.safe,
                 block.defaults, overrides, what="constructor arguments")


def example_input(name: str, batch: int = 1, *, height: int | None = None, width: int | None = None,
                  seed: int = 0, scale: float = 1.0, **overrides):
    """A seeded random NCHW tensor the block accepts (channels follow `overrides` where they set them)."""
    import torch

    channels, h, w = spec(name).input_shape(**overrides)
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height or h, width or w, generator=gen) * scale


def load_checkpoint(module, source, **kwargs):
    """Load an authors' checkpoint (path or state dict) into `module`; see deploykit.blocks.checkpoints."""
    from deploykit.blocks.checkpoints import load_checkpoint as _load

    return _load(module, source, **kwargs)


__all__ = ["BLOCKS", "BlockSpec", "VARIANTS", "create", "example_input", "load_checkpoint", "names", "spec"]
