"""The one NCHW float image input of registry blocks and networks, as named inputs and verification points."""

from __future__ import annotations

from deploykit.sources import ModelSource
from deploykit.sources.specs import Dim, TensorInput


def image_source(config, kind: str, exported, reference, channels: int, weights: dict) -> ModelSource:
    from deploykit.export.verify import verification_shapes

    inp = config.input
    b = inp.batch
    dims = (Dim(b.opt, b.min, b.max), Dim.fixed(channels), Dim(inp.height.opt, inp.height.lo, inp.height.hi),
            Dim(inp.width.opt, inp.width.lo, inp.width.hi))
    src = config.source
    name = src.block or src.network
    rebuild = {"kind": kind, kind: name, "variant": src.variant, "args": dict(src.args),
               "weights": {k: weights.get(k) for k in ("path", "sha256")} if weights.get("path") else None,
               "seed": config.seed}
    return ModelSource(kind, f"{name} ({src.variant})", exported, reference, [TensorInput(inp.name, "float32", dims)],
                       [config.output_name], [{inp.name: s} for s in verification_shapes(config, channels)],
                       weights, rebuild, channels=channels)
