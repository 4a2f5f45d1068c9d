"""`deploykit export`: build -> export (strategies) -> check -> verified simplify -> fp16 -> write artifacts.

Every stage fills the status object; the report (markdown and JSON) is written from it, and a failure while
writing the report never hides the original error. No graph reaches the model repository unless its outputs
were compared with PyTorch at every verification shape and passed.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from deploykit import __version__
from deploykit.compare import Tolerance
from deploykit.errors import CheckFailed, Interrupted, UserInputError, out_of_memory
from deploykit.export.config import ExportConfig
from deploykit.machine import check_input_fits
from deploykit.repository import (
    MANIFEST_NAME, TensorSpec, atomic_write_json, atomic_write_text, check_model_name, config_pbtxt, sha256_file,
    version_dirs,
)
from deploykit.repository_journal import (
    WORK_PREFIX, Run, Staged, discard, install, recover, signals_deferred, sigterm_interrupts, staging_dir,
)

REPORT_NAME = "export_report.md"
# A failed run reports beside the models without replacing the report of the models that are in place.
FAILED_REPORT_NAME = "export_report.failed.md"
# Simplified vs unsimplified graphs run the same kernels on the same inputs: they must agree far more
# tightly than either agrees with PyTorch.
SIMPLIFY_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-5)


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
            "stages": [s.as_dict() for s in self.stages],
            "first_failed_stage": failure.name if failure else None,
            "error": self.error,
            "report": str(self.report_path) if self.report_path else None,
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


def _check_output_dir(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".deploykit-write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
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
               new_version: bool = False, progress=None, allow_non_finite: bool = False) -> ExportStatus:
    """Run the whole export. Raises UserInputError for unusable input before any work is done; returns the
    status otherwise (status.passed is the verdict) after writing the report."""
    from deploykit.progress import Progress

    progress = progress or Progress("quiet")
    out_dir = Path(out_dir)
    name = check_model_name(config.model_name)
    model_names = {p: name if p == "fp32" else f"{name}_{p}" for p in config.precisions}
    _check_output_dir(out_dir)
    for line in recover(out_dir):
        progress.info(f"recovered: {line}")
    versions = {p: _target_version(out_dir / m, force, new_version) for p, m in model_names.items()}

    status = ExportStatus(config, allow_non_finite=allow_non_finite)
    report = True   # not for unusable input or an interruption: the error line says it all, and nothing ran
    with sigterm_interrupts(), Run(out_dir) as run:
        work = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{run.id}-", dir=out_dir))
        try:
            _run_stages(status, config, work, out_dir, model_names, versions, progress, run)
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


def _run_stages(status, config, work, out_dir, model_names, versions, progress, run):
    import onnx
    import torch

    from deploykit.backends.ort import OrtRunner
    from deploykit.export.exporters import export_with_fallback, preload_exporter
    from deploykit.export.fp16 import convert_to_fp16
    from deploykit.export.simplify import simplify
    from deploykit.export.source import build_modules
    from deploykit.export.verify import ParityReport, check_parity, compare_recorded, make_input, verification_shapes

    timings: dict[str, float] = {}

    def timed(stage: Stage, start: float):
        stage.seconds = time.perf_counter() - start
        timings[stage.name] = stage.seconds

    inp = config.input
    # 1. build
    st, t0 = status.stage("build"), time.perf_counter()
    with progress.stage("build PyTorch modules") as ps:
        mods = build_modules(config)
        ps.detail = f"{config.source.block or config.source.network} ({config.source.variant})"
    st.status, st.detail = "ok", ps.detail
    timed(st, t0)

    # 2. export, dynamo first, then TorchScript
    st, t0 = status.stage("export"), time.perf_counter()
    # The verification inputs and PyTorch's outputs for them are computed on the second core while this
    # thread imports the exporter (seconds of single-threaded Python). They are done before tracing starts,
    # so eager PyTorch never runs while the exporter traces.
    dyn: dict[int, tuple[str, int, int]] = {}
    if inp.batch.min != inp.batch.max:
        dyn[0] = ("batch", inp.batch.min, inp.batch.max)
    if inp.height.dynamic:
        dyn[2] = ("height", inp.height.lo, inp.height.hi)
    if inp.width.dynamic:
        dyn[3] = ("width", inp.width.lo, inp.width.hi)
    shapes = verification_shapes(config, mods.channels)
    check_input_fits(shapes, what="verifying",
                     hint="lower the largest batch with --batch or the input size with --size")
    # torch.export specialises dims of size 0/1, so the example batch is at least 2 when the batch is dynamic.
    example_batch = max(inp.batch.opt, 2) if 0 in dyn else inp.batch.opt
    example = torch.from_numpy(make_input((example_batch, mods.channels, inp.height.opt, inp.width.opt), config.seed))
    raw_path = work / "raw.onnx"
    with progress.stage("export to ONNX") as ps:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploykit-verification-data") as pool:
            pending = pool.submit(_verification_data, mods.reference, shapes, config, status.allow_non_finite)
            preload_exporter(config.exporters[0])
            inputs, expected = pending.result()
        outcome = export_with_fallback(mods.exported, (example,), raw_path, strategies=tuple(config.exporters),
                                       input_names=[inp.name], output_names=[config.output_name],
                                       dynamic_axes={inp.name: dyn}, opset=config.opset)
        status.attempts = outcome.attempts
        if not outcome.ok:
            ps.outcome = "failed"
            ps.detail = "; ".join(f"{a.exporter}: {a.error}" for a in outcome.attempts)
    status.exporter = outcome.exporter
    timed(st, t0)
    if not outcome.ok:
        st.status, st.detail = "failed", ps.detail
        raise CheckFailed(f"every exporter failed: {ps.detail}",
                          hint="use the export-safe variant (--variant safe) or see the export report")
    fell_back = len(outcome.attempts) > 1
    st.status = "fallback" if fell_back else "ok"
    st.detail = f"{outcome.exporter}" + (f" after {outcome.attempts[0].exporter} failed: {outcome.attempts[0].error}" if fell_back else "")

    # 3. structural check of the raw graph
    st, t0 = status.stage("check"), time.perf_counter()
    raw = onnx.load(str(raw_path))
    try:
        onnx.checker.check_model(raw, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the exporter wrote an invalid graph
        st.status, st.detail = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        timed(st, t0)
        raise CheckFailed(f"the exported graph fails the ONNX checker: {st.detail}") from None
    # An exporter may silently specialise an axis that was asked to be dynamic (a module that reads sizes
    # from the tensor): the graph would reject every other size.
    dims = raw.graph.input[0].type.tensor_type.shape.dim
    frozen = [dyn[axis][0] for axis in dyn if axis < len(dims) and dims[axis].HasField("dim_value")]
    if frozen:
        st.status = "failed"
        st.detail = f"{outcome.exporter} fixed the dynamic axes {', '.join(frozen)} to the example's sizes"
        timed(st, t0)
        raise CheckFailed(f"the exported graph is not dynamic in {', '.join(frozen)}: the module reads sizes "
                          "from its input", hint="export the export-safe variant (--variant safe) or drop the dynamic range")
    st.status = "ok"
    timed(st, t0)

    tol32 = Tolerance(**config.tolerances["fp32"].model_dump())

    # 4. verified simplification
    st, t0 = status.stage("simplify"), time.perf_counter()
    with progress.stage("verify the exported graph against PyTorch") as ps:
        with OrtRunner(raw.SerializeToString()) as runner:
            raw_parity = check_parity("onnx vs pytorch", runner, inp.name, expected, tol32, inputs)
        raw_outputs = {sp.shape: sp.outputs or {} for sp in raw_parity.shapes}
        ps.detail = f"max abs {raw_parity.max_abs:.2e}"
        ps.outcome = "ok" if raw_parity else "failed"
    chosen, chosen_parity = raw, raw_parity
    if not config.simplify:
        st.status, st.detail = "skipped", "simplify: false in the config"
    else:
        with progress.stage("simplify with onnxsim and re-verify") as ps:
            result = simplify(raw)
            if not result.ok:
                st.status, st.detail = "fallback", f"onnxsim failed ({result.error}); kept the unsimplified graph"
            elif _same_computation(result.model, raw):
                # Nothing changed: the graph already verified above is the simplified graph.
                status.simplified = True
                st.status, st.detail = "ok", "onnxsim left the graph unchanged"
            else:
                with OrtRunner(result.model.SerializeToString()) as runner:
                    sim_parity = check_parity("simplified vs pytorch", runner, inp.name, expected, tol32, inputs)
                sim_vs_raw = compare_recorded("simplified vs unsimplified", sim_parity, raw_outputs, SIMPLIFY_TOLERANCE)
                if sim_parity and sim_vs_raw:
                    chosen, chosen_parity = result.model, sim_parity
                    status.simplified = True
                    st.status = "ok"
                    st.detail = f"{result.nodes_before} -> {result.nodes_after} nodes, verified"
                elif sim_vs_raw:
                    # Same outputs as the exported graph: the export itself is what differs from PyTorch.
                    st.status = "ok"
                    st.detail = (f"{result.nodes_before} -> {result.nodes_after} nodes, same outputs as the exported "
                                 "graph (which differs from PyTorch)")
                else:
                    st.status = "fallback"
                    st.detail = (f"onnxsim changed the outputs (max abs vs unsimplified {sim_vs_raw.max_abs:.2e}, "
                                 f"vs PyTorch {sim_parity.max_abs:.2e}); kept the unsimplified graph")
            ps.outcome, ps.detail = ("ok" if st.status == "ok" else "fallback"), st.detail
    timed(st, t0)
    status.parity["fp32"] = chosen_parity
    if not chosen_parity:
        worst = next(s for s in chosen_parity.shapes if not s.comparison)
        reasons = [o.reason for o in worst.comparison.outputs if o.reason]
        how = (reasons[0] if reasons else f"max abs {worst.comparison.max_abs:.3g}, over atol {tol32.atol:g} with "
               f"rtol {tol32.rtol:g}")
        raise CheckFailed(f"ONNX Runtime outputs differ from PyTorch at input shape {list(worst.shape)}: {how}",
                          hint="nothing was written; see the export report")

    # 5. fp16 graph, verified against fp32 PyTorch with the fp16 tolerance
    graphs = {"fp32": chosen}
    if "fp16" in config.precisions:
        st, t0 = status.stage("fp16"), time.perf_counter()
        tol16 = Tolerance(**config.tolerances["fp16"].model_dump())
        with progress.stage("convert to fp16 and verify") as ps:
            try:
                keep = _fp16_keep_nodes(chosen, work, inp.name, inputs[shapes[0]])
                half = convert_to_fp16(chosen, fp32_nodes=keep)
                status.fp16_keep_nodes = keep
                with OrtRunner(half.SerializeToString()) as runner:
                    parity16 = check_parity("fp16 onnx vs fp32 pytorch", runner, inp.name, expected, tol16, inputs)
            except Exception as exc:  # noqa: BLE001 - a converter or runtime failure fails this precision only
                parity16 = ParityReport("fp16 onnx vs fp32 pytorch", tol16)  # no shapes: a failed verdict
                ps.detail = f"fp16 conversion failed: {type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            status.parity["fp16"] = parity16
            if parity16.shapes:
                ps.detail = (f"max abs {parity16.max_abs:.2e}, max rel {parity16.max_rel:.2e}"
                             + (f"; {len(keep)} nodes kept in fp32 for range" if keep else ""))
            ps.outcome = "ok" if parity16 else "failed"
        st.status, st.detail = ("ok" if parity16 else "failed"), ps.detail
        timed(st, t0)
        if parity16:
            graphs["fp16"] = half

    # 5b. engine precisions (bf16, INT8 Q/DQ): built and gated against fp32 PyTorch by deploykit.precisions
    for precision in [p for p in config.precisions if p not in ("fp32", "fp16")]:
        import sys

        from deploykit.precisions import make_precision

        st, t0 = status.stage(precision), time.perf_counter()
        with progress.stage(f"make {precision} and verify") as ps:
            made = make_precision(precision, chosen, input_name=inp.name, inputs=inputs, expected=expected,
                                  work=work / precision, calibration=config.calibration, seed=config.seed,
                                  warn=lambda message: print(message, file=sys.stderr, flush=True))
            status.parity[precision] = made.report
            ps.detail = "; ".join(made.report.problems[:2] + [f"rel L2 {made.report.max_rel_l2:.2e}, cosine "
                                                              f"{made.report.min_cosine:.6f}"])
            ps.outcome = "ok" if made else "failed"
        st.status, st.detail = ("ok" if made else "failed"), ps.detail
        timed(st, t0)
        if made:
            graphs[precision] = made.model

    # 6. artifacts: only verified graphs
    st, t0 = status.stage("write"), time.perf_counter()
    with progress.stage(f"write model repository entries to {out_dir}") as ps:
        staged: list[Staged] = []
        try:
            for precision, graph in graphs.items():
                if precision in config.precisions:
                    staged.append(_stage_model(graph, precision, model_names[precision], versions[precision],
                                               out_dir, config, mods, status, timings, run))
            with signals_deferred() as caught:
                install(run, staged)
        finally:
            discard(staged)
        if caught:
            names = ", ".join(f"{e.artifact.model_name}/{e.artifact.version}" for e in staged)
            raise Interrupted(f"interrupted after the install; the repository holds the new models {names}")
        status.artifacts.extend(entry.artifact for entry in staged)
        ps.detail = ", ".join(f"{a.model_name}/{a.version}" for a in status.artifacts)
    st.status, st.detail = "ok", ps.detail
    timed(st, t0)
    failed = [p for p, r in status.parity.items() if not r]
    if failed:
        raise CheckFailed(f"{', '.join(failed)} graph failed parity with PyTorch "
                          f"(max abs {status.parity[failed[0]].max_abs:.3g}); it was not written",
                          hint="loosen its tolerance in the config only if the error is acceptable")


def _verification_data(reference, shapes, config, allow_non_finite=False) -> tuple[dict, dict]:
    """Fresh seeded inputs per verification shape and PyTorch's outputs for them, shared by every comparison."""
    from deploykit.export.verify import make_input, require_finite, torch_outputs

    inputs = {s: make_input(s, config.seed + 1 + i) for i, s in enumerate(shapes)}
    expected = {s: torch_outputs(reference, x, [config.output_name]) for s, x in inputs.items()}
    if not allow_non_finite:
        for s, outputs in expected.items():
            require_finite(reference, inputs[s], outputs)
    return inputs, expected


