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
    _workdir: Path | None = None
    _onnx: Path | None = None
    _onnx_error: str | None = None
    export_info: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ what the backends ask for
    @property
    def has_torch(self) -> bool:
        return self.reference is not None

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "input": [self.channels, self.height, self.width],
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

    def expected(self, x) -> dict | None:
        """Reference outputs (fp32 PyTorch on the CPU) for input array `x`; None without a PyTorch source."""
        if self.reference is None:
            return None
        from deploykit.export.verify import torch_outputs

        return torch_outputs(self.reference, x, self.output_names)

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


def from_onnx(path: str | Path, size: tuple[int, int] | None = None, batches=()) -> BenchSource:
    """An ONNX file; PyTorch is rebuilt from its deploykit manifest when one lies beside it."""
    import onnx

    from deploykit.compare import Tolerance
    from deploykit.validate.core import load_model, read_manifest

    model, path = load_model(Path(path))
    graph_inputs = [i for i in model.graph.input if i.name not in {init.name for init in model.graph.initializer}]
    if len(graph_inputs) != 1:
        raise UserInputError(f"'{path}' has {len(graph_inputs)} inputs; deploykit bench runs single-input models",
                             hint="benchmark a model with one input, or its single-input part")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UserInputError(f"'{path}': input '{graph_inputs[0].name}' has rank {len(dims)}; bench expects NCHW",
                             hint="pass a model whose input is an NCHW image batch")
    name = graph_inputs[0].name
    elem = graph_inputs[0].type.tensor_type.elem_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(elem) if elem else None
    if dtype is None or dtype.kind != "f":
        raise UserInputError(f"'{path}': input '{name}' is {onnx.TensorProto.DataType.Name(elem)}; deploykit bench "
                             "feeds image tensors, so it needs a float input", hint="bench a float-input model")
    if dims[0] and batches and dims[0] not in batches:
        raise UserInputError(f"'{path}' fixes the batch of input '{name}' at {dims[0]}; --batch asks for "
                             f"{', '.join(map(str, batches))}",
                             hint=f"pass --batch {dims[0]}, or export with a dynamic batch")
    if size is not None and any(d and d != s for d, s in zip(dims[2:], size)):
        raise UserInputError(f"'{path}' fixes the size of input '{name}' at {dims[2] or '?'}x{dims[3] or '?'}; "
                             f"--size asks for {size[0]}x{size[1]}", hint="drop --size, or export with dynamic H/W")
    output_names = [o.name for o in model.graph.output]
    manifest = read_manifest(path)
    source = BenchSource(kind="onnx", name=str(path), channels=0, height=0, width=0, variant=None,
                         input_name=name, output_names=output_names, onnx_file=path, fixed_batch=dims[0],
                         input_dtype=dtype.name)
    config = None
    if manifest and "config" in manifest and importlib.util.find_spec("torch") is None:
        source.export_info = {"manifest": True, "unverified": "outputs not checked: torch is not installed, so the "
                              "manifest's PyTorch reference cannot run (pip install 'deploykit[export]')"}
    elif manifest and "config" in manifest:
        from deploykit.export.config import parse_config
        from deploykit.export.source import build_modules

        config = parse_config(manifest["config"], f"manifest beside {path}")
        mods = build_modules(config)
        precision = manifest.get("precision", "fp32")
        source.reference, source.safe, source.config = mods.reference, mods.exported, config
        source.variant = config.source.variant
        source.tolerance = Tolerance(**config.tolerances.get(precision, config.tolerances["fp32"]).model_dump())
        source.export_info = {"manifest": True, "precision": precision}
    else:
        source.export_info = {"manifest": False}
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
