"""`deploykit export`: build -> export (strategies) -> check -> verified simplify -> fp16 -> write artifacts.

Every stage fills the status object; the report (markdown and JSON) is written from it, and a failure while
writing the report never hides the original error. No graph reaches the model repository unless its outputs
were compared with PyTorch at every verification shape and passed.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from deploykit import __version__
from deploykit.errors import CheckFailed, Interrupted, UserInputError, out_of_memory
from deploykit.export.config import ExportConfig
from deploykit.export.stages import SIMPLIFY_TOLERANCE  # noqa: F401 - where it was defined before the stages split
from deploykit.repository import (
    MANIFEST_NAME, TensorSpec, atomic_write_json, atomic_write_text, check_model_name, config_pbtxt, sha256_file,
    version_dirs,
)
from deploykit.repository_journal import (
    WORK_PREFIX, Run, Staged, discard, install, recover, signals_deferred, sigterm_interrupts, staging_dir,
)

REPORT_NAME = "export_report.md"
VERIFICATION_CHOICE = ("opt, then min, max and an odd size taken by every dynamic dimension at once (registry blocks "
                       "and networks: batch min/opt/max at the export size and spatial min/max/odd), not the product "
                       "of every dimension's sizes")
# A failed run reports beside the models without replacing the report of the models that are in place.
FAILED_REPORT_NAME = "export_report.failed.md"


@dataclass
class Stage:
    name: str
    status: str = "pending"   # ok | failed | fallback | skipped
    seconds: float = 0.0
    detail: str = ""

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "seconds": round(self.seconds, 3), "detail": self.detail}


@dataclass
class Artifact:
    precision: str
    model_name: str
    onnx: Path
    manifest: Path
    config_pbtxt: Path
    version: int

    def as_dict(self) -> dict:
        return {"precision": self.precision, "model": self.model_name, "version": self.version,
                "onnx": str(self.onnx), "manifest": str(self.manifest), "config_pbtxt": str(self.config_pbtxt)}


@dataclass
class ExportStatus:
    config: ExportConfig
    stages: list[Stage] = field(default_factory=list)
    attempts: list = field(default_factory=list)
    exporter: str | None = None
    simplified: bool = False
    parity: dict = field(default_factory=dict)        # precision -> ParityReport
    artifacts: list[Artifact] = field(default_factory=list)
    error: str | None = None
    report_path: Path | None = None
    fp16_keep_nodes: list[str] = field(default_factory=list)
    source: object = None   # deploykit.sources.ModelSource once built
    allow_non_finite: bool = False   # --allow-non-finite: a reference answering NaN/Inf is not a failure

    @property
    def passed(self) -> bool:
        return self.error is None and all(bool(p) for p in self.parity.values()) and bool(self.artifacts)

    @property
    def first_failure(self) -> Stage | None:
        return next((s for s in self.stages if s.status == "failed"), None)

    def stage(self, name: str) -> Stage:
        st = Stage(name)
        self.stages.append(st)
        return st

    def as_dict(self) -> dict:
        main = next((a for a in self.artifacts if a.precision == "fp32"), self.artifacts[0] if self.artifacts else None)
        failure = self.first_failure
        return {
            "passed": self.passed,
            "model": self.config.model_name,
            "onnx": str(main.onnx) if main else None,
            "manifest": str(main.manifest) if main else None,
            "parity": {p: r.as_dict() for p, r in self.parity.items()},
            "artifacts": [a.as_dict() for a in self.artifacts],
            "exporter": self.exporter,
            "attempts": [a.as_dict() for a in self.attempts],
            "simplified": self.simplified,
            "allow_non_finite": self.allow_non_finite,
            "stages": [s.as_dict() for s in self.stages],
            "first_failed_stage": failure.name if failure else None,
            "error": self.error,
            "report": str(self.report_path) if self.report_path else None,
            "weights": self.source.weights_report if self.source else None,
            "conversion": self.source.conversion if self.source else None,
        }


def _library_versions() -> dict:
    import importlib.metadata as md
    import platform

    out = {"python": platform.python_version(), "deploykit": __version__}
    for dist in ("torch", "onnx", "onnxruntime", "onnxsim", "onnxscript", "onnxconverter-common", "numpy"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = None
    return out


def tensor_specs(model, which: str) -> list[TensorSpec]:
    """Inputs or outputs of an ONNX graph as TensorSpecs (-1 for symbolic or unknown dims)."""
    import onnx

    values = model.graph.input if which == "inputs" else model.graph.output
    inits = {i.name for i in model.graph.initializer}
    specs = []
    for v in values:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        specs.append(TensorSpec(v.name, dtype, dims))
    return specs


def _open_output_dir(out_dir: Path) -> Run:
    """This run's claim on the repository. Creating its lock is the write test: a kill leaves no probe file
    that cannot be told apart from a live run's, only a lock the next command sees is dead."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Run(out_dir)
    except OSError as exc:
        raise UserInputError(f"output directory '{out_dir}' is not writable: {exc.strerror or exc}",
                             hint="pass --out with a directory you can write to") from None


