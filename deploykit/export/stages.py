"""The export stages before anything is written: build -> export -> check -> verify and simplify -> fp16.

Each stage reads and fills one `ExportRun`; they read the same for every kind of source (registry block or
network, the user's module, a saved program) because the source layer (deploykit.sources) hands them the same
object: the module to export, its reference, named inputs with ranges and verification points, output names.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.compare import Tolerance
from deploykit.errors import CheckFailed

# Simplified vs unsimplified graphs run the same kernels on the same inputs: they must agree far more
# tightly than either agrees with PyTorch.
SIMPLIFY_TOLERANCE = Tolerance(atol=1e-5, rtol=1e-5)
# Registry sources keep the dim names their graphs have always had.
_IMAGE_DIM_NAMES = {0: "batch", 2: "height", 3: "width"}


class OutputTolerances(dict):
    """A tolerance per output name, reading as the default tolerance where one tolerance is shown."""

    def __init__(self, default: Tolerance, per_output: dict[str, Tolerance]):
        super().__init__(per_output)
        self.default = default
        self.atol, self.rtol, self.mode = default.atol, default.rtol, default.mode

    def get(self, name, fallback=None):
        return super().get(name, self.default)


@dataclass
class ExportRun:
    """What the stages share: the inputs of the run, then what each stage produced."""

    status: object                  # pipeline.ExportStatus
    config: object
    work: Path
    progress: object
    model: object = None            # a live torch module (deploykit.export in Python), else built from the config
    timings: dict = field(default_factory=dict)
    source: object = None           # deploykit.sources.ModelSource
    feeds: dict = field(default_factory=dict)       # verification key -> {input name: array}
    expected: dict = field(default_factory=dict)    # verification key -> {output name: array}
    raw: object = None              # the exported onnx.ModelProto
    raw_outputs: dict = field(default_factory=dict)
    graphs: dict = field(default_factory=dict)      # precision -> verified onnx.ModelProto

    def stage(self, name: str):
        return _Timed(self, self.status.stage(name))

    def tolerance(self, precision: str):
        tol = Tolerance(**self.config.tolerances[precision].model_dump())
        per = {name: Tolerance(**by_precision[precision].model_dump())
               for name, by_precision in self.config.output_tolerances.items() if precision in by_precision}
        return OutputTolerances(tol, per) if per else tol


class _Timed:
    """A stage's record, its seconds set on exit (also when the stage raises)."""

    def __init__(self, run: ExportRun, st):
        self.run, self.st = run, st

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self.st

    def __exit__(self, *exc):
        self.st.seconds = time.perf_counter() - self.t0
        self.run.timings[self.st.name] = self.st.seconds
        return False


def key_of(point: dict) -> tuple:
    """The key of a verification point in the parity records: its shape (one input) or its shapes."""
    shapes = tuple(point.values())
    return shapes[0] if len(shapes) == 1 else shapes


def run_all(run: ExportRun) -> None:
    build(run)
    export(run)
    check(run)
    verify_and_simplify(run)
    fp16(run)
    engine_precisions(run)


def build(run: ExportRun) -> None:
    """The source: module to export, its reference, inputs, outputs, weights."""
    from deploykit.sources import build_source
    from deploykit.sources.weights import describe, live_weights

    with run.stage("build") as st, run.progress.stage("build PyTorch modules") as ps:
        if run.model is not None:
            from deploykit.sources.user_module import from_module

            run.source = from_module(run.config, run.model, label=run.config.source.module.removeprefix("<live>"),
                                     weights=live_weights(run.model))
        else:
            run.source = build_source(run.config)
        src = run.source
        ps.detail = src.label
        if src.kind in ("module", "program", "live"):
            conv = src.conversion
            swapped = (f"; export-safe rewrite: {len(conv['replaced'])} swapped, {len(conv['not_replaced'])} kept"
                       + ("" if conv.get("used", True) else f" ({conv['why']})")) if conv else ""
            ps.detail = f"{src.label}; {describe(src.weights_report)}{swapped}"
        st.status, st.detail = "ok", ps.detail


def _example(run: ExportRun):
    """The tensors the exporter traces: the export sizes, a dynamic dim of size 1 traced at 2 (torch.export
    specialises sizes 0 and 1)."""
    import torch

    from deploykit.sources.specs import make_feed

    inputs = run.source.inputs
    point = {t.name: tuple(2 if d.dynamic and d.opt < 2 <= d.hi else d.opt for d in t.dims) for t in inputs}
    feed = make_feed(inputs, point, run.config.seed)
    return tuple(torch.from_numpy(feed[t.name]) for t in inputs)


