"""A saved torch.export program (`--program model.pt2`): no user code runs at export time.

The program carries its weights and, usually, its dynamic dims and their ranges; the inputs are read from
it unless the config (`inputs:`) or `--input` gives them. It is exported as saved: the export-safe rewrite
needs the model's modules, which a program no longer has.
"""

from __future__ import annotations

from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.sources import ModelSource
from deploykit.sources.specs import DTYPES, Dim, TensorInput


def load(path: str):
    import torch

    file = Path(path)
    if not file.is_file():
        raise UserInputError(f"saved program '{path}' does not exist", hint="pass a .pt2 written by torch.export.save")
    try:
        return torch.export.load(str(file))
    except Exception as exc:  # noqa: BLE001 - another torch's format, a truncated or foreign file
        from deploykit.sources.user_code import debug_enabled

        if debug_enabled():
            import traceback

            traceback.print_exc()
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UserInputError(f"cannot load saved program '{path}': {type(exc).__name__}{': ' + first if first else ''}",
                             hint=f"save it again with torch.export.save under torch {torch.__version__}, the "
                                  "version deploykit runs (programs are not portable across torch versions)") from None


def program_inputs(program) -> list[TensorInput]:
    """Names, dtypes and dim ranges of the program's user inputs; the export size from its example inputs."""
    user = set(program.graph_signature.user_inputs)
    examples = list((getattr(program, "example_inputs", None) or ((), {}))[0])
    out = []
    for node in (n for n in program.graph.nodes if n.op == "placeholder" and n.name in user):
        val = node.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise UserInputError(f"saved program input '{node.name}' is not a tensor",
                                 hint="export a program whose inputs are all tensors")
        dtype = str(val.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise UserInputError(f"saved program input '{node.name}' has dtype {dtype}",
                                 hint=f"deploykit takes {', '.join(DTYPES)} inputs")
        example = examples[len(out)] if len(examples) > len(out) else None
        dims = []
        for axis, size in enumerate(val.shape):
            if isinstance(size, int):
                dims.append(Dim.fixed(size))
                continue
            rng = program.range_constraints.get(size.node.expr)
            lo, hi = int(rng.lower) if rng else 1, rng.upper if rng else None
            if hi is None or not str(hi).lstrip("-").isdigit():
                raise UserInputError(f"saved program input '{node.name}' axis {axis} has no upper bound",
                                     hint="export with torch.export.Dim(..., max=N), or give inputs: with ranges")
            opt = int(example.shape[axis]) if example is not None else max(lo, min(int(hi), 2))
            dims.append(Dim(opt, max(lo, 1), int(hi)))
        out.append(TensorInput(node.name, dtype, tuple(dims)))
    return out


def build(config) -> ModelSource:
    from deploykit.repository import sha256_file
    from deploykit.sources.user_module import from_module, tensor_inputs

    program = load(config.source.program)
    inputs = tensor_inputs(config) if config.inputs else program_inputs(program)
    path = Path(config.source.program).resolve()
    weights = {"path": str(path), "sha256": sha256_file(path), "seeded_random": False,
               "note": "the weights saved in the program"}
    module = program.module()
    module._deploykit_no_eval = True
    return from_module(config, module, label=str(path), inputs=inputs, weights=weights, kind="program",
                       rebuild={"kind": "program", "program": str(path)})
