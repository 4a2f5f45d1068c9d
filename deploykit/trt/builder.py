"""Build a TensorRT engine from an ONNX file, on TensorRT 10.x and 11.x alike.

The flow (same names in both APIs): Builder -> network (strongly typed where the flag exists) -> OnnxParser
(`parse_from_file`, so external weights next to the file load too; every error reported with its node) ->
builder config (workspace pool, optimization level, profiles, timing cache) -> `build_serialized_network`.

Precision is decided before TensorRT is touched (`decide_precision`): a strongly typed network computes in the
graph's own types, so `--precision` must agree with the graph. The one exception is TensorRT 10.x, whose
`BuilderFlag.FP16` can still turn an fp32 graph into a weakly typed fp16 engine; on 11.x that flag does not
exist and the user is sent to the fp16 graph that `deploykit export` writes.

`trt` is always a parameter: the CLI passes the real `tensorrt`, the API conformance tests pass the real
bindings with autospec'd objects, so every member used here is checked against both real APIs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from deploykit.errors import CheckFailed, UserInputError
from deploykit.repository import atomic_write_bytes
from deploykit.trt.capabilities import TrtCapabilities
from deploykit.trt.onnx_info import OnnxSummary
from deploykit.trt.profiles import Profile, format_shape

PRECISIONS = ("fp32", "fp16", "int8")


# --------------------------------------------------------------------------------------------- precision
@dataclass(frozen=True)
class PrecisionPlan:
    """How the engine gets its precision.

    Attributes:
        precision: what the engine computes in: "fp32", "fp16", "bf16" or "int8".
        strongly_typed: create the network with NetworkDefinitionCreationFlag.STRONGLY_TYPED.
        fp16_flag: set BuilderFlag.FP16 (weakly typed fp16 on TensorRT 10.x only).
        int8_flag: set BuilderFlag.INT8 (explicit Q/DQ on a TensorRT without strongly typed networks).
        source: "graph" (the graph's own types) or "builder flag".
        note: what the user should know about this choice ("" when nothing).
    """

    precision: str
    strongly_typed: bool
    fp16_flag: bool = False
    int8_flag: bool = False
    source: str = "graph"
    note: str = ""

    def as_dict(self) -> dict:
        return {"precision": self.precision, "strongly_typed": self.strongly_typed, "fp16_flag": self.fp16_flag,
                "int8_flag": self.int8_flag, "source": self.source, "note": self.note}


def sibling_graph(path: Path, fp16: bool) -> Path | None:
    """models/<name>/<v>/model.onnx <-> models/<name>_fp16/<v>/model.onnx (export's layout); None elsewhere."""
    path = Path(path)
    if len(path.parts) < 3 or not path.parent.name.isdigit():
        return None
    model_dir = path.parent.parent
    name = model_dir.name
    if fp16:
        target = name if name.endswith("_fp16") else f"{name}_fp16"
    else:
        target = name[: -len("_fp16")] if name.endswith("_fp16") else name
    return model_dir.parent / target / path.parent.name / path.name


def decide_precision(summary: OnnxSummary, requested: str | None, caps: TrtCapabilities) -> PrecisionPlan:
    """The precision plan for building `summary` with `--precision requested` (None: the graph's own).

    Raises:
        UserInputError: the request cannot be met with this graph on this TensorRT; the message says which
            graph to build instead.
    """
    graph = summary.precision
    want = requested or graph
    if want not in PRECISIONS + ("bf16",):
        raise UserInputError(f"unknown precision '{want}'", hint=f"valid: {', '.join(PRECISIONS)}")
    path = summary.path

    if want == graph:
        if caps.strongly_typed:
            return PrecisionPlan(graph, strongly_typed=True)
        # A TensorRT without strongly typed networks needs the flags to honour the graph's types.
        if graph == "fp32":
            return PrecisionPlan("fp32", strongly_typed=False)
        if graph == "fp16" and caps.fp16_flag:
            return PrecisionPlan("fp16", strongly_typed=False, fp16_flag=True, source="graph and builder flag")
        if graph == "int8" and caps.int8_flag:
            return PrecisionPlan("int8", strongly_typed=False, int8_flag=True, source="graph (Q/DQ) and builder flag")
        raise UserInputError(f"TensorRT {caps.version} can build neither strongly typed networks nor "
                             f"{graph} graphs with builder flags", hint="use TensorRT 10 or newer")

    if want == "int8":
        raise UserInputError(
            f"--precision int8 needs a graph with QuantizeLinear/DequantizeLinear nodes and {path} has none "
            f"(it is {graph}); deploykit does no calibration, and TensorRT 11 has no implicit INT8 calibration",
            hint="quantize the model first (e.g. with NVIDIA TensorRT Model Optimizer) and build that graph",
        )

    if want == "fp16" and graph == "fp32":
        fp16_graph = sibling_graph(path, fp16=True)
        where = f" ({fp16_graph})" if fp16_graph else ""
        if caps.fp16_flag:
            return PrecisionPlan(
                "fp16", strongly_typed=False, fp16_flag=True, source="builder flag",
                note=(f"weakly typed: TensorRT {caps.version} picks fp16 per layer with BuilderFlag.FP16; "
                      f"TensorRT 11 has no such flag, the portable route is the fp16 graph{where}"),
            )
        raise UserInputError(
            f"TensorRT {caps.version} has no FP16 builder flag: networks are strongly typed and take their "
            f"precision from the graph, and {path} is an fp32 graph",
            hint=f"build the fp16 graph that `deploykit export` writes{where}",
        )

    # fp32 asked of a reduced-precision graph, or fp16 of an int8/bf16 one: a strongly typed build would
    # silently compute in the graph's types, so refuse rather than mislabel the engine.
    other = sibling_graph(path, fp16=(want == "fp16"))
    hint = f"build with --precision {graph}" + (f", or build {other}" if other and want in ("fp32", "fp16") else "")
    raise UserInputError(f"{path} is a {graph} graph, so its engine computes in {graph}, not {want}", hint=hint)


# ----------------------------------------------------------------------------------------- build errors
@dataclass(frozen=True)
class ParserIssue:
    """One error of TensorRT's ONNX parser, with the node it is about."""

    code: str
    description: str
    node: int = -1
    node_name: str = ""
    node_op: str = ""
    source: str = ""  # file:line (function) inside the parser

    def where(self) -> str:
        if self.node < 0 and not self.node_name:
            return "graph"
        parts = [f"node {self.node}" if self.node >= 0 else "node"]
        if self.node_name:
            parts.append(f"'{self.node_name}'")
        if self.node_op:
            parts.append(f"({self.node_op})")
        return " ".join(parts)

    def __str__(self) -> str:
        return f"{self.where()}: {self.code}: {self.description}"

    def as_dict(self) -> dict:
        return {"code": self.code, "description": self.description, "node": self.node,
                "node_name": self.node_name, "node_op": self.node_op, "source": self.source}


def parser_issues(parser, summary: OnnxSummary | None, caps: TrtCapabilities) -> list[ParserIssue]:
    """Every error the parser recorded; node names and ops from the parser, else from the graph by index."""
    issues = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = int(error.node())
        name = op = ""
        if caps.parser_error_node_name:
            name, op = error.node_name(), error.node_operator()
        if summary is not None and 0 <= node < len(summary.node_names):
            name = name or summary.node_names[node]
            op = op or summary.node_ops[node]
        code = error.code()
        issues.append(ParserIssue(
            code=getattr(code, "name", str(code)), description=str(error.desc()).strip(), node=node,
            node_name=name, node_op=op, source=f"{error.file()}:{error.line()} ({error.func()})",
        ))
    return issues


class ParseFailed(CheckFailed):
    """TensorRT's ONNX parser rejected the graph; `issues` has every error with its node."""

    def __init__(self, path: Path, issues: Sequence[ParserIssue]):
        self.issues = list(issues)
        first = f"; first: {self.issues[0]}" if self.issues else ""
        more = f" ({len(self.issues)} errors, all listed above or in --json)" if len(self.issues) > 1 else ""
        super().__init__(f"TensorRT's ONNX parser rejected {path}{first}{more}",
                         hint="the node named is one TensorRT cannot import; re-export it or replace the op")


class BuildFailed(CheckFailed):
    """TensorRT returned no engine; `log` holds its error messages."""

    def __init__(self, message: str, log: Sequence[str] = ()):
        self.log = list(log)
        last = f"; TensorRT said: {self.log[-1]}" if self.log else ""
        super().__init__(f"{message}{last}")


# ------------------------------------------------------------------------------------------------ logger
def make_logger(trt, sink: Callable[[str, str], None] | None = None, verbose: bool = False):
    """A trt.ILogger that keeps warnings and errors (and info when verbose) and passes them to `sink`."""

    class DeployKitLogger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.records: list[tuple[str, str]] = []
            self._limit = int(trt.ILogger.Severity.INFO if verbose else trt.ILogger.Severity.WARNING)
            self._error = int(trt.ILogger.Severity.ERROR)

        def log(self, severity, msg):
            if int(severity) > self._limit:
                return
            label = getattr(severity, "name", str(severity))
            self.records.append((label, msg))
            if sink is not None:
                sink(label, msg)

        def errors(self) -> list[str]:
            return [msg for label, msg in self.records if label in ("ERROR", "INTERNAL_ERROR")]

    return DeployKitLogger()


# ------------------------------------------------------------------------------------------------- build
@dataclass
class BuildSettings:
    """Builder settings beyond precision and profiles.

    Attributes:
        workspace: workspace memory pool limit in bytes (None: TensorRT's default, the GPU's memory).
        opt_level: builder_optimization_level 0-5 (None: TensorRT's default, 3).
        timing_cache: file to read the timing cache from (when it exists) and write it back to.
        verbose: keep TensorRT's info messages too.
    """

    workspace: int | None = None
    opt_level: int | None = None
    timing_cache: Path | None = None
    verbose: bool = False


@dataclass
class BuildResult:
    plan: bytes
    seconds: float
    network_inputs: list[dict] = field(default_factory=list)
    timing_cache: dict | None = None
    log: list[tuple[str, str]] = field(default_factory=list)


def _host_bytes(buffer) -> bytes:
    """IHostMemory (or any buffer) -> bytes."""
    return bytes(memoryview(buffer))


def _attach_timing_cache(config, path: Path) -> tuple[object, dict]:
    data = path.read_bytes() if path.is_file() else b""
    info = {"path": str(path), "read_bytes": len(data), "status": "loaded" if data else "created"}
    cache = None
    try:
        cache = config.create_timing_cache(data)
        attached = cache is not None and config.set_timing_cache(cache, ignore_mismatch=False)
    except Exception:  # noqa: BLE001 - a corrupt cache file must not stop the build
        attached = False
    if not attached:
        # Made by another GPU or TensorRT version (or corrupt): start empty instead of failing the build.
        cache = config.create_timing_cache(b"")
        if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
            raise BuildFailed(f"TensorRT could not attach a timing cache ({path})")
        info["status"] = "discarded (another GPU or TensorRT version, or corrupt); created anew"
    return cache, info


def build_serialized(trt, summary: OnnxSummary, profiles: Sequence[Profile], plan: PrecisionPlan,
                     caps: TrtCapabilities, settings: BuildSettings | None = None,
                     sink: Callable[[str, str], None] | None = None) -> BuildResult:
    """Parse `summary.path` with TensorRT and build a serialized engine (plain plan bytes).

    Args:
        trt: the tensorrt module (real, or the bindings with autospec'd objects in the conformance tests).
        summary: the ONNX file's summary (onnx_info.summarize).
        profiles: optimization profiles, complete for every input (profiles.resolve).
        plan: the precision plan (decide_precision).
        caps: the detected API (capabilities.detect(trt)).
        settings: workspace, optimization level, timing cache.
        sink: called with (severity, message) for each TensorRT warning and error as it happens.

    Raises:
        ParseFailed: the parser rejected the graph (every error, with its node).
        BuildFailed: TensorRT returned no engine, or rejected a setting.
    """
    settings = settings or BuildSettings()
    start = time.perf_counter()
    logger = make_logger(trt, sink, settings.verbose)
    builder = trt.Builder(logger)
    if builder is None:
        raise BuildFailed("TensorRT could not create a builder", logger.errors())

    flags = 0
    if plan.strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    # The parser owns the weights the network points at: it stays alive (a local) until the build is done.
    parser = trt.OnnxParser(network, logger)
    parsed = parser.parse_from_file(str(summary.path))
    issues = parser_issues(parser, summary, caps)
    if not parsed or issues:
        raise ParseFailed(summary.path, issues or [ParserIssue("UNKNOWN", "parse_from_file returned False")])

    network_inputs = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        network_inputs.append({"name": tensor.name, "shape": [int(d) for d in tensor.shape],
                               "dtype": getattr(tensor.dtype, "name", str(tensor.dtype))})
    for number, profile in enumerate(profiles):
        missing = [t["name"] for t in network_inputs if t["name"] not in profile]
        if missing:
            raise BuildFailed(f"profile {number} has no shapes for network input(s) {', '.join(missing)}")

    config = builder.create_builder_config()
    if settings.workspace is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace))
    if settings.opt_level is not None:
        if not caps.optimization_level:
            raise BuildFailed(f"TensorRT {caps.version} has no builder optimization level; drop --opt-level")
        config.builder_optimization_level = int(settings.opt_level)
    if plan.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)  # capability-checked in decide_precision: exists on 10.x only
    if plan.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)

    for number, profile in enumerate(profiles):
        trt_profile = builder.create_optimization_profile()
        for name, shape_range in profile.items():
            trt_profile.set_shape(name, shape_range.min, shape_range.opt, shape_range.max)
        if config.add_optimization_profile(trt_profile) < 0:
            raise BuildFailed(f"TensorRT rejected optimization profile {number} "
                              f"({', '.join(f'{n}:{r}' for n, r in profile.items())})", logger.errors())

    cache_info = None
    if settings.timing_cache is not None:
        _, cache_info = _attach_timing_cache(config, Path(settings.timing_cache))

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildFailed(f"TensorRT could not build an engine from {summary.path}", logger.errors())
    plan_bytes = _host_bytes(serialized)
    if not plan_bytes:
        raise BuildFailed(f"TensorRT returned an empty engine for {summary.path}", logger.errors())

    if settings.timing_cache is not None:
        cache_bytes = _host_bytes(config.get_timing_cache().serialize())
        atomic_write_bytes(settings.timing_cache, cache_bytes)
        cache_info["written_bytes"] = len(cache_bytes)
    return BuildResult(plan=plan_bytes, seconds=time.perf_counter() - start, network_inputs=network_inputs,
                       timing_cache=cache_info, log=list(logger.records))


# ------------------------------------------------------------------------------------------- CLI helpers
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30,
          "gib": 2**30, "ti": 2**40, "tib": 2**40}


def parse_size(text: str) -> int:
    """'2GiB' -> 2147483648, '512MiB', '1.5GB', '1048576' (bytes)."""
    match = _SIZE_RE.match(str(text))
    unit = (match.group(2) or "").lower() if match else None
    if not match or unit not in _UNITS:
        raise UserInputError(f"invalid size '{text}'", hint="write it like 2GiB, 512MiB, 1GB or a number of bytes")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise UserInputError(f"invalid size '{text}': it must be more than 0 bytes",
                             hint="pass a size such as 2GiB or 512MiB")
    return size


def describe_profiles(profiles: Sequence[Profile]) -> list[str]:
    return [", ".join(f"{name} {format_shape(r.min)}..{format_shape(r.opt)}..{format_shape(r.max)}"
                      for name, r in p.items()) for p in profiles]
