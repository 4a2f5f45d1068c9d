"""The inputs validation runs the model on: seeded random tensors at several shapes, or the user's `.npz`.

Shapes come from, first match wins: --profile flags, the reference config (manifest, --block, --config:
verification_shapes, i.e. batch min/opt/max and spatial min/max/odd when dynamic), optimization profiles
(the sidecar's: each profile's min, opt and max, plus an odd size inside the ranges), the graph's static dims, or,
when only dim 0 is symbolic, batch 1 and 2. Any other symbolic dim without a range is unusable input (exit 2),
as are inputs that would need more than --max-input-mb, and `.npz` files that miss an input, carry the wrong
shape, dtype or non-finite values, or fit no optimization profile (one profile must hold all of a file's inputs).
Each `.npz` is its own run, named after the file, so files of one shape never stand in for each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploykit.errors import UserInputError

DEFAULT_MAX_INPUT_MB = 1024


@dataclass(frozen=True)
class InputInfo:
    """A graph input.

    Attributes:
        name: tensor name.
        elem_type: TensorProto element type.
        dims: sizes (int), or str / None for symbolic or unknown dims; None when the rank itself is unknown.
    """

    name: str
    elem_type: int
    dims: tuple | None

    @property
    def dtype(self) -> np.dtype | None:
        from onnx import helper

        try:
            dt = np.dtype(helper.tensor_dtype_to_np_dtype(self.elem_type))
        except Exception:  # noqa: BLE001 - bfloat16, float8... have no plain numpy type
            return None
        return None if dt == np.dtype(object) else dt

    @property
    def static(self) -> bool:
        return self.dims is not None and all(isinstance(d, int) for d in self.dims)

    def describe(self) -> str:
        shown = "?" if self.dims is None else "x".join(str(d) if d is not None else "?" for d in self.dims)
        return f"'{self.name}' ({shown}, {self.dtype or self.elem_type})"


@dataclass
class Feed:
    """One set of input arrays.

    Attributes:
        label: its shapes: "2x64x14x14" for a single input, "a=1x3,b=1x5" for several.
        arrays: input name -> array.
        source: where the shapes came from ("config", "profile", "static", "batch 1 and 2", or the .npz path).
        name: what the run is called in check names and results, unique among the feeds of one validation:
            the label for generated inputs, "FILE.npz LABEL" for an --inputs file (two files may share a shape).
    """

    label: str
    arrays: dict[str, np.ndarray]
    source: str = ""
    name: str = ""
    from_file: bool = False   # the user's own arrays (--inputs), not generated ones

    def __post_init__(self) -> None:
        if not self.name:
            self.name = self.label

    @property
    def shapes(self) -> dict[str, tuple]:
        return {k: tuple(v.shape) for k, v in self.arrays.items()}


@dataclass
class ShapePlan:
    shapes: list[dict[str, tuple]] = field(default_factory=list)
    source: str = ""


def graph_inputs(model) -> list[InputInfo]:
    """The model's real inputs (initializers excluded).

    Raises:
        UserInputError: the model has no inputs.
    """
    inits = {i.name for i in model.graph.initializer}
    out = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        ttype = vi.type.tensor_type
        dims = None
        if vi.type.HasField("tensor_type") and ttype.HasField("shape"):
            dims = tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)
                         for d in ttype.shape.dim)
        out.append(InputInfo(vi.name, ttype.elem_type, dims))
    if not out:
        raise UserInputError("the model has no inputs: there is nothing to feed it, so it cannot be validated",
                             hint="export the model with its inputs as graph inputs, not as constants")
    return out


def unique_names(feeds: list[Feed]) -> list[Feed]:
    """Make every feed's name unique ("a.npz 2x3", "a.npz 2x3 #2" when one file is passed twice), so no result
    keyed by it overwrites another."""
    seen: dict[str, int] = {}
    for feed in feeds:
        count = seen.get(feed.name, 0) + 1
        seen[feed.name] = count
        if count > 1:
            feed.name = f"{feed.name} #{count}"
    return feeds


def label_for(shapes: dict[str, tuple]) -> str:
    if len(shapes) == 1:
        return "x".join(map(str, next(iter(shapes.values()))))
    return ",".join(f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items())


def _odd_in(lo: int, hi: int, avoid: set[int]) -> int | None:
    for c in range(lo, hi + 1):
        if c % 2 == 1 and c not in avoid:
            return c
    return None


def shapes_from_profiles(inputs: list[InputInfo], profiles) -> list[dict[str, tuple]]:
    """min, opt, max of every profile, and one odd size: odd spatial dims inside their ranges, or an odd batch
    when only the batch is dynamic (when one exists)."""
    out: list[dict[str, tuple]] = []
    for profile in profiles:
        for attr in ("opt", "min", "max"):
            out.append({t.name: tuple(getattr(profile[t.name], attr)) for t in inputs})
        odd: dict[str, tuple] = {}
        changed = False
        for t in inputs:
            r = profile[t.name]
            dims = list(r.opt)
            for axis, (lo, hi) in enumerate(zip(r.min, r.max)):
                if lo == hi or axis == 0:
                    continue  # the batch axis is covered by min/opt/max; odd sizes matter for spatial dims
                pick = _odd_in(lo, hi, {r.opt[axis]} if r.opt[axis] % 2 else set())
                if pick is not None and pick != dims[axis]:
                    dims[axis], changed = pick, True
            odd[t.name] = tuple(dims)
        if not changed:
            # Only the batch axis is dynamic: the odd size is an odd batch that min/opt/max do not already run.
            for t in inputs:
                r = profile[t.name]
                if r.min and r.min[0] != r.max[0]:
                    dims = list(odd[t.name])
                    pick = _odd_in(max(r.min[0], 2), r.max[0], {r.min[0], r.opt[0], r.max[0]})
                    if pick is not None:
                        dims[0], changed = pick, True
                    odd[t.name] = tuple(dims)
        if changed:
            out.append(odd)
    return _dedupe(out)


def _dedupe(shapes: list[dict[str, tuple]]) -> list[dict[str, tuple]]:
    seen, out = set(), []
    for s in shapes:
        key = tuple(sorted(s.items()))
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def plan_shapes(inputs: list[InputInfo], *, config=None, channels: int | None = None, profiles=None) -> ShapePlan:
    """The shapes to run (see the module docstring for the order).

    Raises:
        UserInputError: a symbolic dim has no range anywhere, or an input's rank is unknown.
    """
    if config is not None and len(inputs) == 1:
        from deploykit.export.verify import verification_shapes

        return ShapePlan([{inputs[0].name: s} for s in verification_shapes(config, int(channels))], "config")
    if profiles:
        return ShapePlan(shapes_from_profiles(inputs, profiles), "profile")
    unknown_rank = [t for t in inputs if t.dims is None]
    if unknown_rank:
        raise UserInputError(f"input {unknown_rank[0].describe()} declares no shape, so its rank is unknown",
                             hint="pass --inputs FILE.npz with arrays for every input, or --no-run")
    if all(t.static for t in inputs):
        return ShapePlan([{t.name: tuple(t.dims) for t in inputs}], "static")
    if all(all(isinstance(d, int) for d in t.dims[1:]) and t.dims for t in inputs):
        # Only the batch dim is symbolic: the common export; run batch 1 and 2 (and say so in the audit).
        return ShapePlan([{t.name: (b, *t.dims[1:]) for t in inputs} for b in (1, 2)], "batch 1 and 2")
    bad = next(t for t in inputs if not t.static and not all(isinstance(d, int) for d in t.dims[1:]))

    def fill(v: int) -> str:
        return "x".join(str(d) if isinstance(d, int) else str(v) for d in bad.dims)

    raise UserInputError(
        f"input {bad.describe()} has symbolic dims and nothing says how to size them",
        hint=f"pass --profile {bad.name}:{fill(1)}:{fill(8)}:{fill(32)} (edit the sizes), --inputs FILE.npz, "
             "--block NAME, or --no-run for the structure and TensorRT audit only",
    )


def input_bytes(inputs: list[InputInfo], shapes: dict[str, tuple]) -> int:
    total = 0
    for t in inputs:
        itemsize = t.dtype.itemsize if t.dtype is not None else 8
        total += int(np.prod(shapes[t.name], dtype=np.float64)) * itemsize
    return total


def check_memory(inputs: list[InputInfo], plan: ShapePlan, max_mb: float) -> None:
    """Refuse shapes whose inputs alone would need more than `max_mb` MiB.

    Raises:
        UserInputError: naming the largest shape and its size.
    """
    limit = max_mb * 2**20
    for shapes in plan.shapes:
        need = input_bytes(inputs, shapes)
        if need > limit:
            raise UserInputError(
                f"inputs at {label_for(shapes)} would take {need / 2**20:,.0f} MiB, over the --max-input-mb "
                f"limit of {max_mb:g} MiB; the shapes come from {plan.source}",
                hint="validate at smaller shapes (--profile, --inputs FILE.npz) or raise --max-input-mb",
            )


def make_feeds(inputs: list[InputInfo], plan: ShapePlan, seed: int) -> list[Feed]:
    """Seeded random arrays for every planned shape (normal floats, small non-negative ints, random bools)."""
    from deploykit.export.verify import make_input

    feeds = []
    for i, shapes in enumerate(plan.shapes):
        arrays = {}
        for k, t in enumerate(inputs):
            shape, dtype = shapes[t.name], t.dtype
            if dtype is None:
                raise UserInputError(f"input {t.describe()} has a type random values cannot be made for",
                                     hint="pass --inputs FILE.npz, or --no-run")
            if len(inputs) == 1 and dtype == np.float32:
                arrays[t.name] = make_input(shape, seed + i)  # the same inputs the export's parity used
                continue
            rng = np.random.default_rng([seed, i, k])
            if dtype.kind == "f":
                arrays[t.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype.kind in "iu":
                arrays[t.name] = rng.integers(0, 4, size=shape).astype(dtype)
            elif dtype.kind == "b":
                arrays[t.name] = rng.random(shape) < 0.5
            else:
                raise UserInputError(f"input {t.describe()} is a {dtype} tensor; random values cannot be made for it",
                                     hint="pass --inputs FILE.npz, or --no-run")
        feeds.append(Feed(label_for(shapes), arrays, plan.source))
    return feeds


def _check_npz_sizes(path: Path, max_mb: float) -> None:
    """Refuse an .npz whose arrays would need more than `max_mb` MiB, reading only what it declares: the zip's
    uncompressed member sizes and each .npy header's shape and dtype. A 222-byte file can declare terabytes,
    and a few MB can inflate to gigabytes; nothing is decompressed past the headers.

    Raises:
        UserInputError: unreadable headers, or declared sizes over the limit.
    """
    import math
    import zipfile

    from numpy.lib import format as npy

    limit = max_mb * 2**20
    hint = "pass smaller arrays, or raise --max-input-mb"
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            declared = sum(m.file_size for m in members)
            if declared > limit:
                raise UserInputError(f"--inputs file '{path}' declares {declared / 2**20:,.0f} MiB of uncompressed "
                                     f"data, over the --max-input-mb limit of {max_mb:g} MiB", hint=hint)
            total = 0
            for member in members:
                with archive.open(member) as f:
                    version = npy.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(f)
                    elif version in ((2, 0), (3, 0)):
                        shape, _, dtype = npy.read_array_header_2_0(f)
                    else:
                        raise ValueError(f"unknown .npy format version {version}")
                need = math.prod(shape) * dtype.itemsize
                total += need
                if total > limit:
                    raise UserInputError(
                        f"--inputs file '{path}': array '{member.filename}' declares shape {tuple(shape)} of {dtype} "
                        f"({need / 2**20:,.0f} MiB); the file's arrays exceed the --max-input-mb limit of "
                        f"{max_mb:g} MiB", hint=hint)
    except UserInputError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UserInputError(f"--inputs file '{path}' is not a readable .npz: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}",
                             hint="save with numpy.savez(path, input_name=array, ...)") from None


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(magic)) == magic
    except OSError:
        return False


def load_npz(path: str | Path, inputs: list[InputInfo], profiles=None,
             max_input_mb: float = DEFAULT_MAX_INPUT_MB) -> Feed:
    """Read one feed from an .npz holding one array per graph input, named like the input.

    Raises:
        UserInputError: unreadable file, arrays declaring more than `max_input_mb` MiB (checked before anything
            is read), a missing or unknown name, or an array with the wrong dtype, rank, a
            dim the graph fixes or a profile excludes, or non-finite values.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"--inputs file '{path}' does not exist", hint="pass an .npz written by numpy.savez")
    if zipfile.is_zipfile(path):
        _check_npz_sizes(path, max_input_mb)
    elif _starts_with(path, b"\x93NUMPY"):  # a bare .npy: refused before numpy allocates what it declares
        raise UserInputError(f"--inputs file '{path}' holds a single array, not named arrays",
                             hint="save with numpy.savez(path, input_name=array, ...)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"--inputs file '{path}' is not a readable .npz: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''}",
                             hint="save with numpy.savez(path, input_name=array, ...)") from None
    if not hasattr(loaded, "files"):
        raise UserInputError(f"--inputs file '{path}' holds a single array, not named arrays",
                             hint="save with numpy.savez(path, input_name=array, ...)")
    try:
        arrays = {k: loaded[k] for k in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise UserInputError(f"--inputs file '{path}' has an unreadable array: {type(exc).__name__}",
                             hint="write the file again with numpy.savez") from None
    finally:
        loaded.close()
    names = [t.name for t in inputs]
    missing = [n for n in names if n not in arrays]
    if missing:
        raise UserInputError(f"--inputs file '{path}' has no array for input(s) {', '.join(map(repr, missing))}"
                             f"; it has {', '.join(map(repr, arrays)) or 'no arrays'}",
                             hint=f"name the arrays after the graph inputs: {', '.join(names)}")
    unknown = [k for k in arrays if k not in names]
    if unknown:
        raise UserInputError(f"--inputs file '{path}' has array(s) {', '.join(map(repr, unknown))} that are not "
                             f"graph inputs", hint=f"graph inputs: {', '.join(names)}")
    for t in inputs:
        arr = arrays[t.name]
        want = t.dtype
        if want is not None and arr.dtype != want:
            raise UserInputError(f"--inputs file '{path}': input '{t.name}' is {arr.dtype}, the model takes {want}",
                                 hint=f"save it as array.astype(numpy.{want.name})")
        if t.dims is not None:
            if arr.ndim != len(t.dims):
                raise UserInputError(f"--inputs file '{path}': input '{t.name}' has shape {tuple(arr.shape)} "
                                     f"(rank {arr.ndim}), the model's input {t.describe()} has rank {len(t.dims)}",
                                     hint="save the input with the model's rank")
            for axis, (size, fixed) in enumerate(zip(arr.shape, t.dims)):
                if isinstance(fixed, int) and size != fixed:
                    raise UserInputError(f"--inputs file '{path}': input '{t.name}' has shape {tuple(arr.shape)}, "
                                         f"but the model fixes dim {axis} at {fixed}: {t.describe()}",
                                         hint="save the input with the model's fixed dims")
        if arr.dtype.kind in "fc":
            nan, inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
            if nan or inf:
                raise UserInputError(f"--inputs file '{path}': input '{t.name}' holds {nan} NaN and {inf} Inf "
                                     "value(s); validation compares outputs and needs finite inputs",
                                     hint="replace the non-finite values (numpy.nan_to_num) or pick another sample")
    ordered = {n: arrays[n] for n in names}
    _check_profiles(path, ordered, profiles)
    label = label_for({k: v.shape for k, v in ordered.items()})
    return Feed(label, ordered, str(path), name=f"{path} {label}", from_file=True)


def _check_profiles(path: Path, arrays: dict[str, np.ndarray], profiles) -> None:
    """An input set fits when one profile holds every input's shape (a TensorRT engine runs each call in a
    single profile); any profile will do.

    Raises:
        UserInputError: no profile holds the set, listing every profile.
    """
    if not profiles:
        return

    def fits(profile) -> bool:
        return all(profile[n].contains(a.shape) for n, a in arrays.items() if n in profile)

    if any(fits(p) for p in profiles):
        return
    shapes = ", ".join(f"'{n}' {'x'.join(map(str, a.shape))}" for n, a in arrays.items())
    if len(profiles) == 1:
        listed = "the optimization profile " + ", ".join(f"{n} {r}" for n, r in profiles[0].items())
    else:
        listed = f"each of the {len(profiles)} optimization profiles: " + "; ".join(
            f"#{i} " + ", ".join(f"{n} {r}" for n, r in p.items()) for i, p in enumerate(profiles, 1))
    raise UserInputError(f"--inputs file '{path}': input shapes {shapes} are outside {listed}",
                         hint="use shapes within one profile's MIN..MAX, or add a --profile that covers them")