def _dynamic_axes(source) -> dict:
    names = _IMAGE_DIM_NAMES if source.kind in ("block", "network") else {}
    return {t.name: {axis: (names.get(axis), lo, hi) for axis, (lo, hi) in t.dynamic_axes.items()}
            for t in source.inputs if t.dynamic_axes}


def _verification_data(source, config, allow_non_finite: bool = False) -> tuple[dict, dict]:
    """Fresh seeded inputs per verification point and PyTorch's outputs for them, shared by every comparison."""
    from deploykit.sources.outputs import torch_outputs
    from deploykit.sources.specs import make_feed, point_label

    feeds = {key_of(p): make_feed(source.inputs, p, config.seed + 1 + i) for i, p in enumerate(source.points)}
    if source.kind in ("block", "network"):   # one image in, one tensor out
        from deploykit.export import verify

        name = source.input_names[0]
        expected = {k: verify.torch_outputs(source.reference, f[name], source.output_names) for k, f in feeds.items()}
    else:
        expected = {}
        for i, point in enumerate(list(source.points)):
            key = key_of(point)
            try:
                expected[key] = torch_outputs(source.reference, feeds[key], source.input_names, source.output_names)
            except Exception as exc:  # noqa: BLE001 - the model itself rejects this size
                if i != ODD_POINT or len(source.points) <= ODD_POINT:
                    from deploykit.sources.user_code import user_failure

                    raise user_failure(f"the model in PyTorch at {point_label(point)}", exc,
                                       hint="narrow the --dynamic ranges (or inputs:) to sizes the model takes") from None
                del feeds[key]
                found = _aligned_odd(source, config, seed=config.seed + 1 + i,
                                     accept=lambda f: torch_outputs(source.reference, f, source.input_names,
                                                                    source.output_names))
                if found is None:
                    source.points.pop(i)
                    source.notes.append(f"the model in PyTorch rejects {point_label(point)} and every aligned "
                                        "size tried; verified at min, opt and max only")
                    continue
                new_point, feed, outs, align = found
                source.points[i] = new_point
                feeds[key_of(new_point)], expected[key_of(new_point)] = feed, outs
                source.notes.append(f"the model in PyTorch rejects {point_label(point)} ({type(exc).__name__}); "
                                    f"its sizes are multiples of {align}, so the odd point is {point_label(new_point)}")
        feeds = {key_of(p): feeds[key_of(p)] for p in source.points}
    from deploykit.export.verify import non_finite_outputs, require_finite

    for key, outputs in expected.items():
        if not allow_non_finite:   # NaN compares equal to NaN: a reference answering NaN would verify anything
            require_finite(source.reference, tuple(feeds[key][n] for n in source.input_names), outputs)
        elif non_finite_outputs(outputs) and not any(n.startswith(NON_FINITE_NOTE) for n in source.notes):
            source.notes.append(f"{NON_FINITE_NOTE}: PyTorch's output '{non_finite_outputs(outputs)[0]}' holds NaN or "
                                "Inf on the verification inputs, and NaN compares equal to NaN, so parity proves "
                                "little for those values")
    return feeds, expected


# The note a run exported under --allow-non-finite carries when the reference really answered NaN/Inf.
NON_FINITE_NOTE = "exported under --allow-non-finite"

# verification_points' order for user sources: opt, min, max, odd.
ODD_POINT = 3


def _aligned_odd(source, config, seed: int, accept):
    """The first aligned odd point (multiples of 2, 4, ... 64) whose feed `accept` takes without raising:
    (point, feed, accept's result, alignment), or None."""
    from deploykit.sources.specs import ALIGNMENTS, aligned_odd_point, make_feed

    for align in ALIGNMENTS:
        point = aligned_odd_point(source.inputs, align)
        if point is None or key_of(point) in {key_of(p) for p in source.points[:ODD_POINT]}:
            continue
        feed = make_feed(source.inputs, point, seed)
        try:
            return point, feed, accept(feed), align
        except Exception:  # noqa: BLE001 - not this alignment either
            continue
    return None


