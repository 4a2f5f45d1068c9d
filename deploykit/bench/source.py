"""What a benchmark measures: a block, a network, or an ONNX file, with the PyTorch that checks it.

A block or network goes through its export config (export_configs/<name>.yaml or the registry defaults) and
`build_modules`, exactly as `deploykit export` builds it: the reference module gives the expected outputs,
the export-safe twin is what eager "safe", torch.compile and the ONNX graph run. The ONNX graph is made by the
full export pipeline (export, simplify, verify) into a temporary model repository, so the graph timed is the
graph deploykit ships. An ONNX file brings its own graph; its PyTorch source is rebuilt from the deploykit
manifest beside it when there is one, and without one its outputs cannot be checked (rows say so).
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import CheckFailed, UserInputError


@dataclass
class BenchSource:
    """Everything the backends need.

    Attributes:
        kind: "block", "network" or "onnx".
        name: block, network or file name.
        channels, height, width: the per-sample input shape timed (batch comes from the settings).
        reference: eager reference module (None for an ONNX file without a manifest).
        safe: the exported module (the twin unless the config says otherwise), None as above.
        variant: which variant the exported graph is ("safe" or "reference").
        config: the ExportConfig, when there is one.
        tolerance: fp32 (or the file's precision) tolerance outputs must meet.
        input_name, output_names: graph I/O names (from the config, or the ONNX file).
        onnx_file: the ONNX file given by the user (kind "onnx").
        fixed_batch: the graph's static batch size, when it has one.
        input_dtype: the graph input's element type (numpy name); the timed input is fed in it.
        inputs: a user model's named inputs (deploykit.sources.specs.TensorInput, in forward's order), for models
            with several inputs or non-float or non-NCHW ones; None for the one NCHW image of the other sources.
        input_dtypes: the graph's element type per named input (numpy name), when `inputs` is set.
    """

    kind: str
    name: str
    channels: int
    height: int
    width: int
    reference: object | None = None
    safe: object | None = None
    variant: str | None = "safe"
    config: object | None = None
    tolerance: object | None = None
    input_name: str = "input"
    output_names: list[str] = field(default_factory=lambda: ["output"])
    onnx_file: Path | None = None
    fixed_batch: int | None = None
    input_dtype: str = "float32"
    inputs: list | None = None
    input_dtypes: dict = field(default_factory=dict)
    _workdir: Path | None = None
    _onnx: Path | None = None
    _onnx_error: str | None = None
    export_info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ what the backends ask for
    @property
    def has_torch(self) -> bool:
        return self.reference is not None

    def describe(self) -> dict:
        shape = ([self.channels, self.height, self.width] if self.inputs is None
                 else {n: list(s[1:]) for n, s in self.input_shapes(1).items()})
        return {"kind": self.kind, "name": self.name, "input": shape,
                "variant": self.variant, "onnx": str(self.onnx_file) if self.onnx_file else None,
                "export": dict(self.export_info)}

    def workdir(self) -> Path:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="deploykit-bench-"))
        return self._workdir

    def onnx_path(self) -> Path:
        """The ONNX graph to run: the user's file, or a verified export made once on first request.

        Raises:
            CheckFailed: the export failed (the reason says at which stage).
        """
        if self.onnx_file is not None:
            return self.onnx_file
        if self._onnx is not None:
            return self._onnx
        if self._onnx_error is not None:
            raise CheckFailed(self._onnx_error)
        from deploykit.export.pipeline import run_export

        status = run_export(self.config, self.workdir() / "models", force=True)
        self.export_info = {"passed": status.passed, "exporter": status.exporter, "simplified": status.simplified,
                            "seconds": round(sum(s.seconds for s in status.stages), 2), "error": status.error}
        if not status.passed:
            self._onnx_error = f"the export failed, so there is no graph to run: {status.error}"
            raise CheckFailed(self._onnx_error)
        self._onnx = next(a.onnx for a in status.artifacts if a.precision == "fp32")
        return self._onnx

    def input_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Every input's shape at `batch`: a named input's dims at their export (opt) size, its first dim at
        `batch` where that dim is dynamic (inputs with a fixed first dim keep it)."""
        if self.inputs is None:
            return {self.input_name: (batch, self.channels, self.height, self.width)}
        return {t.name: tuple(batch if axis == 0 and d.dynamic else d.opt for axis, d in enumerate(t.dims))
                for t in self.inputs}

    def make_input(self, batch: int, seed: int):
        """The seeded fp32 input at `batch`: one NCHW array, or for named inputs a dict name -> array in forward's
        order, each of its own dtype (integers in the sidecar's [low, high), random bools)."""
        if self.inputs is None:
            from deploykit.export.verify import make_input

            return make_input((batch, self.channels, self.height, self.width), seed)
        from deploykit.sources.specs import make_feed

        return make_feed(self.inputs, self.input_shapes(batch), seed)

    def graph_feed(self, x):
        """`x` in the element types the graph takes (an fp16 graph's float inputs in float16)."""
        if not isinstance(x, dict):
            return x.astype(self.input_dtype, copy=False)
        return {n: a.astype(self.input_dtypes.get(n, a.dtype), copy=False) for n, a in x.items()}

    def expected(self, x) -> dict | None:
        """Reference outputs (fp32 PyTorch on the CPU) for input `x` (an array, or a dict of named arrays), by ONNX
        output name; None without a PyTorch source."""
        if self.reference is None:
            return None
        import torch

        from deploykit.validate.numerics import _to_numpy, match_outputs

        arrays = x.values() if isinstance(x, dict) else (x,)
        with torch.inference_mode():   # a dict of outputs pairs by name, anything else by position
            out = self.reference(*(torch.from_numpy(a) for a in arrays))
        matched, no_ref, no_onnx, _how = match_outputs(_to_numpy(out), self.output_names)
        if no_ref or no_onnx:
            raise CheckFailed(f"the PyTorch reference's outputs do not pair with the graph's: graph outputs without "
                              f"a reference output {no_ref}, reference outputs without a graph output {no_onnx}",
                              hint="bench the model with the sidecar it was exported with, or the matching --module")
        return {n: matched[n] for n in self.output_names}

    def close(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def _parse_hw(size: tuple[int, int] | None, config_data: dict) -> None:
    if size is not None:
        config_data["input"]["height"] = {"opt": size[0]}
        config_data["input"]["width"] = {"opt": size[1]}


def _bench_config(config, batches, size, source_label: str):
    """The export config, fp32 only, its batch range widened to hold every benchmarked batch size."""
    from deploykit.export.config import parse_config

    data = config.model_dump(mode="json")
    data["precisions"] = ["fp32"]
    b = data["input"]["batch"]
    lo, hi = min([b["min"], *batches]), max([b["max"], *batches])
    data["input"]["batch"] = {"min": lo, "opt": min(max(b["opt"], lo), hi), "max": hi}
    _parse_hw(size, data)
    return parse_config(data, source_label)


def _from_config(kind: str, name: str, config, batches, size) -> BenchSource:
    from deploykit.compare import Tolerance
    from deploykit.export.source import build_modules

    config = _bench_config(config, batches, size, f"export config of '{name}' (bench)")
    mods = build_modules(config)
    return BenchSource(
        kind=kind, name=name, channels=mods.channels, height=config.input.height.opt, width=config.input.width.opt,
        reference=mods.reference, safe=mods.exported, variant=config.source.variant, config=config,
        tolerance=Tolerance(**config.tolerances["fp32"].model_dump()), input_name=config.input.name,
        output_names=[config.output_name],
    )


def from_block(name: str, batches, size: tuple[int, int] | None = None) -> BenchSource:
    """A registered block at its export config (export_configs/<name>.yaml, else registry defaults)."""
    from deploykit.export.config import default_config

    return _from_config("block", name, default_config(name), batches, size)


def from_network(name: str, batches, size: tuple[int, int] | None = None) -> BenchSource:
    """A network at its export config (export_configs/<name>.yaml, else its registry defaults)."""
    if importlib.util.find_spec("deploykit.networks") is None:
        raise UserInputError(f"--model {name}: this deploykit has no networks: deploykit.networks is missing",
                             hint="benchmark a block with --block NAME, or an exported file with MODEL.onnx")
    from deploykit import networks

    return _from_config("network", name, networks.default_config(name), batches, size)


def from_onnx(path: str | Path, size: tuple[int, int] | None = None, batches=(), source_flags: dict | None = None
              ) -> BenchSource:
    """An ONNX file; PyTorch is rebuilt from its deploykit manifest when one lies beside it.

    A graph with several inputs, or an input that is not a float NCHW image, is fed by name from the sidecar's
    `input_specs` (each input in its dtype, integers in their recorded range). `source_flags` (--module/--args/
    --weights, as for validate) replace the sidecar's source of a user model's reference.
    """
    import onnx

    from deploykit.validate.core import load_model, read_manifest

    model, path = load_model(Path(path))
    graph_inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    manifest = read_manifest(path)
    if not graph_inputs:
        raise UserInputError(f"'{path}' has no inputs; there is nothing to feed", hint="bench a model with inputs")
    first = graph_inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]
    dtypes = {}
    for i in graph_inputs:
        elem = i.type.tensor_type.elem_type
        dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else None
        if dtype is None:
            raise UserInputError(f"'{path}': input '{i.name}' has no element type bench can feed",
                                 hint="bench a model with typed inputs")
        dtypes[i.name] = dtype.name
    named = len(graph_inputs) != 1 or len(dims) != 4 or dtypes[first.name] not in ("float32", "float16")
    if named or (manifest or {}).get("input_specs") and source_flags:
        return _from_named_onnx(path, model, graph_inputs, dtypes, manifest, size, batches, source_flags)
    if source_flags:
        raise UserInputError("--module/--args/--weights need the named inputs of a user model's sidecar "
                             "(deploykit.json) beside the ONNX file", hint="bench the model inside its repository")
    name = first.name
    if dims[0] and batches and dims[0] not in batches:
        raise UserInputError(f"'{path}' fixes the batch of input '{name}' at {dims[0]}; --batch asks for "
                             f"{', '.join(map(str, batches))}",
                             hint=f"pass --batch {dims[0]}, or export with a dynamic batch")
    if size is not None and any(d and d != s for d, s in zip(dims[2:], size)):
        raise UserInputError(f"'{path}' fixes the size of input '{name}' at {dims[2] or '?'}x{dims[3] or '?'}; "
                             f"--size asks for {size[0]}x{size[1]}", hint="drop --size, or export with dynamic H/W")
    output_names = [o.name for o in model.graph.output]
    source = BenchSource(kind="onnx", name=str(path), channels=0, height=0, width=0, variant=None,
                         input_name=name, output_names=output_names, onnx_file=path, fixed_batch=dims[0],
                         input_dtype=dtypes[name])
    config, mods = _attach_reference(source, manifest, path, None)
    c, h, w = dims[1], dims[2], dims[3]
    if size is not None:
        h, w = size
    elif config is not None and config.input is not None:
        h = h or config.input.height.opt
        w = w or config.input.width.opt
    elif config is not None:   # a user model: its one input's export (opt) size
        opt = [d.opt for d in mods.inputs[0].dims]
        h, w = h or opt[2], w or opt[3]
    c = c or (config.input.channels if config is not None and config.input is not None else None)
    if not (c and h and w):
        raise UserInputError(f"'{path}': input dims {dims} are symbolic and nothing says how to size them",
                             hint="pass --size HxW (channels must be static), or bench a deploykit export")
    source.channels, source.height, source.width = int(c), int(h), int(w)
    return source


