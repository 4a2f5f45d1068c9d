"""`validate()`: every check on one ONNX model, in order, filling a ValidationReport.

1. read the file (unreadable, not ONNX, truncated: exit 2) and refuse external data outside its directory;
2. structure: onnx checker (full), strict shape inference, IR/opsets, inputs/outputs, initializers;
3. the TensorRT readiness audit against the parser's support lists (no TensorRT needed);
4. ONNX Runtime: load (an opset or IR newer than it supports: exit 2), run seeded inputs at several shapes
   (or the user's .npz), NaN/Inf detection;
5. parity with the PyTorch reference (sidecar manifest, --block, --config or --model), and with TensorRT when
   asked (--backend trt; needs TensorRT and a GPU, else exit 3);
6. fp16 readiness: intermediate tensors that leave the fp16 range, and the keep-list.

Unusable input raises UserInputError (exit 2) instead of becoming a check; a check that fails with severity
"error" makes the verdict fail (exit 1).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UserInputError
from deploykit.repository import MANIFEST_NAME
from deploykit.validate.checks import Check, ValidationReport
from deploykit.validate.inputs import DEFAULT_MAX_INPUT_MB

__all__ = ["Check", "ValidationReport", "ValidateOptions", "load_model", "read_manifest", "validate"]

TRT_TARGETS = ("both", "10", "11", "none")


@dataclass
class ValidateOptions:
    """What `deploykit validate` was asked to do (the CLI flags).

    Attributes:
        block / config_path / model_name: where the PyTorch reference comes from (at most one).
        seed: seed of the random inputs.
        inputs: .npz files, each one feed (replaces the random inputs).
        profiles: `--profile NAME:MIN:OPT:MAX` flags (as for `deploykit build`).
        atol / rtol: tolerance flags, "1e-3" or "OUTPUT:1e-3".
        check_mode / quantile: comparison statistic (elementwise, max, mean, quantile).
        trt: TensorRT versions to audit: "both", "10", "11" or "none".
        backend: "ort", "trt" to also compare ONNX Runtime with a TensorRT engine, or "openvino" to compare
            it with OpenVINO (f32).
        fp16: run the fp16 readiness check.
        run: run the model at all (False: structure and TensorRT audit only).
        max_input_mb: refuse shapes whose inputs would need more memory than this.
    """

    block: str | None = None
    config_path: str | None = None
    model_name: str | None = None
    seed: int = 0
    inputs: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    atol: tuple[str, ...] = ()
    rtol: tuple[str, ...] = ()
    check_mode: str | None = None
    quantile: float | None = None
    trt: str = "both"
    backend: str = "ort"
    fp16: bool = True
    run: bool = True
    max_input_mb: float = DEFAULT_MAX_INPUT_MB
    source: dict | None = None   # --module/--args/--weights: replace the reference config's source fields


def load_model(path: Path):
    """Read an ONNX file without its external data; anything unreadable is a UserInputError naming the problem."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.exists():
        raise UserInputError(f"'{path}' does not exist", hint="pass the path of an .onnx file")
    if path.is_dir():
        candidate = path / "model.onnx"
        if not candidate.is_file():
            raise UserInputError(f"'{path}' is a directory without model.onnx", hint="pass the .onnx file itself")
        path = candidate
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"'{path}' is not a readable ONNX model: {type(exc).__name__}, the protobuf is "
                             "corrupt or truncated",
                             hint="re-export the model or check the file was copied whole") from None
    if not model.graph.node and not model.graph.input and not model.graph.output:
        raise UserInputError(f"'{path}' parsed as an empty ONNX model; it is probably not an ONNX file",
                             hint="pass an .onnx model file")
    return model, path


def read_manifest(onnx_path: Path) -> dict | None:
    sidecar = onnx_path.parent / MANIFEST_NAME
    if not sidecar.is_file():
        return None
    try:
        content = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"sidecar manifest '{sidecar}' is unreadable: {exc}",
                             hint="re-export the model or delete the sidecar") from None
    if not isinstance(content, dict):
        raise UserInputError(f"sidecar manifest '{sidecar}' is not a JSON object",
                             hint="re-export the model or delete the sidecar")
    _check_manifest(content, sidecar)
    return content


