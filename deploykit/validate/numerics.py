"""Numerics: ONNX Runtime on the planned inputs, against the PyTorch reference and (when present) TensorRT.

Comparisons follow Polygraphy's semantics (deploykit.compare): an element fails only when it exceeds both
atol and rtol; `--check-mode max|mean|quantile` compares a statistic of the errors instead; tolerances may be
given per output (`--atol out:1e-3`). Every comparison reports max abs/rel error, cosine similarity, the
smallest tolerance that would have passed, and NaN/Inf counts.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from deploykit.compare import CHECK_MODES, Tolerance, compare_outputs
from deploykit.errors import UserInputError
from deploykit.validate.checks import Check

CATEGORY = "numerics"
_OPSET_RE = re.compile(r"Opset (\d+) is under development.*?support for domain (\S+) is till opset (\d+)", re.S)
_IR_RE = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_UNREGISTERED_RE = re.compile(r"([\w.]+):(\w+)\(-?\d+\) is not a registered function/op")


def _first_line(exc: Exception, limit: int = 300) -> str:
    """ONNX Runtime's message on one line, without its "[ONNXRuntimeError] : 2 : CODE :" prefix."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*", "", text)
    return f"{type(exc).__name__}: {text[:limit]}"


def open_session(path: Path, structure_passed: bool = False):
    """An activated OrtRunner, or (None, failed Check) when ONNX Runtime refuses the model.

    Raises:
        UserInputError: the model's opset or IR version is newer than the installed ONNX Runtime supports.
    """
    import onnxruntime

    from deploykit.backends.ort import OrtRunner

    runner = OrtRunner(path)
    try:
        runner.activate()
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises its own exception types
        text = str(exc)
        found = _OPSET_RE.search(text)
        if found:
            opset, domain, supported = found.groups()
            raise UserInputError(
                f"the model uses {domain} opset {opset}, newer than onnxruntime {onnxruntime.__version__} supports; "
                f"it reads up to opset {supported}",
                hint=f"re-export with opset {supported} or lower, or upgrade onnxruntime") from None
        found = _IR_RE.search(text)
        if found:
            raise UserInputError(
                f"the model's IR version {found.group(1)} is newer than onnxruntime {onnxruntime.__version__} "
                f"supports; it reads up to IR {found.group(2)}", hint="re-save it with an older onnx, or upgrade onnxruntime"
            ) from None
        return None, Check("onnxruntime_session", False, _first_line(exc), category=CATEGORY,
                           fix=_session_fix(text, structure_passed))
    return runner, Check("onnxruntime_session", True, f"CPUExecutionProvider, onnxruntime {onnxruntime.__version__}",
                         category=CATEGORY)


def _session_fix(text: str, structure_passed: bool) -> str:
    """What to do when ONNX Runtime refuses a graph, fitted to why it did."""
    found = _UNREGISTERED_RE.search(text)
    if found and found.group(1) not in ("", "ai.onnx"):
        domain, op = found.groups()
        return (f"'{op}' is a custom op of domain '{domain}' that ONNX Runtime has no kernel for: register the "
                "library implementing it (SessionOptions.register_custom_ops_library) in the runtime that serves "
                "it, or export without the custom op; the TensorRT findings above say whether TensorRT needs a "
                "plugin too")
    if structure_passed:
        return ("every structure check passed, so ONNX Runtime itself refuses the graph: its message above names "
                "the node; an older or newer onnxruntime, or a different export of that node, may load it")
    return "ONNX Runtime cannot load the graph; the failed structure checks above usually say why"


def non_finite(outputs: dict[str, np.ndarray]) -> dict[str, dict[str, int]]:
    out = {}
    for name, value in outputs.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "fc":
            nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            if nan or inf:
                out[name] = {"nan": nan, "inf": inf, "size": int(arr.size)}
    return out