def _attach_reference(source: BenchSource, manifest, path: Path, source_flags: dict | None):
    """Rebuild the PyTorch reference from the sidecar's config (its source replaced by `source_flags`), when
    there is one and torch is installed. Returns (config or None, built ModelSource or None)."""
    from deploykit.compare import Tolerance

    if not (manifest and "config" in manifest):
        source.export_info = {"manifest": False}
        return None, None
    if importlib.util.find_spec("torch") is None:
        source.export_info = {"manifest": True, "unverified": "outputs not checked: torch is not installed, so the "
                              "manifest's PyTorch reference cannot run (pip install 'deploykit[export]')"}
        return None, None
    from deploykit.export.config import parse_config
    from deploykit.export.source import build_modules

    data, origin = manifest["config"], f"manifest beside {path}"
    if source_flags:
        data = {**data, "source": dict(data.get("source") or {})}
        if "module" in source_flags:
            for key in ("block", "network", "module", "program"):
                data["source"].pop(key, None)
        data["source"].update(source_flags)
        origin += " with --module/--args/--weights"
    config = parse_config(data, origin)
    mods = build_modules(config)
    precision = manifest.get("precision", "fp32")
    source.reference, source.safe, source.config = mods.reference, mods.exported, config
    source.variant = config.source.variant
    source.tolerance = Tolerance(**config.tolerances.get(precision, config.tolerances["fp32"]).model_dump())
    source.export_info = {"manifest": True, "precision": precision}
    return config, mods