def export(run: ExportRun) -> None:
    """Dynamo first, then TorchScript, each attempt recorded."""
    import math

    from deploykit.export.exporters import export_with_fallback, preload_exporter
    from deploykit.machine import check_input_fits

    config, source, status = run.config, run.source, run.status
    with run.stage("export") as st:
        # The verification inputs and PyTorch's outputs for them are computed on the second core while this
        # thread imports the exporter (seconds of single-threaded Python). They are done before tracing
        # starts, so eager PyTorch never runs while the exporter traces.
        points = ([key_of(p) for p in source.points] if len(source.inputs) == 1 else
                  [(sum(math.prod(shape) for shape in p.values()),) for p in source.points])
        check_input_fits(points, what="verifying",
                         hint="lower the largest batch with --batch or the input size with --size")
        example = _example(run)
        raw_path = run.work / "raw.onnx"
        with run.progress.stage("export to ONNX") as ps:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploykit-verification-data") as pool:
                pending = pool.submit(_verification_data, source, config, status.allow_non_finite)
                preload_exporter(config.exporters[0])
                run.feeds, run.expected = pending.result()
            outcome = export_with_fallback(source.exported, example, raw_path, strategies=tuple(config.exporters),
                                           input_names=source.input_names, output_names=source.output_names,
                                           dynamic_axes=_dynamic_axes(source), opset=config.opset)
            status.attempts = outcome.attempts
            if not outcome.ok:
                ps.outcome = "failed"
                ps.detail = "; ".join(f"{a.exporter}: {a.error}" for a in outcome.attempts)
        status.exporter = outcome.exporter
        if not outcome.ok:
            st.status, st.detail = "failed", ps.detail
            hint = ("use the export-safe variant (--variant safe) or see the export report" if source.kind in
                    ("block", "network") else "see the export report; --debug shows the exporter's log")
            raise CheckFailed(f"every exporter failed: {ps.detail}", hint=hint)
        fell_back = len(outcome.attempts) > 1
        st.status = "fallback" if fell_back else "ok"
        st.detail = f"{outcome.exporter}" + (f" after {outcome.attempts[0].exporter} failed: "
                                             f"{outcome.attempts[0].error}" if fell_back else "")


def check(run: ExportRun) -> None:
    """The ONNX checker on the raw graph, and every axis asked to be dynamic still dynamic."""
    import onnx

    with run.stage("check") as st:
        raw = onnx.load(str(run.work / "raw.onnx"))
        try:
            onnx.checker.check_model(raw, full_check=True)
        except Exception as exc:  # noqa: BLE001 - the exporter wrote an invalid graph
            st.status, st.detail = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            raise CheckFailed(f"the exported graph fails the ONNX checker: {st.detail}") from None
        # An exporter may silently specialise an axis that was asked to be dynamic (a module that reads sizes
        # from the tensor): the graph would reject every other size.
        graph_inputs = {i.name: i.type.tensor_type.shape.dim for i in raw.graph.input}
        axes = _dynamic_axes(run.source)
        frozen = [dim_name or f"{inp} axis {axis}" for inp, by_axis in axes.items()
                  for axis, (dim_name, _, _) in by_axis.items()
                  if axis < len(graph_inputs.get(inp, ())) and graph_inputs[inp][axis].HasField("dim_value")]
        if frozen:
            st.status = "failed"
            st.detail = f"{run.status.exporter} fixed the dynamic axes {', '.join(frozen)} to the example's sizes"
            hint = ("export the export-safe variant (--variant safe) or drop the dynamic range"
                    if run.source.kind in ("block", "network") else
                    "the model reads sizes from its input in a way the exporter fixes; drop those --dynamic axes")
            raise CheckFailed(f"the exported graph is not dynamic in {', '.join(frozen)}: the module reads sizes "
                              "from its input", hint=hint)
        st.status = "ok"
        run.raw = raw


def _parity(run: ExportRun, label: str, model, tol):
    from deploykit.backends.ort import OrtRunner
    from deploykit.export.verify import check_parity

    with OrtRunner(model.SerializeToString()) as runner:
        return check_parity(label, runner, run.source.input_names[0], run.expected, tol, run.feeds)


