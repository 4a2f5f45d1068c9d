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
        if path.stat().st_size == 0:
            raise UserInputError(f"checkpoint '{path}' is an empty file: 0 bytes",
                                 hint="pass a PyTorch state dict saved with torch.save")
        try:
            source = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad input file
            text = str(exc)
            if "WeightsUnpickler error:" in text:   # torch's advice to load unsafely is left out on purpose
                reason = ("torch's weights_only loader refused it, as it refuses pickled code and anything but "
                          "tensors: " + first_sentences(text.split("WeightsUnpickler error:", 1)[1]))
            else:
                reason = f"{type(exc).__name__}: {first_sentences(text)}"
            raise UserInputError(
                f"cannot read checkpoint '{path}': {reason}",
                hint="pass a PyTorch state dict saved with torch.save; pickled code is refused: weights_only=True",
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
    _check_values(state, report.source)
    return state, report


def _check_values(state: dict, source: str) -> None:
    """Refuse complex tensors (loading would drop the imaginary part) and NaN or Inf weights: a model built
    from them computes nothing worth verifying, and NaN would compare equal to NaN downstream."""
    import torch

    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue
        if value.is_complex():
            raise UserInputError(f"checkpoint '{source}': tensor '{key}' is complex ({value.dtype}); a model's "
                                 "weights are real, and loading it would drop the imaginary part",
                                 hint="save the real weights the model was trained with")
        if value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            bad = value[~torch.isfinite(value)].flatten()[0].item()
            count = int((~torch.isfinite(value)).sum())
            raise UserInputError(f"checkpoint '{source}': tensor '{key}' holds {count} non-finite value(s), "
                                 f"the first {bad}; the model would output NaN or Inf",
                                 hint="pass a checkpoint with finite weights, e.g. one saved before training diverged")


def first_sentences(text: str, limit: int = 200) -> str:
    """An exception's first sentence (torch follows it with boilerplate), cut at a word, never mid-word,
    when even that is too long."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    end = line.find(". ")
    sentence = (line[:end] if end > 0 else line).rstrip(".")
    if len(sentence) <= limit:
        return sentence or "no details given"
    cut = sentence[:limit]
    return (cut[: cut.rfind(" ")] if " " in cut else cut) + " ..."


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
