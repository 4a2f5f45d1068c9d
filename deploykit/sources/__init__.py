"""Where the model comes from: one layer every kind of source plugs into.

Each kind (a registered block, a registered network, the user's own module, a saved torch.export program) has
its own file and yields the same `ModelSource`: the module to export, the reference it is verified against,
the named inputs with their ranges and verification points, the output names, what weights went in and how to
rebuild the reference later. The export stages read that object the same way for every kind.

Public API:
    build_source(config) -> ModelSource
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploykit.sources.specs import Point, TensorInput


@dataclass
class ModelSource:
    kind: str                       # block | network | module | program
    label: str                      # what the console and the report call it
    exported: Any                   # torch.nn.Module in eval mode: what goes to ONNX (flat tuple or one tensor out)
    reference: Any                  # torch.nn.Module in eval mode: the computation the graph must equal
    inputs: list[TensorInput]
    output_names: list[str]
    points: list[Point]             # verification points, one shape per input
    weights_report: dict            # which weights went in (path, sha256, what was stripped) or seeded random
    rebuild: dict                   # how `validate` / `bench` rebuild the reference from the sidecar
    conversion: dict | None = None  # the export-safe rewrite: swapped, kept and why, parity of each swap
    channels: int | None = None     # registry sources: the image input's channels
    notes: list[str] = field(default_factory=list)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]


def build_source(config) -> ModelSource:
    """The ModelSource of an export config, whatever kind its `source:` names."""
    src = config.source
    if src.block is not None:
        from deploykit.sources.registry_block import build
    elif src.network is not None:
        from deploykit.sources.registry_network import build
    elif src.module is not None:
        from deploykit.sources.user_module import build
    else:
        from deploykit.sources.program import build
    return build(config)


__all__ = ["ModelSource", "TensorInput", "build_source"]
