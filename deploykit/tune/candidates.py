"""The engine and precision pairs `deploykit tune` tries, each with the gate it must pass against fp32 PyTorch.

| candidate        | engine       | graph       | setting                                  |
| ort-fp32         | ONNX Runtime | fp32        | (today's default)                         |
| openvino-f32     | OpenVINO     | fp32        | INFERENCE_PRECISION_HINT f32, static batch |
| openvino-bf16    | OpenVINO     | fp32        | INFERENCE_PRECISION_HINT bf16, static batch |
| ort-int8         | ONNX Runtime | INT8 Q/DQ   | CPU flavour (u8 activations, s8 weights)   |
| openvino-int8    | OpenVINO     | INT8 Q/DQ   | the same graph, f32 hint for what stays float |
| openvino-default | OpenVINO     | fp32        | plugin defaults, the dynamic graph (baseline) |

openvino-default is what a user gets from `compile_model(onnx)`: a baseline the pick must not lose to,
never installed itself (its precision is whatever the machine defaults to).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from deploykit.precisions.gate import DEFAULT_LIMITS, GateLimits

# f32 engines compute what fp32 PyTorch computes, up to summation order.
F32_LIMITS = GateLimits(max_rel_l2=1e-4, min_cosine=0.99999)


@dataclass
class Candidate:
    name: str
    engine: str            # "onnxruntime" | "openvino"
    precision: str         # "fp32" | "bf16" | "int8"
    graph: Path | None     # the ONNX file it runs (None: the graph could not be made)
    hint: str | None = None           # OpenVINO INFERENCE_PRECISION_HINT (None: plugin default)
    static_shapes: bool = True
    installable: bool = True
    limits: GateLimits = F32_LIMITS
    runner: object = None
    status: str = "pending"           # ok | failed
    reason: str = ""
    metrics: list[dict] = field(default_factory=list)   # per batch: rel_l2, cosine, max_abs
    times_ms: dict[int, list[float]] = field(default_factory=dict)

    def open(self, threads: int | None):
        if self.engine == "onnxruntime":
            from deploykit.backends.ort import OrtRunner

            # Spinning off, as `deploykit serve` runs it: interleaved with other engines, a spinning pool's
            # busy-wait after each run goes to whoever runs next (see OrtRunner's `spinning`).
            self.runner = OrtRunner(str(self.graph), threads=threads, spinning=False).activate()
        else:
            from deploykit.backends.openvino import OpenVinoRunner

            self.runner = OpenVinoRunner(self.graph, precision=self.hint, threads=threads,
                                         static_shapes=self.static_shapes).activate()
        return self

    def close(self) -> None:
        if self.runner is not None:
            self.runner.deactivate()
            self.runner = None


def candidates(fp32: Path, int8: Path | None, int8_problem: str = "", *, openvino: bool = True) -> list[Candidate]:
    """Every pair this machine can try; those it cannot are returned failed with the reason."""
    int8_limits = DEFAULT_LIMITS["int8"]
    out = [Candidate("ort-fp32", "onnxruntime", "fp32", fp32, limits=F32_LIMITS)]
    ov = [Candidate("openvino-f32", "openvino", "fp32", fp32, hint="f32", limits=F32_LIMITS),
          Candidate("openvino-bf16", "openvino", "bf16", fp32, hint="bf16", limits=DEFAULT_LIMITS["bf16"]),
          Candidate("openvino-default", "openvino", "default", fp32, hint=None, static_shapes=False,
                    installable=False, limits=DEFAULT_LIMITS["bf16"])]
    out += [ov[0], ov[1]]
    out.append(Candidate("ort-int8", "onnxruntime", "int8", int8, limits=int8_limits))
    out.append(Candidate("openvino-int8", "openvino", "int8", int8, hint="f32", limits=int8_limits))
    out.append(ov[2])
    for c in out:
        if c.graph is None:
            c.status, c.reason = "failed", int8_problem or "no INT8 graph"
        elif c.engine == "openvino" and not openvino:
            c.status, c.reason = "failed", "openvino is not installed (pip install 'deploykit[openvino]')"
    return out
