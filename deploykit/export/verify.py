"""Parity of ONNX graphs with PyTorch on fresh seeded inputs at several shapes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deploykit.compare import Comparison, Tolerance, compare_outputs, worst


def verification_shapes(config, channels: int) -> list[tuple[int, int, int, int]]:
    """NCHW shapes to verify: batch min/opt/max at the opt size; spatial min/max and an odd size when dynamic."""
    b, h, w = config.input.batch, config.input.height, config.input.width
    shapes = [(b.opt, h.opt, w.opt), (b.min, h.opt, w.opt), (b.max, h.opt, w.opt)]
    if config.dynamic_hw:
        odd_h = _odd_within(h)
        shapes += [(b.opt, h.lo, w.lo), (b.opt, h.hi, w.hi), (b.opt, odd_h, _odd_within(w, avoid=odd_h))]
    seen, out = set(), []
    for n, hh, ww in shapes:
        if (n, hh, ww) not in seen:
            seen.add((n, hh, ww))
            out.append((n, channels, hh, ww))
    return out


def _odd_within(r, avoid: int | None = None) -> int:
    """An odd size inside the range, not `avoid` where possible (exercises odd and non-square paths)."""
    candidates = [c for c in (r.opt + 1, r.opt - 1, r.opt + 3, r.opt - 3, r.lo, r.hi, r.lo + 1, r.hi - 1)
                  if r.lo <= c <= r.hi and c % 2 == 1]
    preferred = [c for c in candidates if c != avoid]
    return (preferred or candidates or [r.opt])[0]


def make_input(shape, seed: int, scale: float = 1.0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    return x


@dataclass
class ShapeParity:
    shape: tuple
    comparison: Comparison
    outputs: dict | None = None   # what the runtime returned, for comparisons between graphs

    def as_dict(self) -> dict:
        c = self.comparison
        return {"shape": list(self.shape), "passed": bool(c), "max_abs": c.max_abs, "max_rel": c.max_rel,
                "cosine": float(np.min([o.cosine for o in c.outputs])) if c.outputs else float("nan"),
                "reason": "; ".join(o.reason for o in c.outputs if o.reason)}


@dataclass
class ParityReport:
    label: str
    tolerance: Tolerance
    shapes: list[ShapeParity] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.shapes) and all(s.comparison for s in self.shapes)

    def _largest(self, field: str) -> float:
        return worst(getattr(o, field) for s in self.shapes for o in s.comparison.outputs)

    @property
    def max_abs(self) -> float:
        return self._largest("max_abs")

    @property
    def max_rel(self) -> float:
        return self._largest("max_rel")

    @property
    def min_passing_atol(self) -> float:
        """The smallest atol (with rtol 0) that passes every shape under the tolerance's mode."""
        return self._largest("min_atol")

    @property
    def min_passing_rtol(self) -> float:
        return self._largest("min_rtol")

    def as_dict(self) -> dict:
        return {"label": self.label, "passed": bool(self), "atol": self.tolerance.atol, "rtol": self.tolerance.rtol,
                "mode": self.tolerance.mode, "max_abs": self.max_abs, "max_rel": self.max_rel,
                "min_passing_atol": self.min_passing_atol, "min_passing_rtol": self.min_passing_rtol,
                "shapes": [s.as_dict() for s in self.shapes]}


def torch_outputs(module, x: np.ndarray, output_names: list[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.inference_mode():
        out = module(torch.from_numpy(x))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {name: o.float().numpy() for name, o in zip(output_names, outs)}


def non_finite_outputs(outputs: dict[str, np.ndarray]) -> list[str]:
    """The names of the outputs holding NaN or Inf."""
    return [name for name, o in outputs.items() if np.issubdtype(o.dtype, np.inexact) and not np.isfinite(o).all()]


def require_finite(module, args: tuple[np.ndarray, ...], outputs: dict[str, np.ndarray]) -> None:
    """NaN or Inf in PyTorch's outputs on the inputs `args` fails the verification (CheckFailed naming where
    they start): NaN would compare equal to NaN, so a broken model would otherwise "pass"."""
    bad = non_finite_outputs(outputs)
    if bad:
        from deploykit.errors import CheckFailed

        shapes = " + ".join(str(list(a.shape)) for a in args)
        raise CheckFailed(f"PyTorch's output '{bad[0]}' holds NaN or Inf at input shape {shapes}; "
                          f"{first_non_finite(module, args)}, so nothing can be verified and nothing was written",
                          hint="fix the weights or the inputs, or pass --allow-non-finite to export it anyway")


def first_non_finite(module, args: tuple[np.ndarray, ...]) -> str:
    """Where non-finite values start: the first weight or buffer holding one, else the first submodule (in
    execution order) whose output holds one."""
    import torch

    for kind, named in (("weight", module.named_parameters()), ("buffer", module.named_buffers())):
        for name, t in named:
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return f"the first non-finite tensor is the {kind} '{name}'"
    found: list[str] = []

    def hook(name):
        def record(_mod, _inp, out):
            outs = out if isinstance(out, (tuple, list)) else (out,)
            if not found and any(isinstance(o, torch.Tensor) and o.is_floating_point()
                                 and not bool(torch.isfinite(o).all()) for o in outs):
                found.append(name)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if n]
    try:
        with torch.inference_mode():
            module(*(torch.from_numpy(a) for a in args))
    finally:
        for h in handles:
            h.remove()
    # Hooks fire when a module finishes, so a parent reports after its children: the first is the innermost.
    return (f"the first non-finite tensor is the output of '{found[0]}'" if found
            else "the weights are finite: the non-finite values start in the model's own code")


def check_parity(label: str, runner, input_name: str, expected_by_shape: dict, tol: Tolerance,
                 inputs_by_shape: dict) -> ParityReport:
    """Run `runner` on the stored inputs and compare with the stored expected outputs."""
    report = ParityReport(label, tol)
    for shape, x in inputs_by_shape.items():
        try:
            actual = runner.infer(x if isinstance(x, dict) else {input_name: x})   # a feed, or one input
        except Exception as exc:  # noqa: BLE001 - a runtime that rejects a verification shape fails parity
            actual = {}
            reason = f"{runner.name} failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        comparison = compare_outputs(expected_by_shape[shape], actual, tol)
        if not actual:
            for out in comparison.outputs:
                out.reason = reason
        report.shapes.append(ShapeParity(shape, comparison, actual or None))
    return report


def compare_recorded(label: str, recorded: ParityReport, expected_by_shape: dict, tol: Tolerance) -> ParityReport:
    """Compare the outputs `recorded` already holds with another expectation, without running anything again."""
    report = ParityReport(label, tol)
    for sp in recorded.shapes:
        comparison = compare_outputs(expected_by_shape[sp.shape], sp.outputs or {}, tol)
        report.shapes.append(ShapeParity(sp.shape, comparison, sp.outputs))
    return report