def _target_version(model_dir: Path, force: bool, new_version: bool) -> int:
    if model_dir.exists() and not model_dir.is_dir():
        raise UserInputError(f"'{model_dir}' is a file, where the model '{model_dir.name}' directory would go",
                             hint="move it away or pass another --out")
    # A stray file named like a version counts as an existing version: it is replaced only with --force.
    stray = sorted(int(p.name) for p in model_dir.iterdir() if p.name.isdigit() and int(p.name) > 0
                   and not p.is_dir()) if model_dir.is_dir() else []
    versions = sorted(set(version_dirs(model_dir)) | set(stray))
    if not versions:
        return 1
    if new_version:
        return versions[-1] + 1
    if force:
        return versions[-1]
    raise UserInputError(
        f"model '{model_dir.name}' version {versions[-1]} already exists in '{model_dir.parent}'",
        hint="pass --force to replace it or --new-version to add a version beside it",
    )


def run_export(config: ExportConfig, out_dir: str | Path = "models", *, force: bool = False,
               new_version: bool = False, progress=None, model=None, allow_non_finite: bool = False) -> ExportStatus:
    """Run the whole export. Raises UserInputError for unusable input before any work is done; returns the
    status otherwise (status.passed is the verdict) after writing the report. `model`: a live torch module
    to export instead of building the config's source (deploykit.export in Python)."""
    from deploykit.progress import Progress

    progress = progress or Progress("quiet")
    out_dir = Path(out_dir)
    name = check_model_name(config.model_name)
    model_names = {p: name if p == "fp32" else f"{name}_{p}" for p in config.precisions}
    journal_run = _open_output_dir(out_dir)
    try:
        for line in recover(out_dir):
            progress.info(f"recovered: {line}")
        versions = {p: _target_version(out_dir / m, force, new_version) for p, m in model_names.items()}
    except BaseException:
        journal_run.close()
        raise

    status = ExportStatus(config, allow_non_finite=allow_non_finite)
    report = True   # not for unusable input or an interruption: the error line says it all, and nothing ran
    with sigterm_interrupts(), journal_run:
        work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{journal_run.id}-", dir=out_dir))
        try:
            _run_stages(status, config, work, out_dir, model_names, versions, progress, journal_run, model=model)
        except CheckFailed as exc:
            status.error = exc.one_line()
        except OSError as exc:   # a full disk or a permission change mid-export; nothing was installed
            report = False
            raise UserInputError(f"file system error during the export: {exc}",
                                 hint=f"check the free space and permissions of '{out_dir}'") from None
        except (MemoryError, RuntimeError) as exc:
            if not out_of_memory(exc):
                raise
            report = False
            raise UserInputError("ran out of memory while exporting and verifying",
                                 hint="lower the largest batch with --batch or the input size with --size") from None
        except Interrupted:
            raise   # after the install: the report describes the models now in place
        except KeyboardInterrupt:
            report = False
            raise Interrupted("interrupted before the install; the repository keeps its previous models") from None
        except BaseException:
            report = False
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)
            if report:
                _report(status, out_dir / name, progress)
    return status


def _report(status: ExportStatus, model_dir: Path, progress) -> None:
    """The passing report replaces the last one (and any failed one); a failed run writes its own file."""
    try:
        status.report_path = _write_report(status, model_dir / (REPORT_NAME if status.passed else FAILED_REPORT_NAME))
        if status.passed:
            (model_dir / FAILED_REPORT_NAME).unlink(missing_ok=True)
    except OSError as exc:  # the report must never hide the export's own outcome
        progress.info(f"warning: could not write the export report: {exc}")


def _run_stages(status, config, work, out_dir, model_names, versions, progress, journal_run, model=None):
    from deploykit.export import stages

    run = stages.ExportRun(status, config, work, progress, model=model)
    try:
        stages.run_all(run)
    finally:   # a failed run's report names its weights and notes too
        status.source = run.source
    _write_stage(run, out_dir, model_names, versions, journal_run)


