"""The user's own model: `--module PKG.MOD:CALLABLE` / `file.py:CALLABLE`, or a live module from Python.

The reference is the model as written, with the user's weights (or seeded random ones, said loudly). The module
to export is, by default, the same model with every recognised attention block swapped for its export-safe
twin by `make_export_safe` (each swap proved equal first); `rewrite: false` / `--no-rewrite` exports it as
written. Both return their outputs as a flat tuple (see deploykit.sources.outputs).
"""

from __future__ import annotations

import inspect

from deploykit.errors import UserInputError
from deploykit.sources import ModelSource
from deploykit.sources.specs import Dim, TensorInput, verification_points


def tensor_inputs(config) -> list[TensorInput]:
    out = []
    for spec in config.inputs:
        dims = tuple(Dim.fixed(d) if isinstance(d, int) else Dim(d.opt, d.lo, d.hi) for d in spec.shape)
        out.append(TensorInput(spec.name, spec.dtype, dims, spec.low, spec.high))
    return out


def build(config) -> ModelSource:
    from deploykit.sources.user_code import construct

    src = config.source
    model = construct(src.module, dict(src.args))
    return from_module(config, model, label=src.module, rebuild={"kind": "module", "module": src.module,
                                                                 "args": dict(src.args)})


def from_module(config, model, *, label: str, rebuild: dict | None = None, inputs: list[TensorInput] | None = None,
                weights: dict | None = None, kind: str = "module") -> ModelSource:
    """A ModelSource for a constructed module (the CLI's import, `deploykit.export(model)` in Python, or a
    saved program's module with its own `weights` report)."""
    from deploykit.sources.outputs import flat_outputs
    from deploykit.sources.weights import load_into

    inputs = inputs or tensor_inputs(config)
    check_forward(model, [t.name for t in inputs])
    if weights is None:
        weights = load_into(model, config.source.weights, config.seed)
    if kind != "program":   # a saved program's module is in the mode it was saved in and refuses eval()
        model.eval()
    example = example_inputs(inputs)
    output_names, probed = probe_outputs(model, example, config.output_name, [t.name for t in inputs])
    reference = flat_outputs(model, len(inputs))
    exported, conversion = reference, None
    if kind == "module" and config.rewrite and config.source.variant == "safe":
        exported, conversion = rewrite(model, probed, example, config)
    rebuild = {**(rebuild or {"kind": "live", "class": f"{type(model).__module__}.{type(model).__qualname__}"}),
               "weights": {k: weights.get(k) for k in ("path", "sha256")} if weights.get("path") else None,
               "seed": config.seed, "rewrite": config.rewrite}
    return ModelSource(kind, label, exported, reference, inputs, output_names, verification_points(inputs),
                       weights, rebuild, conversion=conversion)


def check_forward(model, names: list[str]) -> None:
    """The declared inputs fill forward's positional parameters: all required ones, no more than it takes."""
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    varargs = any(p.kind == p.VAR_POSITIONAL for p in params)
    shown = f"forward({', '.join(p.name for p in params)})"
    if len(names) < len(required) or (not varargs and len(names) > len(positional)):
        raise UserInputError(f"the inputs {names} do not match {type(model).__name__}.{shown}: it takes "
                             f"{len(required)}{'' if varargs or len(positional) == len(required) else '-' + str(len(positional))} "
                             f"tensor{'s' if len(positional) != 1 else ''}",
                             hint="declare one --input (or inputs: entry) per forward argument, in order")


def example_inputs(inputs: list[TensorInput]) -> tuple:
    """Seeded tensors at the export size. torch.export specialises dims of size 1, so a dynamic dim of size 1
    is traced at 2 where its range allows."""
    import torch

    from deploykit.sources.specs import make_feed

    point = {t.name: tuple(2 if d.dynamic and d.opt == 1 and d.hi >= 2 else d.opt for d in t.dims) for t in inputs}
    feed = make_feed(inputs, point, seed=12345)
    return tuple(torch.from_numpy(feed[t.name]) for t in inputs)


def probe_outputs(model, example: tuple, single_name: str, input_names: list[str]) -> tuple[list[str], list]:
    """Run the model once on the example: its output names and flat outputs, or a clear error when it rejects
    the inputs."""
    import torch

    from deploykit.sources.outputs import flatten
    from deploykit.sources.user_code import user_failure

    try:
        with torch.inference_mode():
            out = model(*example)
    except Exception as exc:  # noqa: BLE001 - the declared inputs do not fit the model
        shapes = ", ".join(f"{n} {list(x.shape)} {str(x.dtype).removeprefix('torch.')}"
                           for n, x in zip(input_names, example))
        raise user_failure(f"the model on the declared inputs ({shapes})", exc,
                           hint="check --input names, shapes and dtypes against forward") from None
    flat = flatten(out, single_name)
    names = [n for n, _ in flat]
    clash = sorted(set(names) & set(input_names))
    if clash:
        raise UserInputError(f"output name(s) {clash} are also input names",
                             hint="rename the inputs (--input) or, for a single output, set output_name")
    if len(set(names)) != len(names):
        raise UserInputError(f"the model's outputs flatten to repeated names {names}",
                             hint="return a dict with distinct keys")
    return names, [t for _, t in flat]


def rewrite(model, before: list, example: tuple, config):
    """The export-safe twin of `model` (flat outputs) and the conversion report; the model itself (flat outputs)
    where the rewritten one does not reproduce `before`, its outputs on `example`."""
    import torch

    from deploykit.networks.convert import make_export_safe
    from deploykit.sources.outputs import flat_outputs

    safe, report = make_export_safe(model, None, seed=config.seed)
    info = report.as_dict()
    info["summary"] = report.summary()
    reference = flat_outputs(model, len(example))
    if not report.replaced:
        info["used"] = False
        info["why"] = "nothing was swapped"
        return reference, info
    twin = flat_outputs(safe, len(example))
    with torch.inference_mode():
        after = twin(*example)
    worst = max((float((a.double() - b.double()).abs().max()) if a.numel() else 0.0)
                for a, b in zip(before, after))
    scale = max(float(b.double().abs().max()) if b.numel() else 0.0 for b in before)
    tol = config.tolerances["fp32"]
    info["model_check"] = {"max_abs": worst, "input_shapes": [list(x.shape) for x in example]}
    if not worst <= tol.atol + tol.rtol * scale:
        info["used"] = False
        info["why"] = f"the rewritten model differs from the model as written (max abs {worst:.2e}); exported it as written"
        return reference, info
    info["used"] = True
    return twin, info
