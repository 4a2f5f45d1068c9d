"""Optimization profiles: the min/opt/max shape of every input that an engine accepts.

Where they come from, first match wins:

1. `--profile NAME:MIN:OPT:MAX` flags, shapes written `1x64x56x56`. `MIN:OPT:MAX` alone names the only
   input of a single-input model. Flags fill one profile until an input name repeats, which starts the
   next, so `--profile x:1x3x8x8:1x3x8x8:4x3x8x8 --profile x:8x3x8x8:16x3x8x8:32x3x8x8` is two profiles.
2. The export sidecar `deploykit.json` next to the ONNX file, read defensively:
   - `profiles` (top level or under `config`): a list of `{input: {"min": [...], "opt": [...], "max": [...]}}`,
     or `profile`: one such mapping (what `deploykit export` writes);
   - otherwise ranges in `config.input` or `config` (or in each entry of `profiles`), keyed by the graph's
     dim names (`"batch"`, `"height"`, ...) or by role: `batch` for dim 0, `height`/`width` (or `spatial`
     for both) for the last two dims of a 4-D input. A range is `{"min", "opt", "max"}` (a missing bound
     falls back to opt, a missing opt to max), `[min, opt, max]`, `[min, max]` or one int; flat keys
     `batch_min`/`min_batch` also work.
3. The graph itself when every input is static (min = opt = max).

Dims that are static in the graph stay as the graph has them; every dynamic dim needs a range, or the build
stops with an error that shows a `--profile` to pass.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.repository import MANIFEST_NAME
from deploykit.trt.onnx_info import GraphTensor

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ShapeRange:
    """min <= opt <= max, dim by dim."""

    min: Shape
    opt: Shape
    max: Shape

    def contains(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.min) and all(lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max))

    def as_dict(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    def __str__(self) -> str:
        return ":".join(format_shape(s) for s in (self.min, self.opt, self.max))


# One optimization profile: input name -> range, in the graph's input order.
Profile = dict[str, ShapeRange]


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape)


def parse_shape(text: str, *, what: str = "shape") -> Shape:
    """`1x64x56x56` -> (1, 64, 56, 56)."""
    parts = text.strip().lower().split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise UserInputError(f"invalid {what} '{text}'",
                             hint="write shapes as sizes joined by 'x', like 1x64x56x56") from None
    if any(d < 0 for d in dims):
        raise UserInputError(f"invalid {what} '{text}': sizes cannot be negative", hint="pass sizes of 0 or more")
    return dims


def parse_profile_flags(flags: Iterable[str], inputs: Sequence[GraphTensor]) -> list[dict[str, ShapeRange]]:
    """Group `--profile` flags into profiles (a new profile starts when an input name repeats)."""
    profiles: list[dict[str, ShapeRange]] = []
    current: dict[str, ShapeRange] = {}
    for number, flag in enumerate(flags, 1):
        parts = flag.rsplit(":", 3)  # rsplit so tensor names may contain ':'
        if len(parts) == 3 and len(inputs) == 1:
            name, shapes = inputs[0].name, parts
        elif len(parts) == 4:
            name, shapes = parts[0], parts[1:]
        else:
            raise UserInputError(
                f"invalid --profile '{flag}'",
                hint="use NAME:MIN:OPT:MAX with shapes like 1x3x224x224 (MIN:OPT:MAX alone for a single-input model)",
            )
        mn, opt, mx = (parse_shape(s, what=f"shape in --profile #{number}") for s in shapes)
        if name in current:
            profiles.append(current)
            current = {}
        current[name] = ShapeRange(mn, opt, mx)
    if current:
        profiles.append(current)
    return profiles


def read_sidecar(onnx_path: str | Path) -> tuple[dict | None, str | None]:
    """The export sidecar beside the ONNX file: (content, None); (None, None) if absent; (None, why) if unreadable."""
    path = Path(onnx_path).parent / MANIFEST_NAME
    if not path.is_file():
        return None, None
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{path} is unreadable ({exc.__class__.__name__}: {exc}); its ranges were not used"
    if not isinstance(content, dict):
        return None, f"{path} is not a JSON object; its ranges were not used"
    return content, None


def _as_range(value) -> tuple[int, int, int] | None:
    """A range in any of the accepted spellings -> (min, opt, max); None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value, value, value
    if isinstance(value, dict):
        lo, opt, hi = (value.get(k) if isinstance(value.get(k), int) else None for k in ("min", "opt", "max"))
        if lo is None and opt is None and hi is None:
            return None
        # A missing bound falls back to opt (export's "opt is the export size, min/max make it dynamic"),
        # a missing opt to max.
        lo = lo if lo is not None else opt if opt is not None else hi
        hi = hi if hi is not None else opt if opt is not None else lo
        return lo, (opt if opt is not None else hi), hi
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        if len(value) == 3:
            return tuple(value)  # type: ignore[return-value]
        if len(value) == 2:
            return value[0], value[1], value[1]
    return None