def _from_named_onnx(path, model, graph_inputs, dtypes, manifest, size, batches, source_flags) -> BenchSource:
    """A graph fed by input name from the sidecar's input specs (several inputs, integer or bool inputs)."""
    from deploykit.sources.specs import Dim, TensorInput

    names = [i.name for i in graph_inputs]
    specs = {s.get("name"): s for s in (manifest or {}).get("input_specs") or [] if isinstance(s, dict)}
    if set(specs) != set(names):
        raise UserInputError(f"'{path}' has inputs {', '.join(names)}; deploykit bench feeds such a model by name "
                             f"from the input_specs of its deploykit.json sidecar, and "
                             + ("there is none" if not specs else f"the sidecar names {', '.join(specs)}"),
                             hint="bench the model inside the repository `deploykit export` wrote")
    inputs = []
    for name in names:
        spec = specs[name]
        opt, lo, hi = spec["shape"], spec.get("min", spec["shape"]), spec.get("max", spec["shape"])
        dims = [Dim(int(o), int(a), int(b)) for o, a, b in zip(opt, lo, hi)]
        if size is not None and len(dims) == 4:   # --size sets the H and W of image inputs
            for axis, s in ((2, size[0]), (3, size[1])):
                if not dims[axis].lo <= s <= dims[axis].hi:
                    raise UserInputError(f"--size {size[0]}x{size[1]}: input '{name}' takes H, W in "
                                         f"{lo[2]}..{hi[2]} x {lo[3]}..{hi[3]}", hint="pick a --size in that range")
                dims[axis] = Dim(s, dims[axis].lo, dims[axis].hi)
        dtype = spec.get("dtype", dtypes[name])
        inputs.append(TensorInput(name, "float32" if dtype in ("float32", "float16") else dtype, tuple(dims),
                                  int(spec.get("low", 0)), int(spec.get("high", 2))))
    fixed = inputs[0].dims[0].opt if inputs[0].dims and not inputs[0].dims[0].dynamic else None
    if fixed and batches and fixed not in batches:
        raise UserInputError(f"'{path}' fixes the batch of input '{names[0]}' at {fixed}; --batch asks for "
                             f"{', '.join(map(str, batches))}", hint=f"pass --batch {fixed}")
    source = BenchSource(kind="onnx", name=str(path), channels=0, height=0, width=0, variant=None,
                         input_name=names[0], output_names=[o.name for o in model.graph.output], onnx_file=path,
                         fixed_batch=fixed, input_dtype=dtypes[names[0]], inputs=inputs, input_dtypes=dtypes)
    _attach_reference(source, manifest, path, source_flags)
    return source
