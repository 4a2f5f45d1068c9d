"""The served repository: every model of a Triton-layout directory, one runner and scheduler per version.

Loading follows Triton's rules where they apply: the directory name is the model name (and must match
config.pbtxt's `name` when it sets one), `platform: "onnxruntime_onnx"` / `backend: "onnxruntime"` load
`model.onnx` with ONNX Runtime, `platform: "tensorrt_plan"` / `backend: "tensorrt"` load `model.plan`
with TensorRT, `default_model_filename` overrides the file name, and `version_policy` picks the versions
(default: the latest one). config.pbtxt's inputs and outputs are the contract requests are checked
against, and they are checked against the model file itself when it loads, so a stale config fails at
start-up rather than on the first request.

A model that cannot load because TensorRT or a GPU is missing is skipped with its reason (listed by
`POST /v2/repository/index`), so one repository with ONNX and TensorRT entries serves its ONNX models on a
CPU machine; any other load failure stops the server at start-up, like Triton's default exit-on-error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploykit.errors import DeployKitError, MissingDependency, UserInputError
from deploykit.repository import MODEL_NAME_RE, version_dirs
from deploykit.repository_journal import recover
from deploykit.serve.model_config import data_type_name, load_config
from deploykit.serve.protocol import DATATYPES, InferRequest, ProtocolError, is_decimal, triton_to_kserve
from deploykit.serve.scheduler import Scheduler, Stats
from deploykit.serve.settings import ServeSettings

ONNX, PLAN = "onnxruntime_onnx", "tensorrt_plan"
OPENVINO = "openvino"   # Triton names no platform for it: `backend: "openvino"` (model.xml, or model.onnx by name)
DEFAULT_FILES = {ONNX: "model.onnx", PLAN: "model.plan", OPENVINO: "model.xml"}
BACKENDS = {"onnxruntime": ONNX, "tensorrt": PLAN, "openvino": OPENVINO}


@dataclass(frozen=True)
class TensorMeta:
    """One input or output as the wire sees it: full shape, dim 0 = -1 (the batch) when batching."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass
class ModelVersion:
    """One loaded version: its runner, its scheduler and its counters."""

    model: "Model"
    version: int
    path: Path
    runner: object
    scheduler: Scheduler
    stats: Stats = field(default_factory=Stats)

    @property
    def label(self) -> str:
        return f"{self.model.name} v{self.version}"