def _fp16_keep_nodes(model, work: Path, input_name: str, x) -> list[str]:
    """Nodes to keep in fp32: producers and readers of tensors whose fp32 values leave the fp16 range.

    ONNX Runtime on CPU computes some fp16 ops in fp32 internally and so hides an overflow that TensorRT,
    which holds every tensor in its declared type, would turn into Inf; measuring the fp32 graph's
    intermediate ranges catches it before conversion.
    """
    import onnx

    from deploykit.validate.fp16 import keep_list, scan
    from deploykit.validate.graphinfo import inspect_model
    from deploykit.validate.inputs import Feed

    path = work / "fp32_for_ranges.onnx"
    onnx.save(model, str(path))
    found, _ = scan(path, inspect_model(model), Feed("x".join(map(str, x.shape)), {input_name: x}))
    return keep_list(found)


def _same_computation(a, b) -> bool:
    """Same nodes, weights and I/O; annotations (node metadata, value_info, doc strings) may differ."""
    ga, gb = a.graph, b.graph

    def ops(graph):
        return [(n.op_type, n.domain, list(n.input), list(n.output), list(n.attribute)) for n in graph.node]

    def io(values):
        return [(v.name, v.type) for v in values]

    return (ops(ga) == ops(gb) and list(ga.initializer) == list(gb.initializer)
            and io(ga.input) == io(gb.input) and io(ga.output) == io(gb.output))