def _check_manifest(content: dict, sidecar: Path) -> None:
    """The sidecar fields validate reads, type-checked by a pydantic model (other fields are left alone).

    Raises:
        UserInputError: naming the first malformed field.
    """
    from typing import Optional

    from pydantic import BaseModel, ConfigDict, ValidationError

    class Source(BaseModel):
        model_config = ConfigDict(extra="allow")
        block: Optional[str] = None
        variant: Optional[str] = None

    class Manifest(BaseModel):
        model_config = ConfigDict(extra="allow")
        precision: Optional[str] = None
        config: Optional[dict] = None
        source: Optional[Source] = None
        profiles: Optional[list] = None
        profile: Optional[dict] = None

    try:
        Manifest.model_validate(content)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "?"
        got = type(first.get("input")).__name__
        raise UserInputError(f"sidecar manifest '{sidecar}': field '{field}' is malformed: "
                             f"{first.get('msg', 'invalid')}, got a {got}",
                             hint="re-export the model or delete the sidecar") from None


def validate(path: str | Path, *, block: str | None = None, seed: int = 0,
             options: ValidateOptions | None = None) -> ValidationReport:
    """Validate one model; see the module docstring for the steps.

    Raises:
        UserInputError: unusable input (exit 2).
        MissingDependency: --backend trt without TensorRT or a GPU (exit 3).
    """
    from deploykit.validate import structure
    from deploykit.validate.inputs import graph_inputs

    opts = options or ValidateOptions(block=block, seed=seed)
    if opts.trt not in TRT_TARGETS:
        raise UserInputError(f"unknown TensorRT target '{opts.trt}'", hint=f"valid: {', '.join(TRT_TARGETS)}")
    if sum(x is not None for x in (opts.block, opts.config_path, opts.model_name)) > 1:
        raise UserInputError("--block, --config and --model each name the reference; pass only one",
                             hint="name the reference once")

    model, path = load_model(Path(path))
    external = structure.external_data(model, path)  # refuses traversal before anything reads the data
    inputs = graph_inputs(model)
    trt_module = None
    if opts.backend == "trt":
        from deploykit.trt.capabilities import require_build_environment

        trt_module, _gpu = require_build_environment(purpose="comparing ONNX Runtime with TensorRT")
    elif opts.backend == "openvino":
        from deploykit.backends.openvino import load_openvino

        load_openvino("comparing ONNX Runtime with OpenVINO")  # exit 3 with the install hint

    # The weights are read once, here, for every check that needs their values; then the in-memory model
    # keeps only dims and small constants (see deploykit.validate.weights), so nothing below copies them.
    from deploykit.validate import weights as weight_store
    from deploykit.validate.fp16 import scan_weights

    weight_checks = structure.initializers(model, path)
    weight_scan = scan_weights(model.graph) if opts.fp16 and opts.run else None
    model, stripped = weight_store.strip(model)
    weight_store.release_freed_memory()

    report = ValidationReport(str(path))
    with weight_store.by_offset_copy(path, model, stripped) as (check_path, _):
        report.checks.append(structure.checker(path, check_path))
    report.checks.append(structure.shape_inference(model))
    report.checks.append(structure.versions(model))
    report.checks.append(structure.io(model, [t.name for t in inputs]))
    if external is not None:
        report.checks.append(external)
    report.extend(weight_checks)

    manifest = read_manifest(path)
    config = _reference_config(manifest, opts, model)
    block_name, variant = _provenance(manifest, opts, config)
    profiles, profile_status = _profiles(inputs, opts, manifest)

    from deploykit.validate.graphinfo import inspect_model

    info = inspect_model(model)
    if opts.trt != "none":
        from deploykit.validate.audit import audit, tables_for
        from deploykit.validate.support import source_line

        report.extend(audit(info, tables_for(opts.trt), block=block_name, variant=variant,
                            profile_status=profile_status))
        report.summary["tensorrt_support"] = source_line()
    report.summary["inputs"] = [{"name": t.name, "dtype": str(t.dtype or t.elem_type),
                                 "shape": list(t.dims) if t.dims is not None else None} for t in inputs]
    if not opts.run:
        report.add("run", True, "skipped (--no-run): structure and TensorRT audit only", severity="info",
                   category="numerics", skipped=True)
        return report
    scan_args = {"skeleton": model, "stripped": stripped, "weight_scan": weight_scan}
    _numerics(report, path, model, info, inputs, manifest, config, profiles, opts, trt_module, scan_args)
    return report


