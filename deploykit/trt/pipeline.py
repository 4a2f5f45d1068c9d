"""`deploykit build` as a function: ONNX file in, Triton model directory with a TensorRT plan out.

    models/<name>/config.pbtxt                platform "tensorrt_plan"
    models/<name>/<version>/model.plan        the serialized engine exactly as TensorRT wrote it (no header)
    models/<name>/<version>/deploykit.json    TensorRT version, GPU and compute capability, profiles,
                                              precision, the ONNX file's sha256, build time

Steps fill a `BuildReport` as they go (inspect, profiles, environment, precision, parse+build, write), so a
failure still leaves a report that says which step failed and everything learnt before it. Every file is
written atomically; the plan is written first and config.pbtxt last, so Triton never sees a config whose
plan is missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from deploykit import __version__
from deploykit.errors import Interrupted, MissingDependency, UserInputError
from deploykit.repository import (
    MANIFEST_NAME,
    TensorSpec,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_model_name,
    config_pbtxt,
    sha256_file,
)
from deploykit.repository_journal import install_version
from deploykit.trt import capabilities as caps_mod
from deploykit.trt.builder import BuildSettings, build_serialized, decide_precision, describe_profiles
from deploykit.trt.capabilities import GpuInfo
from deploykit.trt.onnx_info import OnnxSummary, summarize
from deploykit.trt.profiles import Profile, profile_as_dict, read_sidecar, resolve

PLAN_NAME = "model.plan"


@dataclass
class BuildReport:
    """What the build did, step by step; `as_dict()` is the `--json` output."""

    onnx: str
    status: str = "running"
    step: str = ""
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = {"onnx": self.onnx, "status": self.status}
        if self.error is not None:
            out.update(failed_step=self.step, error=self.error)
        out.update(self.details)
        out["notes"] = list(self.notes)
        return out


def default_model_name(onnx_path: Path) -> str:
    """models/se/1/model.onnx -> "se_trt"; other files -> "<stem>_trt"."""
    onnx_path = Path(onnx_path)
    if onnx_path.parent.name.isdigit() and len(onnx_path.parts) >= 3:
        base = onnx_path.parent.parent.name
    else:
        base = onnx_path.stem
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "_" for c in base).lstrip("_.-") or "model"
    return f"{cleaned}_trt"


def triton_max_batch_size(summary: OnnxSummary, profiles: Sequence[Profile]) -> int:
    """Triton's max_batch_size for the plan, 0 when the engine cannot batch on dim 0.

    Triton's TensorRT backend serves from profile 0 unless the config lists others, and takes the batch
    limit as the smallest max dim 0 over the inputs. Batching needs dim 0 dynamic in every input and output
    and profile 0 to accept batch 1.
    """
    tensors = summary.inputs + summary.outputs
    if not tensors or any(not t.dims or t.dims[0] >= 0 for t in tensors):
        return 0
    first = profiles[0]
    if any(first[t.name].min[0] > 1 for t in summary.inputs):
        return 0
    return min(first[t.name].max[0] for t in summary.inputs)


def tensor_specs(tensors) -> list[TensorSpec]:
    return [TensorSpec(t.name, t.dtype, t.dims) for t in tensors]


def build_model(onnx_path: str | Path, *, precision: str | None = None, profile_flags: Sequence[str] = (),
                settings: BuildSettings | None = None, out_dir: str | Path = "models", name: str | None = None,
                version: int = 1, trt=None, gpu: GpuInfo | None = None, report: BuildReport | None = None,
                sink: Callable[[str, str], None] | None = None) -> BuildReport:
    """Build `onnx_path` into a Triton model directory; see the module docstring for the layout.

    Args:
        onnx_path: the ONNX file (an export's models/<name>/<v>/model.onnx, or any file).
        precision: "fp32", "fp16", "int8" or None for the graph's own precision.
        profile_flags: `--profile NAME:MIN:OPT:MAX` values; empty to use the sidecar or static shapes.
        settings: workspace, optimization level, timing cache.
        out_dir: the model repository to write into.
        name: model name (default: `default_model_name`).
        version: Triton version directory.
        trt: the tensorrt module; None imports it (and needs a GPU, checked through the CUDA driver).
        gpu: the GPU description for the sidecar; None asks the CUDA driver.
        report: a report to fill (the CLI passes one so it can print it when a step fails).
        sink: receives (severity, message) for TensorRT's warnings and errors.

    Returns:
        The filled report (status "ok").

    Raises:
        DeployKitError: UserInputError (exit 2) for unusable input, MissingDependency (exit 3) without
            TensorRT or a GPU, ParseFailed / BuildFailed (exit 1) when TensorRT rejects the graph.
    """
    onnx_path = Path(onnx_path)
    report = report or BuildReport(onnx=str(onnx_path))
    details = report.details
    try:
        report.step = "inspect"
        summary = summarize(onnx_path)
        onnx_sha = sha256_file(onnx_path)
        details["graph"] = {
            "sha256": onnx_sha, "precision": summary.precision, "qdq_nodes": summary.qdq_nodes,
            "inputs": [t.describe() for t in summary.inputs], "outputs": [t.describe() for t in summary.outputs],
        }
        name = check_model_name(name or default_model_name(onnx_path))
        model_dir = Path(out_dir) / name
        if (model_dir / str(version) / "model.onnx").exists():
            raise UserInputError(f"{model_dir} holds an ONNX model; the engine would replace its config.pbtxt",
                                 hint="choose another --name")

        report.step = "profiles"
        sidecar = None
        if not profile_flags:
            sidecar, problem = read_sidecar(onnx_path)
            if problem:
                report.notes.append(problem)
        profiles, source = resolve(summary.inputs, profile_flags, sidecar)
        details["profiles"] = {"source": source, "profiles": [profile_as_dict(p) for p in profiles]}

        report.step = "environment"
        if trt is None:
            trt, found_gpu = caps_mod.require_build_environment()
            gpu = gpu or found_gpu
        elif gpu is None:
            found_gpu, problem = caps_mod.cuda_device()
            if found_gpu is None:
                raise MissingDependency(f"no CUDA GPU is visible: {problem}", hint=caps_mod.INSTALL_HINT)
            gpu = found_gpu
        caps = caps_mod.detect(trt)
        details["tensorrt"] = caps.as_dict()
        details["gpu"] = gpu.as_dict()

        report.step = "precision"
        plan = decide_precision(summary, precision, caps)
        details["precision"] = plan.as_dict()
        if plan.note:
            report.notes.append(plan.note)

        report.step = "build"
        settings = settings or BuildSettings()
        result = build_serialized(trt, summary, profiles, plan, caps, settings, sink=sink)
        details["build"] = {
            "seconds": round(result.seconds, 3), "workspace_bytes": settings.workspace,
            "opt_level": settings.opt_level, "timing_cache": result.timing_cache,
            "network_inputs": result.network_inputs,
        }

        report.step = "write"
        version_dir = model_dir / str(version)
        sidecar_out = {
            "kind": "tensorrt_plan",
            "deploykit_version": __version__,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "build_seconds": round(result.seconds, 3),
            "tensorrt_version": caps.version,
            "tensorrt_api": caps.as_dict(),
            "gpu": {"name": gpu.name, "compute_capability": gpu.compute_capability, "index": gpu.index},
            "precision": plan.precision,
            "precision_plan": plan.as_dict(),
            "profiles": [profile_as_dict(p) for p in profiles],
            "profile_source": source,
            "onnx": {"path": str(onnx_path), "sha256": onnx_sha, "precision": summary.precision},
            "plan": {"file": PLAN_NAME, "bytes": len(result.plan), "sha256": hashlib.sha256(result.plan).hexdigest()},
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.dims)} for t in summary.inputs],
            "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.dims)} for t in summary.outputs],
            "builder": {"workspace_bytes": settings.workspace, "opt_level": settings.opt_level,
                        "timing_cache": result.timing_cache},
        }
        max_batch = triton_max_batch_size(summary, profiles)
        config_text = config_pbtxt(name, "tensorrt_plan", tensor_specs(summary.inputs),
                                   tensor_specs(summary.outputs), max_batch)

        def fill(staging: Path) -> None:
            atomic_write_bytes(staging / PLAN_NAME, result.plan)
            atomic_write_json(staging / MANIFEST_NAME, sidecar_out)
            atomic_write_text(staging / "config.pbtxt", config_text)

        # Plan, sidecar and config.pbtxt go in together through the repository journal: a kill at any moment
        # leaves the previous engine or the new one, never a plan beside another build's config.
        _, interrupted = install_version(Path(out_dir), model_dir, version, fill)
        plan_path, sidecar_path, config_path = version_dir / PLAN_NAME, version_dir / MANIFEST_NAME, \
            model_dir / "config.pbtxt"
        if interrupted:
            raise Interrupted(f"interrupted after the install; the repository holds the new engine {name}/{version}")
        if len(profiles) > 1:
            report.notes.append(f"{len(profiles)} profiles built; Triton serves profile 0 unless config.pbtxt "
                                f"lists others in instance_group 'profile'")
        details["output"] = {"model": name, "version": version, "plan": str(plan_path), "config": str(config_path),
                             "sidecar": str(sidecar_path), "max_batch_size": max_batch,
                             "profiles": describe_profiles(profiles)}
        report.status, report.step = "ok", ""
        return report
    except BaseException as exc:
        report.status = "failed"
        report.error = exc.one_line() if hasattr(exc, "one_line") else f"{exc.__class__.__name__}: {exc}"
        if hasattr(exc, "issues"):
            details["parser_errors"] = [issue.as_dict() for issue in exc.issues]
        if getattr(exc, "log", None):
            details["tensorrt_log"] = list(exc.log)
        raise
