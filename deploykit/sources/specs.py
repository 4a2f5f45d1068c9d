"""Named model inputs (dtype, per-dimension ranges), the shapes they are verified at, and seeded feeds.

No torch import: the specs are parsed by the CLI and the config before any model is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from deploykit.errors import UserInputError

DTYPES = ("float32", "float16", "int64", "int32", "bool")
FLOAT_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Dim:
    """One dimension: `opt` is the export (and tuning) size; lo < hi makes it dynamic."""

    opt: int
    lo: int
    hi: int

    @classmethod
    def fixed(cls, size: int) -> "Dim":
        return cls(size, size, size)

    @property
    def dynamic(self) -> bool:
        return self.lo != self.hi

    def odd(self) -> int:
        """An odd size inside the range other than min, opt and max where one exists (odd and non-square paths)."""
        for c in (self.opt + 1, self.opt - 1, self.opt + 3, self.opt - 3, self.lo + 1, self.hi - 1):
            if self.lo <= c <= self.hi and c % 2 == 1:
                return c
        return self.opt


@dataclass(frozen=True)
class TensorInput:
    """A named model input. `low`/`high` bound the seeded values of integer inputs (indices, token ids)."""

    name: str
    dtype: str
    dims: tuple[Dim, ...]
    low: int = 0
    high: int = 2

    def shape(self, pick: str) -> tuple[int, ...]:
        """The shape at 'min', 'opt', 'max' or 'odd' for every dynamic dimension."""
        return tuple({"min": d.lo, "opt": d.opt, "max": d.hi, "odd": d.odd()}[pick] for d in self.dims)

    @property
    def dynamic_axes(self) -> dict[int, tuple[int, int]]:
        return {i: (d.lo, d.hi) for i, d in enumerate(self.dims) if d.dynamic}

    def as_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": [d.opt for d in self.dims],
                "min": [d.lo for d in self.dims], "max": [d.hi for d in self.dims],
                **({"low": self.low, "high": self.high} if self.dtype not in FLOAT_DTYPES else {})}


# A verification point: one shape per input name.
Point = dict[str, tuple[int, ...]]


def verification_points(inputs: list[TensorInput]) -> list[Point]:
    """opt, then min, max and an odd size, each taken by every dynamic dimension at once.

    Not the product of every dimension's sizes, which explodes with several inputs (three dynamic dims on
    two inputs would be 4**6 points): moving all dimensions together still reaches every extreme of every
    dimension and keeps dimensions that the model requires equal (an image and its mask) equal.
    """
    seen, points = set(), []
    for pick in ("opt", "min", "max", "odd"):
        point = {t.name: t.shape(pick) for t in inputs}
        key = tuple(point.values())
        if key not in seen:
            seen.add(key)
            points.append(point)
    return points


ALIGNMENTS = (2, 4, 8, 16, 32, 64)


def aligned_odd_point(inputs: list[TensorInput], align: int) -> Point | None:
    """The odd point for a model that takes only multiples of `align` in its non-batch dynamic dims: each such
    dim at an odd multiple of `align` (not a power-of-two-friendly size) other than min/opt/max where possible;
    the batch (axis 0) stays at its odd size. None where no dim has such a size in its range."""
    point, moved = {}, False
    for t in inputs:
        shape = []
        for axis, d in enumerate(t.dims):
            if axis == 0 or not d.dynamic:
                shape.append(d.odd() if axis == 0 else d.opt)
                continue
            sizes = [s for s in range(d.lo, d.hi + 1) if s % align == 0 and (s // align) % 2 == 1]
            fresh = [s for s in sizes if s not in (d.lo, d.opt, d.hi)] or sizes
            pick = min(fresh, key=lambda s: abs(s - d.opt)) if fresh else d.opt
            moved |= pick != d.opt
            shape.append(pick)
        point[t.name] = tuple(shape)
    return point if moved else None


def point_label(point: Point) -> str:
    return ", ".join(f"{n} {'x'.join(map(str, s))}" for n, s in point.items())


def make_feed(inputs: list[TensorInput], point: Point, seed: int) -> dict:
    """Seeded values for every input at `point`: standard normal floats, integers in [low, high), random bools."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feed = {}
    for t in inputs:
        shape = point[t.name]
        if t.dtype in FLOAT_DTYPES:
            feed[t.name] = rng.standard_normal(shape, dtype=np.float32).astype(t.dtype)
        elif t.dtype == "bool":
            feed[t.name] = rng.random(shape) < 0.5
        else:
            feed[t.name] = rng.integers(t.low, t.high, size=shape, dtype=t.dtype)
    return feed