def _stage_model(graph, precision, model_name, version, out_dir, config, mods, status, timings, run) -> Staged:
    """Write one model entry (model.onnx, manifest, config.pbtxt) into a staging directory beside its place."""
    import onnx

    from deploykit.export.exporters import graph_opset
    from deploykit.onnx_utils.graph import count_shape_nodes

    graph = onnx.ModelProto.FromString(graph.SerializeToString())
    meta = {"deploykit_version": __version__, "deploykit_source": config.source.block or config.source.network,
            "deploykit_variant": config.source.variant, "deploykit_precision": precision,
            "deploykit_config_sha256": config.sha256()}
    del graph.metadata_props[:]
    for k, v in meta.items():
        graph.metadata_props.add(key=k, value=v)
    graph.producer_name = "deploykit"
    graph.producer_version = __version__

    model_dir = out_dir / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(run, model_dir)
    try:
        onnx_path = staging / "model.onnx"
        onnx.save(graph, str(onnx_path))
        inputs, outputs = tensor_specs(graph, "inputs"), tensor_specs(graph, "outputs")
        b = config.input.batch
        shape_of = lambda n, h, w: [n, mods.channels, h, w]  # noqa: E731
        manifest = {
            "deploykit_version": __version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "model": model_name,
            "version": version,
            "precision": precision,
            "source": {**config.source.model_dump(mode="json"), "weights_report": mods.weights_report},
            "config": config.model_dump(mode="json"),
            "config_sha256": config.sha256(),
            "seed": config.seed,
            "onnx": {"file": "model.onnx", "sha256": sha256_file(onnx_path), "opset": graph_opset(graph),
                     "ir_version": graph.ir_version, "exporter": status.exporter, "simplified": status.simplified,
                     "nodes": len(graph.graph.node), "shape_computation_nodes": count_shape_nodes(graph)},
            "inputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.dims)} for t in inputs],
            "outputs": [{"name": t.name, "dtype": t.dtype, "shape": list(t.dims)} for t in outputs],
            "profile": {config.input.name: {
                "min": shape_of(b.min, config.input.height.lo, config.input.width.lo),
                "opt": shape_of(b.opt, config.input.height.opt, config.input.width.opt),
                "max": shape_of(b.max, config.input.height.hi, config.input.width.hi)}},
            "parity": {p: r.as_dict() for p, r in status.parity.items() if p in ("fp32", precision)},
            "export_attempts": [a.as_dict() for a in status.attempts],
            "fp16_keep_nodes": status.fp16_keep_nodes if precision == "fp16" else None,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "versions": _library_versions(),
        }
        atomic_write_json(staging / MANIFEST_NAME, manifest)
        max_batch = b.max if b.min != b.max else 0
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


def _write_report(status: ExportStatus, path: Path) -> Path:
    from deploykit.export.report import render_markdown

    return atomic_write_text(path, render_markdown(status))