# ------------------------------------------------------------------------------------------------ steps
def _numerics(report, path, model, info, inputs, manifest, config, profiles, opts, trt_module, scan_args) -> None:
    from deploykit.validate import numerics
    from deploykit.validate.inputs import check_memory, load_npz, make_feeds, plan_shapes, unique_names

    structure_passed = all(c.passed or c.severity != "error" for c in report.checks if c.category == "structure")
    runner, session_check = numerics.open_session(path, structure_passed)
    report.checks.append(session_check)
    if runner is None:
        return
    with runner:
        output_names = runner.output_names
        if opts.inputs:
            # Every file is its own run, named after the file: two files of one shape are both compared.
            feeds = [load_npz(p, inputs, profiles, opts.max_input_mb) for p in opts.inputs]
            source = "--inputs"
        else:
            # Explicit --profile flags choose the shapes; otherwise the reference config's ranges do.
            use_config = config if (config is not None and config.source.registry and len(inputs) == 1
                                    and not opts.profiles) else None
            channels = None
            if use_config is not None:
                dims = inputs[0].dims or ()
                graph_channels = dims[1] if len(dims) > 1 and isinstance(dims[1], int) else None
                channels = use_config.input.channels or graph_channels
                if channels is None:
                    use_config = None
            points = ((manifest or {}).get("verification") or {}).get("points")
            if points and not opts.profiles and use_config is None:   # a user model: the points its export proved
                from deploykit.validate.inputs import ShapePlan

                plan = ShapePlan([{n: tuple(s) for n, s in p.items()} for p in points], "the export's verification points")
            else:
                plan = plan_shapes(inputs, config=use_config, channels=channels, profiles=profiles)
            check_memory(inputs, plan, opts.max_input_mb)
            feeds = make_feeds(inputs, plan, opts.seed)
            source = plan.source
        feeds = unique_names(feeds)
        feeds = _drop_empty(report, feeds)
        if not feeds:
            return
        report.summary["shapes_run"] = [f.label for f in feeds]
        report.summary["runs"] = [f.name for f in feeds]
        report.summary["shape_source"] = source

        # Tolerances: the export config's for the graph's precision, then the flags.
        from deploykit.compare import Tolerance

        precision = (manifest or {}).get("precision") or ("fp16" if _is_fp16(model) else "fp32")
        base = Tolerance(atol=1e-4, rtol=1e-4)
        if config is not None:
            spec = config.tolerances.get(precision, config.tolerances["fp32"])
            base = Tolerance(**spec.model_dump())
        tols = numerics.tolerances(base, output_names, atol=opts.atol, rtol=opts.rtol, mode=opts.check_mode,
                                   quantile=opts.quantile)
        report.summary["tolerances"] = {n: {"atol": t.atol, "rtol": t.rtol, "mode": t.mode} for n, t in tols.items()}
        report.summary["precision"] = precision

        actual, run_check = numerics.run_ort(runner, feeds)
        report.checks.append(run_check)
        if actual is None:
            return

    if config is None:
        report.add("parity", True, "skipped: no manifest beside the model and no --block/--config/--model "
                   "given, so the outputs were not compared with PyTorch", severity="info", category="numerics",
                   skipped=True,
                   fix="pass --block NAME (or --config FILE) to compare with the PyTorch reference")
    elif len(inputs) != 1 and config.source.registry:
        report.add("parity", False, "PyTorch parity supports single-input models", category="numerics")
    elif importlib.util.find_spec("torch") is None:  # only a manifest names the reference: explicit flags need torch
        report.add("parity", False, "skipped: torch is not installed, so the manifest's PyTorch reference cannot run",
                   severity="warning", category="numerics",
                   fix="pip install 'deploykit[export]' to compare with the PyTorch reference")
    else:
        src = config.source
        report.summary["reference"] = (f"PyTorch {src.label} ({src.variant} export, reference "
                                       f"semantics), weights: {src.weights or f'seeded (seed {config.seed})'}")
        _check_reference_weights(report, src, manifest)
        expected, outputs_check = numerics.reference_outputs(config, feeds, output_names)
        report.checks.append(outputs_check)
        if precision in ("bf16", "int8", "int8_trt") and not (opts.atol or opts.rtol):
            from deploykit.validate.engines import gate_checks   # reduced precisions: their gate, not atol/rtol

            report.extend(gate_checks("parity", "PyTorch reference", expected, actual, precision))
        else:
            report.extend(numerics.comparison_checks("parity", "PyTorch reference", expected, actual, tols))

    if trt_module is not None:
        trt_out, checks = numerics.trt_outputs(path, inputs, feeds, trt_module, profiles)
        report.extend(checks)
        if trt_out is not None:
            report.extend(numerics.comparison_checks("trt_parity", "ONNX Runtime", actual, trt_out, tols))

    if opts.backend == "openvino":
        from deploykit.validate.engines import openvino_outputs

        ov_out, checks = openvino_outputs(path, feeds)
        report.extend(checks)
        if ov_out is not None:
            report.extend(numerics.comparison_checks("openvino_parity", "ONNX Runtime", actual, ov_out, tols))

    if opts.fp16:
        from deploykit.validate.fp16 import readiness
        from deploykit.validate.weights import release_freed_memory

        release_freed_memory()   # the first session's memory, before the scan's session takes its own

        if precision != "fp32":
            report.add("fp16_range", True, f"skipped: the graph already computes in {precision}", severity="info",
                       category="fp16", skipped=True)
        else:
            # Every --inputs file is the user's own data: each is scanned. Generated inputs share one
            # distribution, so the first shape stands for them.
            files = [f for f in feeds if f.from_file]
            report.checks.append(readiness(path, info, files or feeds[:1], **scan_args))