def verify_and_simplify(run: ExportRun) -> None:
    """The raw graph against PyTorch, then onnxsim's graph against both; the verified one is kept."""
    from deploykit.export.simplify import simplify
    from deploykit.export.verify import compare_recorded

    config, status, raw = run.config, run.status, run.raw
    tol32 = run.tolerance("fp32")
    with run.stage("simplify") as st:
        with run.progress.stage("verify the exported graph against PyTorch") as ps:
            raw_parity = _parity(run, "onnx vs pytorch", raw, tol32)
            if not raw_parity and run.source.kind not in ("block", "network"):
                raw_parity = _realign_for_graph(run, raw, raw_parity, tol32)
            raw_outputs = {sp.shape: sp.outputs or {} for sp in raw_parity.shapes}
            ps.detail = f"max abs {raw_parity.max_abs:.2e}"
            ps.outcome = "ok" if raw_parity else "failed"
        chosen, chosen_parity = raw, raw_parity
        if not config.simplify:
            st.status, st.detail = "skipped", "simplify: false in the config"
        else:
            with run.progress.stage("simplify with onnxsim and re-verify") as ps:
                result = simplify(raw)
                if not result.ok:
                    st.status, st.detail = "fallback", f"onnxsim failed ({result.error}); kept the unsimplified graph"
                elif _same_computation(result.model, raw):
                    # Nothing changed: the graph already verified above is the simplified graph.
                    status.simplified = True
                    st.status, st.detail = "ok", "onnxsim left the graph unchanged"
                else:
                    sim_parity = _parity(run, "simplified vs pytorch", result.model, tol32)
                    sim_vs_raw = compare_recorded("simplified vs unsimplified", sim_parity, raw_outputs,
                                                  SIMPLIFY_TOLERANCE)
                    if sim_parity and sim_vs_raw:
                        chosen, chosen_parity = result.model, sim_parity
                        status.simplified = True
                        st.status = "ok"
                        st.detail = f"{result.nodes_before} -> {result.nodes_after} nodes, verified"
                    elif sim_vs_raw:
                        # Same outputs as the exported graph: the export itself is what differs from PyTorch.
                        st.status = "ok"
                        st.detail = (f"{result.nodes_before} -> {result.nodes_after} nodes, same outputs as the "
                                     "exported graph (which differs from PyTorch)")
                    else:
                        st.status = "fallback"
                        st.detail = (f"onnxsim changed the outputs (max abs vs unsimplified {sim_vs_raw.max_abs:.2e}, "
                                     f"vs PyTorch {sim_parity.max_abs:.2e}); kept the unsimplified graph")
                ps.outcome, ps.detail = ("ok" if st.status == "ok" else "fallback"), st.detail
    status.parity["fp32"] = chosen_parity
    if not chosen_parity:
        worst = next(s for s in chosen_parity.shapes if not s.comparison)
        reasons = [o.reason for o in worst.comparison.outputs if o.reason]
        bad = [o.name for o in worst.comparison.outputs if not o.passed]
        which = f" (output {', '.join(bad)})" if len(run.source.output_names) > 1 and bad else ""
        how = (reasons[0] if reasons else f"max abs {worst.comparison.max_abs:.3g}, over atol {tol32.atol:g} with "
               f"rtol {tol32.rtol:g}")
        raise CheckFailed(f"ONNX Runtime outputs differ from PyTorch at input shape {shape_text(worst.shape)}{which}: "
                          f"{how}", hint="nothing was written; see the export report")
    run.graphs["fp32"] = chosen


def _realign_for_graph(run: ExportRun, raw, parity, tol):
    """When ONNX Runtime rejects only the odd point (PyTorch took it), the graph takes aligned sizes only (a
    UNet traced at a size divisible by 8 drops its resize branch): find the alignment it takes, verify there, and
    say so loudly. Wrong numbers are never realigned away, only a size the runtime refuses outright."""
    from deploykit.backends.ort import OrtRunner
    from deploykit.sources.outputs import torch_outputs
    from deploykit.sources.specs import point_label

    source = run.source
    failing = [sp for sp in parity.shapes if not sp.comparison]
    if len(source.points) <= ODD_POINT or len(failing) != 1 or failing[0].outputs is not None:
        return parity
    odd = source.points[ODD_POINT]
    if failing[0].shape != key_of(odd):
        return parity
    reason = next((o.reason for o in failing[0].comparison.outputs if o.reason), "")
    with OrtRunner(raw.SerializeToString()) as runner:
        def accept(feed):
            outs = torch_outputs(source.reference, feed, source.input_names, source.output_names)
            runner.infer(feed)   # raises where the graph refuses this size too
            return outs

        found = _aligned_odd(source, run.config, seed=run.config.seed + 1 + ODD_POINT, accept=accept)
    if found is None:
        return parity
    point, feed, outs, align = found
    del run.feeds[key_of(odd)], run.expected[key_of(odd)]
    source.points[ODD_POINT] = point
    run.feeds[key_of(point)], run.expected[key_of(point)] = feed, outs
    source.notes.append(f"WARNING: the exported graph refuses {point_label(odd)}, which PyTorch takes "
                        f"({reason.split(':')[0] if reason else 'runtime error'}); it takes sizes that are multiples of "
                        f"{align}: send those. Verified at {point_label(point)} instead")
    return _parity(run, "onnx vs pytorch", raw, tol)