@dataclass
class Model:
    name: str
    platform: str
    config: object                  # inference.ModelConfig
    max_batch_size: int
    inputs: list[TensorMeta]
    outputs: list[TensorMeta]
    batching: bool = False
    versions: dict[int, ModelVersion] = field(default_factory=dict)
    batching_decision: object = None   # batching.BatchingDecision under --batching auto

    def metadata(self) -> dict:
        return {"name": self.name, "versions": [str(v) for v in sorted(self.versions)], "platform": self.platform,
                "inputs": [t.as_dict() for t in self.inputs], "outputs": [t.as_dict() for t in self.outputs]}

    # ------------------------------------------------------------------------------ request checks
    def check_request(self, request: InferRequest) -> tuple[dict[str, np.ndarray], int]:
        """The feed for the runner and the request's batch size, or a 400 saying what does not fit."""
        by_name = {t.name: t for t in request.inputs}
        expected = {t.name: t for t in self.inputs}
        unknown = [n for n in by_name if n not in expected]
        if unknown:
            raise ProtocolError(f"model '{self.name}' has no input '{unknown[0]}'; its inputs are "
                                + ", ".join(self._describe(t) for t in self.inputs))
        missing = [t for t in self.inputs if t.name not in by_name]
        if missing:
            raise ProtocolError(f"model '{self.name}' needs input {self._describe(missing[0])}, which the request "
                                "does not have")
        batch = None
        feed = {}
        for meta in self.inputs:
            got = by_name[meta.name]
            if got.datatype != meta.datatype:
                raise ProtocolError(f"input '{meta.name}' of model '{self.name}' is {meta.datatype}, the request "
                                    f"sent {got.datatype}")
            shape = tuple(got.shape)
            if len(shape) != len(meta.shape) or any(want not in (-1, have) for want, have in zip(meta.shape, shape)):
                raise ProtocolError(f"input '{meta.name}' of model '{self.name}' has shape {list(meta.shape)} "
                                    f"(-1: any size), the request sent {list(shape)}")
            if self.max_batch_size > 0:
                n = shape[0]
                if not 1 <= n <= self.max_batch_size:
                    raise ProtocolError(f"the batch of input '{meta.name}' is {n}; model '{self.name}' takes 1 to "
                                        f"{self.max_batch_size} (max_batch_size in its config.pbtxt)")
                if batch is not None and n != batch:
                    raise ProtocolError(f"the inputs of one request must share their batch size; got {batch} and {n}")
                batch = n
            if 0 in shape:
                raise ProtocolError(f"input '{meta.name}' has an empty dimension: {list(shape)}")
            feed[meta.name] = got.array
        return feed, batch or 1

    def pick_outputs(self, request: InferRequest, results: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs the request asked for, in its order (every output, in model order, by default)."""
        names = [o.name for o in request.outputs] if request.outputs else [t.name for t in self.outputs]
        return {n: results[n] for n in names}

    def check_outputs(self, request: InferRequest) -> None:
        known = {t.name for t in self.outputs}
        for o in request.outputs or ():
            if o.name not in known:
                raise ProtocolError(f"model '{self.name}' has no output '{o.name}'; its outputs are "
                                    + ", ".join(sorted(known)))

    @staticmethod
    def _describe(t: TensorMeta) -> str:
        return f"'{t.name}' ({t.datatype} {list(t.shape)})"


@dataclass
class Unavailable:
    name: str
    version: str
    reason: str


RunnerFactory = Callable[[str, Path, ServeSettings], object]


def default_runner(platform: str, path: Path, settings: ServeSettings):
    """An activated runner for the model file (ONNX Runtime, OpenVINO or TensorRT)."""
    if platform == ONNX:
        from deploykit.backends.ort import OrtRunner

        # Threads sleep between requests instead of spinning: the event loop needs the cores to read the next.
        return OrtRunner(path, threads=settings.threads, spinning=False).activate()
    if platform == OPENVINO:
        from deploykit.backends.openvino import serving_runner

        return serving_runner(path, settings.threads).activate()
    from deploykit.backends.trt import TrtRunner

    return TrtRunner(path).activate()


class Repository:
    """The models of one repository directory, loaded and ready to schedule."""

    def __init__(self, root: Path, models: dict[str, Model], unavailable: list[Unavailable]):
        self.root = root
        self.models = models
        self.unavailable = unavailable

    # -------------------------------------------------------------------------------------- loading
    @classmethod
    def load(cls, root: str | Path, settings: ServeSettings | None = None,
             runner_factory: RunnerFactory = default_runner, log: Callable[[str], None] = lambda _m: None
             ) -> Repository:
        """Load every model under `root`.

        Raises:
            UserInputError: the directory is missing or holds no model, or a model cannot load.
            MissingDependency: every model needs something missing (TensorRT, a GPU).
        """
        settings = settings or ServeSettings()
        root = Path(root)
        if not root.is_dir():
            raise UserInputError(f"model repository '{root}' does not exist or is not a directory",
                                 hint="create one with `deploykit export --block se --out DIR`")
        for line in recover(root):   # an install a kill interrupted is finished or undone first
            log(f"recovered: {line}")
        models, unavailable, errors, hints = {}, [], [], []
        candidates = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for model_dir in candidates:
            if not (model_dir / "config.pbtxt").is_file():
                if version_dirs(model_dir):
                    errors.append(f"{model_dir.name}: has version directories but no config.pbtxt")
                continue
            try:
                model = _load_model(model_dir, settings, runner_factory)
            except MissingDependency as exc:
                unavailable.append(Unavailable(model_dir.name, "", exc.one_line()))
                log(f"skipping model '{model_dir.name}': {exc.one_line()}")
                continue
            except DeployKitError as exc:   # the message here, its hint in the one hint of the line below
                errors.append(f"{model_dir.name}: {exc.message}")
                hints.append(exc.hint)
                continue
            models[model.name] = model
        if errors:
            for model in models.values():
                _release(model)
            advice = "; ".join(dict.fromkeys(h for h in hints if h))   # each distinct hint once, in order
            raise UserInputError(f"{len(errors)} model(s) in '{root}' cannot be served: " + "; ".join(errors),
                                 hint=(f"{advice}; or " if advice else "fix them or ") + "move them out of the "
                                      "repository: the server starts only when every model loads")
        if not models:
            if unavailable:
                raise MissingDependency(f"no model in '{root}' can be served here: "
                                        + "; ".join(f"{u.name}: {u.reason}" for u in unavailable))
            raise UserInputError(f"model repository '{root}' has no model: no <name>/config.pbtxt in it",
                                 hint="add one with `deploykit export --block se --out DIR`")
        return cls(root, models, unavailable)

    # -------------------------------------------------------------------------------------- lookup
    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """The model version a URL names: 400 for a malformed name or version, 404 for an unknown one."""
        if not MODEL_NAME_RE.fullmatch(name) or name in {".", ".."}:
            raise ProtocolError(f"'{name[:80]}' is not a valid model name (letters, digits, '_', '-', '.'; no paths)")
        model = self.models.get(name)
        if model is None:
            skipped = next((u for u in self.unavailable if u.name == name), None)
            if skipped is not None:
                raise ProtocolError(f"model '{name}' is unavailable on this server: {skipped.reason}", status=503)
            raise ProtocolError(f"unknown model '{name}'; this server has {', '.join(sorted(self.models))}",
                                status=404)
        if version is None or version == "":
            return model.versions[max(model.versions)]
        if not is_decimal(version):  # ASCII digits only: str.isdigit takes '²' and '٢' too
            raise ProtocolError(f"'{version[:40]}' is not a valid version (a positive integer)")
        loaded = model.versions.get(int(version))
        if loaded is None:
            raise ProtocolError(f"model '{name}' has no version {int(version)}; loaded versions: "
                                + ", ".join(str(v) for v in sorted(model.versions)), status=404)
        return loaded

    def index(self) -> list[dict]:
        """Triton's repository index: every model version with its state."""
        rows = [{"name": m.name, "version": str(v), "state": "READY"}
                for m in self.models.values() for v in sorted(m.versions)]
        rows += [{"name": u.name, "version": u.version, "state": "UNAVAILABLE", "reason": u.reason}
                 for u in self.unavailable]
        return sorted(rows, key=lambda r: (r["name"], r["version"]))

    def versions(self):
        for model in self.models.values():
            yield from model.versions.values()

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        for mv in self.versions():
            mv.scheduler.start()

    async def stop(self, timeout_s: float = 30.0) -> None:
        for mv in self.versions():
            await mv.scheduler.stop(timeout_s)
        for model in self.models.values():
            _release(model)


def _release(model: Model) -> None:
    for mv in model.versions.values():
        deactivate = getattr(mv.runner, "deactivate", None)
        if deactivate is not None:
            deactivate()


def _platform(config) -> str:
    platform = config.platform or BACKENDS.get(config.backend, "")
    if platform not in DEFAULT_FILES:
        what = f"platform '{config.platform}'" if config.platform else f"backend '{config.backend or '(none)'}'"
        raise UserInputError(f"{what} is not served by deploykit",
                             hint="deploykit serves onnxruntime_onnx, tensorrt_plan and openvino models; "
                                  "Triton serves the rest")
    return platform


def _tensors(entries, max_batch: int, which: str) -> list[TensorMeta]:
    out = []
    for entry in entries:
        type_name = data_type_name(entry.data_type)
        datatype = triton_to_kserve(type_name)
        if datatype not in DATATYPES:
            raise UserInputError(f"{which} '{entry.name}' has data_type {type_name}, which deploykit does not serve",
                                 hint="export the model with a data type deploykit serves, e.g. TYPE_FP32")
        if entry.HasField("reshape"):
            raise UserInputError(f"{which} '{entry.name}' uses 'reshape', which deploykit does not serve",
                                 hint="remove the reshape entry from config.pbtxt")
        dims = tuple(int(d) for d in entry.dims)
        out.append(TensorMeta(entry.name, datatype, ((-1,) + dims) if max_batch > 0 else dims))
    return out


def _versions(config, available: list[int]) -> list[int]:
    policy = config.version_policy
    which = policy.WhichOneof("policy_choice") if config.HasField("version_policy") else None
    if which == "all":
        return available
    if which == "specific":
        wanted = sorted(int(v) for v in policy.specific.versions)
        absent = [v for v in wanted if v not in available]
        if absent:
            raise UserInputError(f"version_policy names version(s) {absent}, which have no directory",
                                 hint="add those version directories or change version_policy")
        return wanted
    count = policy.latest.num_versions if which == "latest" else 1
    return available[-max(1, count):]


def _load_model(model_dir: Path, settings: ServeSettings, runner_factory: RunnerFactory) -> Model:
    name = model_dir.name
    if not MODEL_NAME_RE.fullmatch(name):
        raise UserInputError(f"directory '{name}' is not a valid model name",
                             hint="rename the directory with letters, digits, '_', '-' and '.'")
    config = load_config(model_dir / "config.pbtxt")
    if config.name and config.name != name:
        raise UserInputError(f"config.pbtxt names the model '{config.name}' but its directory is '{name}'",
                             hint="Triton requires them to match")
    platform = _platform(config)
    max_batch = int(config.max_batch_size)
    if max_batch < 0:
        raise UserInputError(f"max_batch_size is {max_batch}; it must be 0 (no batching) or more",
                             hint="set max_batch_size to 0 or a positive batch size in config.pbtxt")
    inputs = _tensors(config.input, max_batch, "input")
    outputs = _tensors(config.output, max_batch, "output")
    if not inputs or not outputs:
        raise UserInputError("config.pbtxt lists no inputs or no outputs",
                             hint="deploykit needs both; `deploykit export` writes them")
    available = version_dirs(model_dir)
    if not available:
        raise UserInputError("no version directory (1/, 2/, ...) with a model file",
                             hint="export a version into it with `deploykit export`, or move the directory away")
    filename = config.default_model_filename or DEFAULT_FILES[platform]
    if "/" in filename or filename in {".", ".."}:
        raise UserInputError(f"default_model_filename '{filename}' must be a plain file name",
                             hint="name a file inside the version directory, without a path")

    batching = {"off": False, "on": max_batch > 0, "auto": max_batch > 0,
                "config": max_batch > 0 and config.HasField("dynamic_batching")}[settings.batching]
    delay_us = settings.max_queue_delay_us
    if delay_us is None:
        delay_us = int(config.dynamic_batching.max_queue_delay_microseconds)
    instances = settings.instances or sum(int(g.count) for g in config.instance_group) or 1
    if platform in (PLAN, OPENVINO):
        instances = 1  # one TensorRT execution context / OpenVINO infer request per version: runs must not overlap
    max_group = min(settings.max_batch or max_batch, max_batch) if max_batch > 0 else 1

    model = Model(name, platform, config, max_batch, inputs, outputs, batching)
    try:
        for version in _versions(config, available):
            path = model_dir / str(version) / filename
            if not path.is_file():
                raise UserInputError(f"version {version} has no {filename}",
                                     hint="put the model file in that version directory, or remove the directory")
            runner = _open_runner(runner_factory, platform, path, settings, version)
            stats = Stats()
            scheduler = Scheduler(runner.infer, batching=batching, max_batch=max_group, max_delay_s=delay_us / 1e6,
                                  instances=instances, max_queue=settings.max_queue, stats=stats,
                                  name=f"{name}-{version}")
            model.versions[version] = ModelVersion(model, version, path, runner, scheduler, stats)
            _check_runner(model, runner, version)
            if settings.batching == "auto" and max_batch > 0:
                if model.batching_decision is None:  # measured on the first version, applied to all
                    _decide_batching(model, runner, max_group, delay_us)
                scheduler.batching = model.batching
    except BaseException:
        _release(model)
        raise
    return model


def _open_runner(runner_factory: RunnerFactory, platform: str, path: Path, settings: ServeSettings, version: int):
    """The version's activated runner. A file the runtime refuses (garbage bytes, external data outside the
    model's folder, an op it lacks) is unusable input, said in one line, not the runtime's traceback."""
    import re

    try:
        return runner_factory(platform, path, settings)
    except DeployKitError:
        raise
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime and TensorRT raise their own exception types
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*\w+\s*:\s*", "", text)
        runtime = "ONNX Runtime" if platform == ONNX else "TensorRT"
        raise UserInputError(f"version {version}: {runtime} cannot load {path.name}: {type(exc).__name__}: "
                             f"{text[:300]}",
                             hint="re-export the model, or copy it and its external data whole into the "
                                  "version folder") from None


def _decide_batching(model: Model, runner, max_group: int, delay_us: int) -> None:
    """Measure whether merged batches are cheaper per sample (serve.batching) and serve accordingly; the
    config as served says what was chosen and why."""
    from deploykit.serve.batching import BatchingDecision, choose

    try:
        decision = choose(runner.infer, model.inputs, max_group)
    except Exception as exc:  # noqa: BLE001 - a probe that cannot run must not stop the server
        decision = BatchingDecision(False, {}, f"the probe could not run ({type(exc).__name__}: {str(exc)[:200]})")
    model.batching_decision = decision
    model.batching = decision.enabled
    if decision.enabled:
        model.config.dynamic_batching.max_queue_delay_microseconds = delay_us
    else:
        model.config.ClearField("dynamic_batching")
    model.config.parameters["deploykit_batching"].string_value = decision.describe()


def _check_runner(model: Model, runner, version: int) -> None:
    """config.pbtxt against the model file: same tensor names, types and ranks."""
    session = getattr(runner, "session", None)
    if session is None:  # TensorRT: the runner knows its I/O names and dtypes
        names_in = list(getattr(runner, "inputs", []) or [])
        names_out = list(getattr(runner, "outputs", []) or [])
        dtypes = dict(getattr(runner, "dtypes", {}) or {})
        shapes, ranks = {}, {}
    else:
        from deploykit.backends.ort import ORT_DTYPES

        names_in = [i.name for i in session.get_inputs()]
        names_out = [o.name for o in session.get_outputs()]
        dtypes = {t.name: np.dtype(ORT_DTYPES[t.type]) for t in [*session.get_inputs(), *session.get_outputs()]
                  if t.type in ORT_DTYPES}
        shapes = {t.name: t.shape for t in [*session.get_inputs(), *session.get_outputs()] if isinstance(t.shape, list)}
        ranks = {name: len(shape) for name, shape in shapes.items()}
    if not names_in and not names_out:
        return
    where = f"version {version} of model '{model.name}'"
    for which, metas, names in (("inputs", model.inputs, names_in), ("outputs", model.outputs, names_out)):
        if sorted(t.name for t in metas) != sorted(names) and not (which == "outputs" and
                                                                    {t.name for t in metas} <= set(names)):
            raise UserInputError(f"config.pbtxt lists {which} {sorted(t.name for t in metas)} but {where} has "
                                 f"{sorted(names)}", hint="re-create config.pbtxt with `deploykit export`")
        for t in metas:
            if t.name in dtypes and dtypes[t.name] != t.dtype:
                raise UserInputError(f"config.pbtxt says {t.name} is {t.datatype} but {where} has "
                                     f"{dtypes[t.name]}",
                                     hint="make config.pbtxt match the model file, e.g. export it again")
            if t.name in ranks and ranks[t.name] != len(t.shape):
                raise UserInputError(f"config.pbtxt gives {t.name} {len(t.shape)} dims (with the batch) but "
                                     f"{where} has {ranks[t.name]}",
                                     hint="make config.pbtxt match the model file, e.g. export it again")
            if t.name in shapes:
                _check_dims(model, t, shapes[t.name], where)


def _check_dims(model: Model, meta: TensorMeta, model_shape: list, where: str) -> None:
    """config.pbtxt dims against the model file's, as Triton checks them before loading.

    A fixed dim in the model must be the config's (a -1 there would advertise sizes the model refuses),
    and with max_batch_size > 0 the model's first dim must be free, or batched requests fail at run time.
    """
    fixed = [d if isinstance(d, int) and d >= 0 else None for d in model_shape]
    if model.max_batch_size > 0 and fixed[0] is not None and not (fixed[0] == 1 and model.max_batch_size == 1):
        raise UserInputError(f"config.pbtxt sets max_batch_size {model.max_batch_size} but {where} fixes the first dim "
                             f"of {meta.name} at {fixed[0]}", hint="export with a dynamic batch axis, or set "
                             "max_batch_size: 0 and give dims with the batch")
    start = 1 if model.max_batch_size > 0 else 0  # config.pbtxt dims leave out the batch
    if any(m is not None and c != m for c, m in zip(meta.shape[start:], fixed[start:])):
        model_dims = [-1 if d is None else d for d in fixed[start:]]
        raise UserInputError(f"config.pbtxt gives {meta.name} dims {list(meta.shape[start:])} but {where} has "
                             f"{model_dims}", hint="re-create config.pbtxt with `deploykit export`")
