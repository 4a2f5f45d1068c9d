"""Other engines and precisions in `validate`: OpenVINO runs (`--backend openvino`), and the reduced-precision
gate (relative L2, cosine; deploykit.precisions) for bf16 / INT8 artifacts, whose elements are not meant to
meet an fp32 atol/rtol."""

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


def gate_checks(prefix: str, against: str, expected_by_label: dict, actual_by_label: dict, precision: str
                ) -> list[Check]:
    """One check per feed, judged by the precision's gate instead of atol/rtol."""
    from deploykit.precisions.gate import DEFAULT_LIMITS, judge

    limits = DEFAULT_LIMITS[precision]
    checks = []
    for label, expected in expected_by_label.items():
        metrics: list[dict] = []
        cmp = judge(expected, actual_by_label[label], limits, metrics=metrics)
        worst_l2 = max((m["rel_l2"] for m in metrics), default=float("nan"))
        worst_cos = min((m["cosine"] for m in metrics), default=float("nan"))
        reasons = "; ".join(f"{o.name}: {o.reason}" for o in cmp.outputs if o.reason)
        detail = (f"relative L2 {worst_l2:.3e}, cosine {worst_cos:.6f}, max abs {cmp.max_abs:.3e} vs {against} "
                  f"({precision} gate: relative L2 <= {limits.max_rel_l2:g}, cosine >= {limits.min_cosine:g})"
                  + (f"; {reasons}" if reasons else ""))
        data = cmp.as_dict()
        data["gate"] = {"max_rel_l2": limits.max_rel_l2, "min_cosine": limits.min_cosine}
        data["metrics"] = metrics
        checks.append(Check(f"{prefix}[{label}]", bool(cmp), detail, category=CATEGORY, data=data,
                            fix=None if cmp else f"the {precision} artifact is further from PyTorch than its gate "
                                                 "allows: re-export it with real --calibration data"))
    return checks
