"""Model outputs of any structure as a flat list of named tensors.

A tensor is one output; tuples and lists number their items, named tuples and dicts keep their field names,
nested structures join the path with dots: `{"boxes": t, "aux": (a, b)}` gives `boxes`, `aux.0`, `aux.1`, and a
top-level tuple `(a, (b, c))` gives `out.0`, `out.1.0`, `out.1.1`. The flattening runs inside `FlatOutputs`,
so both exporters see a plain tuple and the ONNX outputs carry these names in this order.
"""

from __future__ import annotations

from deploykit.errors import UserInputError


def flatten(value, single_name: str = "output", prefix: str = "") -> list[tuple[str, object]]:
    """[(name, tensor)] in a stable order (dicts in insertion order, as Python and torch.export keep them)."""
    import torch

    if isinstance(value, torch.Tensor):
        return [(prefix or single_name, value)]
    if isinstance(value, dict):
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise UserInputError(f"the model returns a dict with non-string keys: {', '.join(map(repr, bad[:3]))}",
                                 hint="return a dict with string keys: they become the output names")
        items = list(value.items())
    elif isinstance(value, (tuple, list)):
        fields = getattr(value, "_fields", None)   # a NamedTuple keeps its field names
        items = list(zip(fields, value)) if fields else [(str(i), v) for i, v in enumerate(value)]
        if not prefix and not fields:
            prefix = "out"
    else:
        raise UserInputError(f"the model returns a {type(value).__name__}{' at ' + repr(prefix) if prefix else ''}, "
                             "not a tensor", hint="return tensors, or tuples, lists or dicts of tensors")
    out = []
    for key, item in items:
        out += flatten(item, single_name, f"{prefix}.{key}" if prefix else key)
    return out


_BASE = None


def flat_outputs(module, arity: int):
    """`module` wrapped so that it returns a flat tuple of tensors; its forward takes exactly `arity`
    positional tensors (torch.export matches dynamic shapes against forward's signature, not `*args`)."""
    import inspect

    import torch

    global _BASE
    if _BASE is None:
        class FlatOutputs(torch.nn.Module):
            """The wrapped module's outputs as a flat tuple of tensors (see the module docstring)."""

            def __init__(self, wrapped):
                super().__init__()
                self.module = wrapped

        _BASE = FlatOutputs

    def forward(self, *args):
        return tuple(t for _, t in flatten(self.module(*args)))

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    forward.__signature__ = inspect.Signature(
        [inspect.Parameter("self", kind)] + [inspect.Parameter(f"input_{i}", kind) for i in range(arity)])
    cls = type("FlatOutputs", (_BASE,), {"forward": forward, "__module__": __name__})
    wrapper = cls(module)
    wrapper.training = False   # not .eval(): a saved program's module refuses train/eval switches
    if not getattr(module, "_deploykit_no_eval", False):
        module.eval()
    return wrapper


def torch_outputs(module, feed: dict, input_names: list[str], output_names: list[str]) -> dict:
    """The module's outputs on a numpy feed, by output name (floats as float32, as the comparisons take them)."""
    import torch

    with torch.inference_mode():
        out = module(*(torch.from_numpy(feed[n]) for n in input_names))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {name: (o.float() if o.is_floating_point() else o).numpy() for name, o in zip(output_names, outs)}