def shape_text(shape) -> str:
    """[1, 3, 8, 8] for one input; [1, 3, 8, 8] + [1, 1, 8, 8] for several."""
    if shape and isinstance(shape[0], tuple):
        return " + ".join(str(list(s)) for s in shape)
    return str(list(shape))


def fp16(run: ExportRun) -> None:
    """The fp16 graph, verified against fp32 PyTorch with the fp16 tolerance; a failure fails this precision only."""
    from deploykit.export.fp16 import convert_to_fp16
    from deploykit.export.verify import ParityReport

    if "fp16" not in run.config.precisions:
        return
    status = run.status
    chosen = run.graphs["fp32"]
    with run.stage("fp16") as st:
        tol16 = run.tolerance("fp16")
        with run.progress.stage("convert to fp16 and verify") as ps:
            keep: list[str] = []
            try:
                keep = _fp16_keep_nodes(chosen, run.work, next(iter(run.feeds.values())))
                half = convert_to_fp16(chosen, fp32_nodes=keep)
                status.fp16_keep_nodes = keep
                parity16 = _parity(run, "fp16 onnx vs fp32 pytorch", half, tol16)
            except Exception as exc:  # noqa: BLE001 - a converter or runtime failure fails this precision only
                parity16 = ParityReport("fp16 onnx vs fp32 pytorch", tol16)  # no shapes: a failed verdict
                ps.detail = (f"fp16 conversion failed: {type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
            status.parity["fp16"] = parity16
            if parity16.shapes:
                ps.detail = (f"max abs {parity16.max_abs:.2e}, max rel {parity16.max_rel:.2e}"
                             + (f"; {len(keep)} nodes kept in fp32 for range" if keep else ""))
            ps.outcome = "ok" if parity16 else "failed"
        st.status, st.detail = ("ok" if parity16 else "failed"), ps.detail
    if parity16:
        run.graphs["fp16"] = half


def engine_precisions(run: ExportRun) -> None:
    """bf16 and INT8 Q/DQ graphs, built and gated against fp32 PyTorch by deploykit.precisions; a failure fails
    that precision only."""
    import sys

    chosen = run.graphs["fp32"]
    for precision in [p for p in run.config.precisions if p not in ("fp32", "fp16")]:
        from deploykit.precisions import make_precision

        if len(run.source.inputs) != 1:
            from deploykit.errors import UserInputError

            raise UserInputError(f"--precision {precision} takes models with one input; this one has "
                                 f"{len(run.source.inputs)}", hint="export it with --precision fp32 or fp16")
        name = run.source.input_names[0]
        inputs = {key: feed[name] for key, feed in run.feeds.items()}
        with run.stage(precision) as st, run.progress.stage(f"make {precision} and verify") as ps:
            made = make_precision(precision, chosen, input_name=name, inputs=inputs, expected=run.expected,
                                  work=run.work / precision, calibration=run.config.calibration, seed=run.config.seed,
                                  warn=lambda message: print(message, file=sys.stderr, flush=True))
            run.status.parity[precision] = made.report
            ps.detail = "; ".join(made.report.problems[:2] + [f"rel L2 {made.report.max_rel_l2:.2e}, cosine "
                                                              f"{made.report.min_cosine:.6f}"])
            ps.outcome = "ok" if made else "failed"
            st.status, st.detail = ("ok" if made else "failed"), ps.detail
        if made:
            run.graphs[precision] = made.model


def _fp16_keep_nodes(model, work: Path, feed: dict) -> list[str]:
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
    label = " + ".join("x".join(map(str, x.shape)) for x in feed.values())
    found, _ = scan(path, inspect_model(model), Feed(label, dict(feed)))
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