def _drop_empty(report, feeds):
    """Runs on zero-sized inputs compare nothing (two empty tensors are trivially equal): each is a failed check
    and is left out of the comparisons, so an empty run can never make a verdict pass."""
    kept = []
    for feed in feeds:
        empty = [n for n, a in feed.arrays.items() if a.size == 0]
        if not empty:
            kept.append(feed)
            continue
        report.add(f"empty_run[{feed.name}]", False,
                   f"input '{empty[0]}' has no elements at {feed.label}: a run on empty tensors checks nothing",
                   category="numerics", data={"empty_inputs": empty},
                   fix="validate at sizes of at least 1 (every --profile MIN dim >= 1, non-empty --inputs arrays); "
                       "a graph whose input has a static 0 dim cannot be validated")
    return kept


def _check_reference_weights(report, src, manifest) -> None:
    """Say so when the reference cannot carry the exported weights (parity would fail for that reason alone,
    and looser tolerances are not the fix)."""
    from pathlib import Path

    exported = (((manifest or {}).get("source") or {}).get("weights_report") or {})
    if not exported.get("path"):
        return
    if not src.weights:
        report.add("reference_weights", False, f"the model was exported with the weights {exported['path']} "
                   f"(sha256 {str(exported.get('sha256'))[:12]}) but this reference has seeded random weights: the "
                   "outputs cannot agree, whatever the tolerance", category="numerics",
                   fix="compare with the sidecar's reference (drop --block/--model) or give the checkpoint "
                       "(--config with source.weights)")
    elif exported.get("sha256") and Path(src.weights).is_file():
        from deploykit.repository import sha256_file

        if sha256_file(src.weights) != exported["sha256"]:
            report.add("reference_weights", False, f"the checkpoint {src.weights} changed since the export (sha256 "
                       f"{sha256_file(src.weights)[:12]}, exported {exported['sha256'][:12]}): the reference is not "
                       "the exported model", category="numerics",
                       fix="restore the exported checkpoint, or export again from this one")


def _is_fp16(model) -> bool:
    import onnx

    return any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)


def _reference_config(manifest, opts: ValidateOptions, model):
    config = _reference_config_of(manifest, opts, model)
    if opts.source is None:
        return config
    from deploykit.export.config import parse_config

    if config is None or config.source.registry and "module" in opts.source:
        raise UserInputError("--module/--args/--weights need the named inputs of a user model's sidecar "
                             "(deploykit.json) or of --config", hint="validate the model inside its repository, "
                             "or pass --config FILE with source.module and inputs")
    data = config.model_dump(mode="json")
    if "module" in opts.source:
        for key in ("block", "network", "module", "program"):
            data["source"].pop(key, None)
    data["source"].update(opts.source)
    return parse_config(data, f"{config.origin} with --module/--args/--weights")


