"""Loading the authors' checkpoints into deploykit modules, from local files only.

Handles what real checkpoints carry: a nested dict (`state_dict`, `model`, `state_dict_ema`, `net`), the
`module.` prefix of DataParallel, and the alternative key layouts a block module declares in its
`KEY_CONVERTERS` (functions state -> state, or None where the layout does not apply). `torch.load` runs with
`weights_only=True`: a checkpoint cannot execute code.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from deploykit.errors import UserInputError

NESTED_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema", "ema", "net", "params")
Converter = Callable[[dict], "dict | None"]


@dataclass
class LoadReport:
    source: str
    converted_by: list[str] = field(default_factory=list)
    stripped_prefix: str | None = None
    nested_key: str | None = None


def read_state_dict(source) -> tuple[dict, LoadReport]:
    """A flat tensor dict from a path or a (possibly nested) mapping."""
    import torch

    report = LoadReport(source=str(source) if not isinstance(source, Mapping) else "<state dict>")
    if not isinstance(source, Mapping):
        path = Path(source)
        if not path.is_file():
            raise UserInputError(f"checkpoint '{path}' does not exist", hint="pass the path of a local .pth/.pt file")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
            raise UserInputError(
                f"cannot read checkpoint '{path}': {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                hint="pass a PyTorch state dict saved with torch.save; pickled code is refused (weights_only=True)",
            ) from None
    if not isinstance(source, Mapping):  # e.g. a saved list or a bare tensor
        raise UserInputError(f"checkpoint '{report.source}' holds a {type(source).__name__}, not a state dict",
                             hint="save the model's weights with torch.save(model.state_dict(), path)")
    state = dict(source)
    for key in NESTED_KEYS:
        if key in state and isinstance(state[key], Mapping):
            state = dict(state[key])
            report.nested_key = key
            break
    state = {k: v for k, v in state.items() if hasattr(v, "shape")}
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            report.stripped_prefix = prefix
            break
    return state, report


def module_converters(module) -> tuple[Converter, ...]:
    """The KEY_CONVERTERS declared by the module that defines type(module)."""
    return tuple(getattr(sys.modules.get(type(module).__module__), "KEY_CONVERTERS", ()))


def load_checkpoint(module, source, *, strict: bool = True,
                    converters: tuple[Converter, ...] | None = None) -> LoadReport:
    """Load `source` into `module`, mapping known alternative layouts; mismatches list the keys.

    Raises:
        UserInputError: unreadable file, or keys/shapes that do not match (listing missing and unexpected keys).
    """
    state, report = read_state_dict(source)
    expected = module.state_dict()
    if set(state) != set(expected):
        for convert in converters if converters is not None else module_converters(module):
            mapped = convert(state)
            if mapped is not None:
                state = mapped
                report.converted_by.append(convert.__name__)
                break
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if strict and (missing or unexpected):
        raise UserInputError(
            f"checkpoint keys do not match {type(module).__name__}: missing {_short(missing)}, "
            f"unexpected {_short(unexpected)}",
            hint="check the block's constructor arguments (channels, heads, reduction) match the checkpoint",
        )
    bad_shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                  for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if bad_shapes:
        raise UserInputError(f"checkpoint shapes do not match: {_short(bad_shapes)}",
                             hint="construct the block with the checkpoint's arguments")
    module.load_state_dict(state, strict=strict)
    return report


def _short(items: list[str], n: int = 6) -> str:
    if not items:
        return "none"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return "[" + ", ".join(items[:n]) + "]" + more