def _write_stage(run, out_dir, model_names, versions, journal_run):
    """Only verified graphs reach the repository, all precisions installed together or none."""
    status, config = run.status, run.config
    with run.stage("write") as st, run.progress.stage(f"write model repository entries to {out_dir}") as ps:
        staged: list[Staged] = []
        try:
            for precision, graph in run.graphs.items():
                if precision in config.precisions:
                    staged.append(_stage_model(graph, precision, model_names[precision], versions[precision],
                                               out_dir, config, run.source, status, run.timings, journal_run))
            with signals_deferred() as caught:
                install(journal_run, staged)
        finally:
            discard(staged)
        if caught:
            names = ", ".join(f"{e.artifact.model_name}/{e.artifact.version}" for e in staged)
            raise Interrupted(f"interrupted after the install; the repository holds the new models {names}")
        status.artifacts.extend(entry.artifact for entry in staged)
        ps.detail = ", ".join(f"{a.model_name}/{a.version}" for a in status.artifacts)
        st.status, st.detail = "ok", ps.detail
    failed = [p for p, r in status.parity.items() if not r]
    if failed:
        raise CheckFailed(f"{', '.join(failed)} graph failed parity with PyTorch "
                          f"(max abs {status.parity[failed[0]].max_abs:.3g}); it was not written",
                          hint="loosen its tolerance in the config only if the error is acceptable")


def _stage_model(graph, precision, model_name, version, out_dir, config, source, status, timings,
                 journal_run) -> Staged:
    """Write one model entry (model.onnx, manifest, config.pbtxt) into a staging directory beside its place."""
    import onnx

    from deploykit.export.exporters import graph_opset
    from deploykit.onnx_utils.graph import count_shape_nodes

    graph = onnx.ModelProto.FromString(graph.SerializeToString())
    meta = {"deploykit_version": __version__, "deploykit_source": config.source.label,
            "deploykit_variant": config.source.variant, "deploykit_precision": precision,
            "deploykit_config_sha256": config.sha256()}
    del graph.metadata_props[:]
    for k, v in meta.items():
        graph.metadata_props.add(key=k, value=v)
    graph.producer_name = "deploykit"
    graph.producer_version = __version__

    model_dir = out_dir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(journal_run, model_dir)
    try:
        onnx_path = staging / "model.onnx"
        onnx.save(graph, str(onnx_path))
        inputs, outputs = tensor_specs(graph, "inputs"), tensor_specs(graph, "outputs")
        manifest = {
            "deploykit_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model_name,
            "version": version,
            "precision": precision,
            "source": {**config.source.model_dump(mode="json"), "weights_report": source.weights_report,
                       "rebuild": source.rebuild, "conversion": source.conversion, "notes": source.notes},
            "config": config.model_dump(mode="json"),
            "config_sha256": config.sha256(),
            "seed": config.seed,
            # --allow-non-finite: PyTorch's outputs were not required to be finite; a NaN reference verifies little
            "allow_non_finite": status.allow_non_finite,
            "onnx": {"file": "model.onnx", "sha256": sha256_file(onnx_path), "opset": graph_opset(graph),
                     "ir_version": graph.ir_version, "exporter": status.exporter, "simplified": status.simplified,
                     "nodes": len(graph.graph.node), "shape_computation_nodes": count_shape_nodes(graph)},
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.dims)} for t in inputs],
            "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.dims)} for t in outputs],
            "profile": {t.name: {pick: list(t.shape(pick)) for pick in ("min", "opt", "max")} for t in source.inputs},
            "input_specs": [t.as_dict() for t in source.inputs],
            "verification": {"points": [{n: list(s) for n, s in p.items()} for p in source.points],
                             "choice": VERIFICATION_CHOICE},
            "parity": {p: r.as_dict() for p, r in status.parity.items() if p in ("fp32", precision)},
            "export_attempts": [a.as_dict() for a in status.attempts],
            "fp16_keep_nodes": status.fp16_keep_nodes if precision == "fp16" else None,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "versions": _library_versions(),
        }
        atomic_write_json(staging / MANIFEST_NAME, manifest)
        max_batch = _triton_max_batch(source, outputs)
        from deploykit.precisions import serving_config

        pbtxt = atomic_write_text(staging / "config.pbtxt", serving_config(
            precision, config_pbtxt(model_name, "onnxruntime_onnx", inputs, outputs, max_batch)))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    target = model_dir / str(version)
    return Staged(staging, target, model_dir / pbtxt.name,
                  Artifact(precision, model_name, target / "model.onnx", target / MANIFEST_NAME,
                           model_dir / "config.pbtxt", version))


def _triton_max_batch(source, outputs) -> int:
    """Triton's max_batch_size: the shared range of every input's dynamic first axis when every output is
    batch-first too; 0 (no implicit batch dim) otherwise."""
    if any(not t.dims for t in source.inputs):
        return 0
    firsts = {(t.dims[0].lo, t.dims[0].hi) for t in source.inputs}
    (lo, hi), = firsts if len(firsts) == 1 else ((0, 0),)
    if lo == hi or any(not t.dims or t.dims[0] != -1 for t in outputs):
        return 0
    return hi


def _write_report(status: ExportStatus, path: Path) -> Path:
    from deploykit.export.report import render_markdown

    return atomic_write_text(path, render_markdown(status))