def _reference_config_of(manifest, opts: ValidateOptions, model):
    from deploykit.export.config import default_config, load_config, parse_config

    if opts.config_path is not None:
        return load_config(opts.config_path)
    if opts.model_name is not None:
        return _network_config(opts.model_name, model)
    if opts.block is not None:
        block = opts.block
        data = default_config(block).model_dump(mode="json")
        dims = _first_input_dims(model)
        if len(dims) == 4 and dims[1]:
            data["input"]["channels"] = dims[1]
            data["source"]["args"] = {**data["source"]["args"], _channels_arg(block): dims[1]}
        _size_like_graph(data, dims)
        return parse_config(data, f"--block {block}")
    if manifest and isinstance(manifest.get("config"), dict):
        return parse_config(manifest["config"], "the model's sidecar manifest")
    return None


def _first_input_dims(model) -> list:
    inits = {i.name for i in model.graph.initializer}
    first = next(vi for vi in model.graph.input if vi.name not in inits)
    return [d.dim_value if d.HasField("dim_value") else None for d in first.type.tensor_type.shape.dim]


def _network_config(name: str, model):
    """--model NAME: a network's reference (its export config, sized like the graph's input)."""
    import importlib.util

    from deploykit.export.config import parse_config

    if importlib.util.find_spec("deploykit.networks") is None:
        raise UserInputError(f"--model {name}: networks are not available in this version of deploykit yet",
                             hint="compare with a block's reference (--block NAME) or an export config (--config FILE)")
    from deploykit import networks

    data = networks.default_config(name).model_dump(mode="json")  # unknown names fail here, with the valid ones
    _size_like_graph(data, _first_input_dims(model))
    return parse_config(data, f"--model {name}")


def _size_like_graph(data: dict, dims: list) -> None:
    """Make a config's ranges agree with the graph's static dims (a config for 56x56 checks a 14x14 graph at
    14x14; a graph with a fixed batch runs only that batch)."""
    if len(dims) != 4:
        return
    if dims[0]:
        data["input"]["batch"] = {"min": dims[0], "opt": dims[0], "max": dims[0]}
    for axis, key in ((2, "height"), (3, "width")):
        if dims[axis]:
            data["input"][key] = {"opt": dims[axis]}


def _channels_arg(block: str) -> str:
    from deploykit.blocks import spec

    return spec(block).channels_arg


def _provenance(manifest, opts: ValidateOptions, config) -> tuple[str | None, str | None]:
    """The deploykit block the model came from and its variant, for fixes that name the export-safe twin."""
    source = (manifest or {}).get("source") if isinstance((manifest or {}).get("source"), dict) else None
    if source and source.get("block"):
        return source["block"], source.get("variant")
    if opts.block:
        return opts.block, None
    if config is not None and config.source.block:
        return config.source.block, config.source.variant
    return None, None


def _profiles(inputs, opts: ValidateOptions, manifest):
    """(profiles or None, audit status for dynamic inputs or None when all are static).

    Raises:
        UserInputError: malformed --profile flags or flags that disagree with the graph.
    """
    from deploykit.trt.onnx_info import GraphTensor
    from deploykit.trt.profiles import resolve

    tensors = [GraphTensor(t.name, str(t.dtype or t.elem_type),
                           tuple(d if isinstance(d, int) else -1 for d in (t.dims or ())),
                           tuple(d if isinstance(d, str) else "" for d in (t.dims or ())))
               for t in inputs]
    dynamic = [t for t in tensors if t.dynamic]
    if opts.profiles:
        profiles, _ = resolve(tensors, list(opts.profiles), None)
        status = ("info", f"dynamic inputs sized by --profile: {_profile_text(profiles)}", "") if dynamic else None
        return profiles, status
    if not dynamic:
        return None, None
    try:
        profiles, source = resolve(tensors, (), manifest)
    except UserInputError as exc:
        names = ", ".join(t.describe() for t in dynamic)
        return None, ("warning", f"dynamic input(s) {names} have no optimization profile ({exc.message})",
                      exc.hint or "pass --profile NAME:MIN:OPT:MAX to deploykit build")
    return profiles, ("info", f"dynamic inputs sized by the {MANIFEST_NAME} sidecar: {_profile_text(profiles)}", "")


def _profile_text(profiles) -> str:
    return "; ".join(", ".join(f"{n} {r}" for n, r in p.items()) for p in profiles)