def _lookup_range(config: dict, key: str) -> tuple[int, int, int] | None:
    # deploykit's export config keeps the ranges under "input"; other layouts keep them at the top.
    nested = config.get("input")
    for where in ((nested,) if isinstance(nested, dict) else ()) + (config,):
        if key in where:
            found = _as_range(where[key])
            if found is not None:
                return found
    flat = {}
    for bound in ("min", "opt", "max"):
        for spelled in (f"{key}_{bound}", f"{bound}_{key}"):
            if isinstance(config.get(spelled), int):
                flat[bound] = config[spelled]
    if "min" in flat and "max" in flat:
        return flat["min"], flat.get("opt", flat["max"]), flat["max"]
    return None


def _roles(tensor: GraphTensor, axis: int) -> list[str]:
    """Config keys that may hold the range of one dim, most specific first."""
    keys = [tensor.dim_names[axis]] if tensor.dim_names[axis] else []
    rank = len(tensor.dims)
    if axis == 0:
        keys.append("batch")
    if rank == 4 and axis == 2:
        keys += ["height", "spatial"]
    if rank == 4 and axis == 3:
        keys += ["width", "spatial"]
    return keys


def _profile_from_ranges(config: dict, inputs: Sequence[GraphTensor], where: str) -> dict[str, ShapeRange]:
    profile = {}
    for tensor in inputs:
        if not tensor.dynamic:
            continue
        lo, opt, hi = list(tensor.dims), list(tensor.dims), list(tensor.dims)
        for axis, size in enumerate(tensor.dims):
            if size >= 0:
                continue
            found = next((r for r in (_lookup_range(config, k) for k in _roles(tensor, axis)) if r), None)
            if found is None:
                raise UserInputError(
                    f"{where} gives no range for dim {axis} of input {tensor.describe()}",
                    hint=f"add one there, or pass {example_flag(tensor)}",
                )
            lo[axis], opt[axis], hi[axis] = found
        profile[tensor.name] = ShapeRange(tuple(lo), tuple(opt), tuple(hi))
    return profile


def _explicit_range(entry: dict, where: str) -> ShapeRange:
    """{"min": [...], "opt": [...], "max": [...]} with whole shapes; `opt` defaults to `max`."""
    try:
        shapes = [tuple(int(d) for d in entry[k]) for k in ("min", "opt" if "opt" in entry else "max", "max")]
    except (KeyError, TypeError, ValueError):
        raise UserInputError(f"{where} is not a {{min, opt, max}} shape range: {entry!r}",
                             hint="give each input a {min, opt, max} mapping of shapes") from None
    return ShapeRange(*shapes)


def profiles_from_sidecar(sidecar: dict, inputs: Sequence[GraphTensor],
                          where: str = MANIFEST_NAME) -> list[dict[str, ShapeRange]] | None:
    """Profiles written or implied by the export sidecar; None when it holds nothing usable."""
    config = sidecar.get("config") if isinstance(sidecar.get("config"), dict) else {}
    explicit = sidecar.get("profiles", config.get("profiles"))
    single = sidecar.get("profile", config.get("profile"))
    if not (isinstance(explicit, list) and explicit) and isinstance(single, dict) and single:
        explicit = [single]
    if isinstance(explicit, list) and explicit:
        profiles = []
        for number, entry in enumerate(explicit):
            if not isinstance(entry, dict):
                raise UserInputError(f"{where}: profiles[{number}] is not an object",
                                     hint="write each profile as a mapping of input names to shape ranges")
            names = {t.name for t in inputs}
            if entry and set(entry) <= names and all(isinstance(v, dict) and "min" in v for v in entry.values()):
                profiles.append({name: _explicit_range(r, f"{where} profiles[{number}].{name}")
                                 for name, r in entry.items()})
            else:  # a profile written as named ranges ({"batch": [1, 8, 32], ...})
                profiles.append(_profile_from_ranges(entry, inputs, f"{where} profiles[{number}]"))
        return profiles
    if not config or not any(t.dynamic for t in inputs):
        return None
    return [_profile_from_ranges(config, inputs, f"{where} config")]