def run_ort(runner, feeds) -> tuple[dict[str, dict[str, np.ndarray]] | None, Check]:
    """Run every feed; outputs by feed name. The check fails on an error or on NaN/Inf in any output."""
    results, bad = {}, {}
    for feed in feeds:
        try:
            results[feed.name] = runner.infer(feed.arrays)
        except Exception as exc:  # noqa: BLE001
            return None, Check("onnxruntime_run", False, f"at {feed.name}: {_first_line(exc)}", category=CATEGORY,
                               fix="the graph fails at run time for these shapes; check its dynamic dims")
        found = non_finite(results[feed.name])
        if found:
            bad[feed.name] = found
    labels = ", ".join(f.name for f in feeds)
    if bad:
        first_label, per_output = next(iter(bad.items()))
        name, counts = next(iter(per_output.items()))
        detail = (f"ran at {labels}; NaN or Inf in the outputs (at {first_label}: '{name}' has {counts['nan']} NaN "
                  f"and {counts['inf']} Inf of {counts['size']})")
        return results, Check("onnxruntime_run", False, detail, category=CATEGORY, data={"non_finite": bad},
                              fix="find the op producing them (the fp16 check lists out-of-range tensors); inputs "
                                  "outside the op's domain (log/sqrt of negatives, division by zero) are common causes")
    return results, Check("onnxruntime_run", True, f"ran at {labels}; every output finite", category=CATEGORY,
                          data={"shapes": [f.label for f in feeds], "runs": [f.name for f in feeds],
                                "source": feeds[0].source if feeds else ""})


# ------------------------------------------------------------------------------------------ tolerances
def _parse_tol_flags(flags, kind: str, outputs: list[str]) -> tuple[float | None, dict[str, float]]:
    default, per = None, {}
    for flag in flags:
        name, value = None, flag
        if ":" in flag:
            name, value = flag.rsplit(":", 1)
        try:
            number = float(value)
        except ValueError:
            raise UserInputError(f"invalid --{kind} '{flag}'",
                                 hint=f"use a number (--{kind} 1e-3) or OUTPUT:NUMBER (--{kind} {outputs[0]}:1e-3)"
                                 if outputs else f"use a number, e.g. --{kind} 1e-3") from None
        if not number >= 0:
            raise UserInputError(f"invalid --{kind} '{flag}': tolerances cannot be negative or NaN",
                                 hint="pass tolerances of 0 or more")
        if name is None:
            default = number
        elif name not in outputs:
            raise UserInputError(f"--{kind} '{flag}' names output '{name}', which the model does not have",
                                 hint=f"outputs: {', '.join(outputs)}")
        else:
            per[name] = number
    return default, per


def tolerances(base: Tolerance, outputs: list[str], *, atol=(), rtol=(), mode: str | None = None,
               quantile: float | None = None) -> dict[str, Tolerance]:
    """Per-output tolerances: `base`, then flag defaults, then per-output flags.

    Raises:
        UserInputError: a malformed flag, an unknown output name or check mode.
    """
    if mode is not None and mode not in CHECK_MODES:
        raise UserInputError(f"unknown --check-mode '{mode}'", hint=f"valid: {', '.join(CHECK_MODES)}")
    if quantile is not None and not 0.0 <= quantile <= 1.0:
        raise UserInputError(f"--quantile {quantile} is outside 0..1", hint="pass a quantile between 0 and 1")
    a_default, a_per = _parse_tol_flags(atol, "atol", outputs)
    r_default, r_per = _parse_tol_flags(rtol, "rtol", outputs)
    out = {}
    for name in outputs:
        out[name] = Tolerance(
            atol=a_per.get(name, a_default if a_default is not None else base.atol),
            rtol=r_per.get(name, r_default if r_default is not None else base.rtol),
            mode=mode or base.mode, quantile=quantile if quantile is not None else base.quantile)
    return out


def _tol_text(tols: dict[str, Tolerance]) -> str:
    distinct = {(t.atol, t.rtol, t.mode) for t in tols.values()}
    if len(distinct) == 1:
        atol, rtol, mode = distinct.pop()
        return f"atol {atol:g}, rtol {rtol:g}" + ("" if mode == "elementwise" else f", {mode}")
    return "; ".join(f"{n}: atol {t.atol:g}, rtol {t.rtol:g}, {t.mode}" for n, t in tols.items())