# --- the CLI's forms ------------------------------------------------------------------------------------------

_INPUT = re.compile(r"^(?P<name>[A-Za-z_][\w.\-]*):(?P<shape>\d+(?:x\d+)*)(?::(?P<dtype>\w+))?"
                    r"(?::(?P<low>-?\d+)\.\.(?P<high>-?\d+))?$")


@dataclass
class InputFlag:
    name: str
    shape: list[int]
    dtype: str = "float32"
    dynamic: dict[int, dict] = field(default_factory=dict)   # axis -> {"min":, "opt":, "max":}
    values: tuple[int, int] | None = None                    # integer inputs: seeded values in [low, high)


def parse_input_flag(value: str) -> InputFlag:
    """`images:1x3x640x640`, `ids:1x16:int64` or `ids:1x16:int64:0..30522` (integer values in [0, 30522))."""
    m = _INPUT.match(value.strip())
    if not m:
        raise UserInputError(f"--input {value!r} is not NAME:DIMxDIM[:DTYPE]",
                             hint="e.g. --input images:1x3x640x640 or --input ids:1x16:int64:0..1000")
    dtype = m["dtype"] or "float32"
    if dtype not in DTYPES:
        raise UserInputError(f"--input {value!r}: unknown dtype {dtype!r}", hint=f"use one of {', '.join(DTYPES)}")
    shape = [int(d) for d in m["shape"].split("x")]
    if min(shape) <= 0:
        raise UserInputError(f"--input {value!r} has a zero size", hint="give every dimension a positive size")
    values = None
    if m["low"] is not None:
        values = (int(m["low"]), int(m["high"]))
        if dtype in FLOAT_DTYPES or values[1] <= values[0]:
            raise UserInputError(f"--input {value!r}: LOW..HIGH bounds the values of an integer input, HIGH > LOW",
                                 hint="e.g. --input labels:2:int64:0..10")
    return InputFlag(m["name"], shape, dtype, values=values)


def parse_dynamic_flag(value: str, inputs: dict[str, InputFlag]) -> None:
    """`images:0,2,3` (each axis from half to twice its size; batch from 1) or `images:0=1:8:32,2=320:640:1280`."""
    name, _, axes = value.partition(":")
    hint = "e.g. --dynamic images:0,2,3 or --dynamic images:0=1:4:16,2=320:640:1280"
    if name not in inputs:
        known = ", ".join(inputs) or "none"
        raise UserInputError(f"--dynamic {value!r} names input {name!r}, which no --input declares; declared: {known}",
                             hint="declare it with --input first")
    spec = inputs[name]
    for part in filter(None, axes.split(",")):
        axis_text, _, rng = part.partition("=")
        try:
            axis = int(axis_text)
            lo_opt_hi = [int(v) for v in rng.split(":")] if rng else None
        except ValueError:
            raise UserInputError(f"--dynamic {value!r}: {part!r} is not AXIS or AXIS=MIN:OPT:MAX", hint=hint) from None
        if not 0 <= axis < len(spec.shape):
            raise UserInputError(f"--dynamic {value!r}: axis {axis} is outside input {name!r} of rank {len(spec.shape)}",
                                 hint=f"use axes 0..{len(spec.shape) - 1}")
        size = spec.shape[axis]
        if lo_opt_hi is None:
            lo_opt_hi = [1, size, max(size * 2, 2)] if axis == 0 else [max(1, size // 2), size, size * 2]
        if len(lo_opt_hi) != 3 or not 0 < lo_opt_hi[0] <= lo_opt_hi[1] <= lo_opt_hi[2]:
            raise UserInputError(f"--dynamic {value!r}: {part!r} needs 0 < MIN <= OPT <= MAX", hint=hint)
        spec.shape[axis] = lo_opt_hi[1]
        spec.dynamic[axis] = {"min": lo_opt_hi[0], "opt": lo_opt_hi[1], "max": lo_opt_hi[2]}
    if not axes:
        raise UserInputError(f"--dynamic {value!r} names no axis", hint=hint)


def flags_to_config(flags: list[InputFlag]) -> list[dict]:
    """The config's `inputs:` form of the --input/--dynamic flags."""
    return [{"name": f.name, "dtype": f.dtype, "shape": [f.dynamic.get(i, size) for i, size in enumerate(f.shape)],
             **({"low": f.values[0], "high": f.values[1]} if f.values else {})} for f in flags]