def example_flag(tensor: GraphTensor) -> str:
    """A --profile flag for `tensor` that a user can edit: dynamic dims shown as 1, 8, 32."""
    def fill(value: int) -> str:
        return format_shape([d if d >= 0 else value for d in tensor.dims])

    return f"--profile {tensor.name}:{fill(1)}:{fill(8)}:{fill(32)}"


def complete(profile: dict[str, ShapeRange], inputs: Sequence[GraphTensor], where: str) -> Profile:
    """Check one profile against the graph and add the static inputs it leaves out."""
    names = [t.name for t in inputs]
    for name in profile:
        if name not in names:
            raise UserInputError(f"{where} names input '{name}', which the graph does not have",
                                 hint=f"graph inputs: {', '.join(names)}")
    done: Profile = {}
    for tensor in inputs:
        given = profile.get(tensor.name)
        if given is None:
            if tensor.dynamic:
                raise UserInputError(f"{where} gives no shapes for dynamic input {tensor.describe()}",
                                     hint=f"pass {example_flag(tensor)}")
            done[tensor.name] = ShapeRange(tensor.dims, tensor.dims, tensor.dims)
            continue
        for label, shape in (("min", given.min), ("opt", given.opt), ("max", given.max)):
            if len(shape) != len(tensor.dims):
                raise UserInputError(f"{where}: {label} shape {format_shape(shape)} of '{tensor.name}' has rank "
                                     f"{len(shape)}, the graph's input {tensor.describe()} has rank {len(tensor.dims)}",
                                     hint="give the shape as many dims as the graph's input")
            for axis, (size, fixed) in enumerate(zip(shape, tensor.dims)):
                if fixed >= 0 and size != fixed:
                    raise UserInputError(f"{where}: {label} shape {format_shape(shape)} of '{tensor.name}' sets dim "
                                         f"{axis} to {size}, but the graph fixes it at {fixed}: {tensor.describe()}",
                                         hint="keep the graph's fixed dims in every profile shape")
        if not all(lo <= o <= hi for lo, o, hi in zip(given.min, given.opt, given.max)):
            raise UserInputError(f"{where}: '{tensor.name}' needs min <= opt <= max in every dim, got {given}",
                                 hint="order the shapes so min <= opt <= max")
        done[tensor.name] = given
    return done


def resolve(inputs: Sequence[GraphTensor], flags: Sequence[str] = (),
            sidecar: dict | None = None) -> tuple[list[Profile], str]:
    """The build's profiles and where they came from ("flags", "sidecar" or "static").

    Raises:
        UserInputError: a flag or the sidecar is malformed or disagrees with the graph, or a dynamic input has
            no range anywhere.
    """
    if flags:
        raw, source = parse_profile_flags(flags, inputs), "flags"
    else:
        raw = profiles_from_sidecar(sidecar, inputs) if sidecar else None
        source = "sidecar"
        if raw is None:
            dynamic = [t for t in inputs if t.dynamic]
            if dynamic:
                raise UserInputError(
                    f"input {dynamic[0].describe()} has dynamic dims and no optimization profile was given",
                    hint=f"pass {example_flag(dynamic[0])}, or build a model exported by deploykit "
                         f"(its {MANIFEST_NAME} carries the ranges)",
                )
            raw, source = [{}], "static"
    where = "--profile" if source == "flags" else MANIFEST_NAME if source == "sidecar" else "the graph"
    profiles = [complete(p, inputs, f"{where} (profile {i})") for i, p in enumerate(raw)]
    return profiles, source


def profile_as_dict(profile: Profile) -> dict:
    return {name: r.as_dict() for name, r in profile.items()}