def comparison_checks(prefix: str, against: str, expected_by_label: dict, actual_by_label: dict,
                      tols: dict[str, Tolerance]) -> list[Check]:
    """One check per feed: `prefix[feed name]`, passed when every output is within its tolerance."""
    checks = []
    for label, expected in expected_by_label.items():
        cmp = compare_outputs(expected, actual_by_label[label], tols)
        cos = min((o.cosine for o in cmp.outputs), default=float("nan"))
        reasons = "; ".join(f"{o.name}: {o.reason}" for o in cmp.outputs if o.reason)
        detail = (f"max abs {cmp.max_abs:.3e}, max rel {cmp.max_rel:.3e}, cosine {cos:.6f} vs {against} "
                  f"({_tol_text(tols)})" + (f"; {reasons}" if reasons else ""))
        data = cmp.as_dict()
        data["min_passing"] = {o.name: {"atol": o.min_atol, "rtol": o.min_rtol} for o in cmp.outputs}
        checks.append(Check(f"{prefix}[{label}]", bool(cmp), detail, category=CATEGORY, data=data,
                            fix=None if cmp else "loosen --atol/--rtol only if the error is expected (fp16, a "
                                                 "different algorithm); otherwise the graph and the reference "
                                                 "disagree: re-export and compare again"))
    return checks


# ------------------------------------------------------------------------------------- PyTorch reference
def reference_outputs(config, feeds, output_names: list[str]) -> tuple[dict[str, dict[str, np.ndarray]], Check]:
    """The PyTorch reference's outputs for every (single-input) feed, by feed name and ONNX output name, and the
    check saying how its outputs were matched to the model's (see match_outputs).
    """
    import torch

    from deploykit.export.source import build_modules

    mods = build_modules(config)
    expected, unmatched_onnx, unmatched_ref, how = {}, [], [], ""
    for feed in feeds:
        # A user model's inputs by name, in forward's order; a registry block's one image.
        names = [n for n in mods.input_names if n in feed.arrays]
        arrays = [feed.arrays[n] for n in names] if len(names) == len(mods.input_names) else [next(iter(feed.arrays.values()))]
        with torch.inference_mode():
            out = mods.reference(*(torch.from_numpy(a) for a in arrays))
        matched, no_ref, no_onnx, how = match_outputs(_to_numpy(out), output_names)
        expected[feed.name] = matched
        unmatched_onnx += [n for n in no_ref if n not in unmatched_onnx]
        unmatched_ref += [n for n in no_onnx if n not in unmatched_ref]
    return expected, _outputs_check(output_names, expected, unmatched_onnx, unmatched_ref, how)


def _to_numpy(out):
    """The reference's outputs as float32 arrays: a dict of names -> arrays when it returns a dict, else the flat
    list of its tensors in order (torch.onnx flattens nested tuples and lists the same way and drops None)."""
    import torch

    if isinstance(out, dict):
        named = {}
        for key, value in out.items():
            arrays = _to_numpy(value) if value is not None else []
            if len(arrays) == 1:
                named[str(key)] = arrays[0]
            else:  # a nested structure under one key: its parts have no name an ONNX output could carry
                named.update({f"{key}[{i}]": a for i, a in enumerate(arrays)})
        return named
    if isinstance(out, (tuple, list)):
        return [a for o in out if o is not None for a in _to_numpy(o)]
    if isinstance(out, torch.Tensor):
        return [out.detach().float().numpy()]
    return [np.asarray(out, dtype=np.float32)]


def match_outputs(reference, output_names: list[str]):
    """Pair the reference's outputs with the model's outputs.

    By name when the reference returns a dict whose keys include one of the model's output names; otherwise by
    position (a dict's values in order), as the exporter named them. Nothing unpaired is dropped silently: the
    caller fails on either leftover list.

    Returns:
        (matched: ONNX output name -> reference array, ONNX outputs without a reference output, reference outputs
        without an ONNX output: their names, or "#i" positions counted from 0, "by name" or "by position")
    """
    if isinstance(reference, dict) and set(reference) & set(output_names):
        matched = {n: reference[n] for n in output_names if n in reference}
        return (matched, [n for n in output_names if n not in reference],
                [k for k in reference if k not in output_names], "by name")
    values = list(reference.values()) if isinstance(reference, dict) else list(reference)
    matched = dict(zip(output_names, values))
    return (matched, list(output_names[len(values):]),
            [f"#{i}" for i in range(len(output_names), len(values))], "by position")


