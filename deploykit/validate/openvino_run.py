"""`validate --backend openvino`: the graph compiled by OpenVINO (f32, one compile per shape) on every feed."""

from __future__ import annotations

from pathlib import Path

from deploykit.validate.checks import Check

CATEGORY = "numerics"


def openvino_outputs(path: Path, feeds, threads: int | None = None) -> tuple[dict | None, list[Check]]:
    """Run every feed with OpenVINO in f32; (outputs by feed name, checks)."""
    import openvino

    from deploykit.backends.openvino import OpenVinoRunner
    from deploykit.errors import DeployKitError

    out = {}
    try:
        with OpenVinoRunner(path, precision="f32", threads=threads) as runner:
            for feed in feeds:
                out[feed.name] = runner.infer(feed.arrays)
    except DeployKitError as exc:
        return None, [Check("openvino_run", False, exc.one_line(), category=CATEGORY,
                            fix="the graph needs an op or shape OpenVINO refuses; serve it with ONNX Runtime")]
    return out, [Check("openvino_run", True, f"OpenVINO {openvino.__version__.split('-')[0]} (f32, static shapes) "
                                             f"ran {len(out)} input set(s)", category=CATEGORY)]
