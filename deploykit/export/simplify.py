"""onnxsim simplification. The caller verifies the result; this only reports what onnxsim did."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SimplifyResult:
    model: object | None   # onnx.ModelProto, None when onnxsim failed
    ok: bool
    error: str | None
    nodes_before: int
    nodes_after: int


def simplify(model) -> SimplifyResult:
    before = len(model.graph.node)
    try:
        import onnxsim

        simplified, check_ok = onnxsim.simplify(model, check_n=0)
    except Exception as exc:  # noqa: BLE001 - a simplifier failure means: keep the unsimplified graph
        return SimplifyResult(None, False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}",
                              before, before)
    if not check_ok:
        return SimplifyResult(None, False, "onnxsim reported its own check failed", before, before)
    return SimplifyResult(simplified, True, None, before, len(simplified.graph.node))