def _outputs_check(output_names, expected, unmatched_onnx, unmatched_ref, how) -> Check:
    """`parity_outputs`: passes when every model output has a reference output and the other way round; an output
    nothing is compared with would otherwise pass unseen."""
    compared = [n for n in output_names if any(n in e for e in expected.values())]
    data = {"matched": how, "compared": compared, "onnx_outputs": list(output_names),
            "not_compared": unmatched_onnx, "reference_only": unmatched_ref}
    if not unmatched_onnx and not unmatched_ref:
        return Check("parity_outputs", True, f"{len(compared)} model output(s) paired with the PyTorch reference's "
                     f"outputs {how}: {', '.join(compared)}", category=CATEGORY, data=data)
    parts = []
    if unmatched_onnx:
        parts.append(f"model output(s) {', '.join(repr(n) for n in unmatched_onnx)} have no reference output and "
                     "were not compared")
    if unmatched_ref:
        parts.append(f"reference output(s) {', '.join(unmatched_ref)} have no model output")
    n_ref = len(compared) + len(unmatched_ref)
    detail = (f"the PyTorch reference returns {n_ref} output(s), the model has {len(output_names)}, paired {how}: "
              + "; ".join(parts))
    return Check("parity_outputs", False, detail, category=CATEGORY, data=data,
                 fix="export the model from this reference, so its outputs are the reference's, or compare with "
                     "the reference the model came from (--block, --config, --model)")


# --------------------------------------------------------------------------------------------- TensorRT
def profile_covering(inputs, feeds):
    """One optimization profile spanning every feed's shapes (min/max per dim, opt from the first feed)."""
    from deploykit.trt.profiles import ShapeRange

    profile = {}
    for t in inputs:
        shapes = [f.arrays[t.name].shape for f in feeds]
        lo = tuple(min(s[i] for s in shapes) for i in range(len(shapes[0])))
        hi = tuple(max(s[i] for s in shapes) for i in range(len(shapes[0])))
        profile[t.name] = ShapeRange(lo, tuple(shapes[0]), hi)
    return profile


def trt_outputs(path: Path, inputs, feeds, trt, profiles=None) -> tuple[dict | None, list[Check]]:
    """Build an engine with the installed TensorRT and run every feed; (outputs by feed name, checks)."""
    from deploykit.backends.trt import TrtRunner
    from deploykit.errors import CheckFailed
    from deploykit.trt import capabilities
    from deploykit.trt.builder import build_serialized, decide_precision
    from deploykit.trt.onnx_info import summarize

    caps = capabilities.detect(trt)
    summary = summarize(path)
    profile = profile_covering(inputs, feeds)
    chosen = [p for p in (profiles or []) if all(p[t.name].contains(f.arrays[t.name].shape)
                                                 for t in inputs for f in feeds)]
    try:
        plan = decide_precision(summary, None, caps)
        built = build_serialized(trt, summary, chosen[:1] or [profile], plan, caps)
    except CheckFailed as exc:
        issues = [str(i) for i in getattr(exc, "issues", [])]
        return None, [Check("tensorrt_build", False, exc.one_line(), category=CATEGORY, data={"issues": issues},
                            fix="the TensorRT audit above lists what the parser supports; fix those findings first")]
    out = {}
    with TrtRunner(built.plan, trt=trt) as runner:
        for feed in feeds:
            out[feed.name] = runner.infer(feed.arrays)
    return out, [Check("tensorrt_build", True, f"TensorRT {caps.version}: {plan.precision} engine built in "
                                              f"{built.seconds:.1f} s", category=CATEGORY)]
