"""Autospec'd stand-ins for TensorRT objects, made from the REAL bindings' classes, with call checking.

`create_autospec(real_class, instance=True, spec_set=True)` makes reading or writing a member that the real
class lacks an AttributeError. pybind11 methods carry no Python signatures, so autospec alone would accept
any arguments; `ApiRecorder.violations()` therefore checks every recorded call against the signatures in
the real docstrings (`name(self: T, a: X, b: Y = ...) -> R`, all overloads): arity, keyword names, enum and
class types, str vs Path, buffers, and calling a property as if it were a method. The enums stay the real
ones, so `trt.BuilderFlag.FP16` on 11.x raises AttributeError exactly as it would with TensorRT installed.

Used inside the per-version subprocess (conformance_cases.py), where `tensorrt_bindings` imports against the
stub libraries of conformance_env.py.
"""

from __future__ import annotations

import ctypes
import inspect
import numbers
import re
import types
from dataclasses import dataclass
from unittest import mock

import numpy as np

PREFIX = "tensorrt_bindings.tensorrt."
_SIGNATURE_LINE = re.compile(r"^\s*(?:\d+\.\s+)?(?P<name>\w+)\((?P<params>.*)\)\s*->\s*(?P<ret>.+?)\s*$")


# ------------------------------------------------------------------------------------- docstring signatures
@dataclass(frozen=True)
class Param:
    name: str
    annotation: str
    default: str | None  # the default's text, None when required


def _split_top_level(text: str) -> list[str]:
    parts, depth, current = [], 0, []
    for char in text:
        if char in "[(<{":
            depth += 1
        elif char in "])>}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if "".join(current).strip():
        parts.append("".join(current).strip())
    return parts


def _parse_param(text: str) -> Param:
    name, _, rest = text.partition(":")
    annotation, default = rest, None
    pieces = _split_top_level_eq(rest)
    if len(pieces) == 2:
        annotation, default = pieces
    return Param(name.strip(), annotation.strip(), default.strip() if default is not None else None)


def _split_top_level_eq(text: str) -> list[str]:
    depth = 0
    for i, char in enumerate(text):
        if char in "[(<{":
            depth += 1
        elif char in "])>}":
            depth -= 1
        elif text[i:i + 3] == " = " and depth == 0:
            return [text[:i], text[i + 3:]]
    return [text]


def overloads(cls, method: str) -> list[list[Param]]:
    """The parameter lists (self excluded) of every overload documented for `cls.method`."""
    doc = getattr(getattr(cls, method, None), "__doc__", None) or ""
    found = []
    for line in doc.splitlines():
        match = _SIGNATURE_LINE.match(line)
        if match and match.group("name") == method and "*args" not in match.group("params"):
            params = [_parse_param(p) for p in _split_top_level(match.group("params"))]
            found.append(params[1:] if params and params[0].name == "self" else params)
    return found


# ------------------------------------------------------------------------------------------- type checks
def _resolve(real, annotation: str):
    if not annotation.startswith(PREFIX):
        return None
    obj = real
    for part in annotation[len(PREFIX):].split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _type_problem(real, annotation: str, default: str | None, value) -> str | None:
    """Why `value` cannot pass for `annotation` (None when it can)."""
    if value is None and default == "None":
        return None
    if annotation in ("typing.SupportsInt", "int"):
        ok = isinstance(value, numbers.Integral) or hasattr(type(value), "__index__")
        return None if ok else f"expected an int, got {type(value).__name__}"
    if annotation in ("typing.SupportsFloat", "float"):
        return None if isinstance(value, numbers.Real) else f"expected a float, got {type(value).__name__}"
    if annotation == "str":
        return None if isinstance(value, str) else f"expected str, got {type(value).__name__}"
    if annotation == "bool":
        return None if isinstance(value, (bool, np.bool_)) else f"expected bool, got {type(value).__name__}"
    if annotation == "tuple":
        return None if isinstance(value, tuple) else f"expected tuple, got {type(value).__name__}"
    if annotation == "list":
        return None if isinstance(value, list) else f"expected list, got {type(value).__name__}"
    if annotation.startswith("collections.abc.Sequence"):
        return None if isinstance(value, (list, tuple)) else f"expected a sequence, got {type(value).__name__}"
    if "Buffer" in annotation:
        try:
            memoryview(value)
        except TypeError:
            return f"expected a buffer (bytes), got {type(value).__name__}"
        return None
    cls = _resolve(real, annotation)
    if cls is None or not isinstance(cls, type):
        return None  # C++ names the bindings do not expose, `object`, ...: not checkable
    if cls.__name__.startswith("Dims"):
        ints = isinstance(value, (tuple, list)) and all(isinstance(v, numbers.Integral) for v in value)
        if isinstance(value, cls) or ints:
            return None
        return f"expected Dims or a tuple of ints, got {value!r}"
    if isinstance(value, cls):
        return None
    return f"expected {cls.__name__}, got {type(value).__name__} {value!r}"


def check_call(real, cls, method: str, args: tuple, kwargs: dict) -> str | None:
    """Why calling `cls.method(*args, **kwargs)` would fail on the real bindings (None when it would not)."""
    static = inspect.getattr_static(cls, method, None)
    if static is None:
        return f"{cls.__name__}.{method} does not exist"
    if isinstance(static, property):
        return f"{cls.__name__}.{method} is a property, not a method"
    candidates = overloads(cls, method)
    if not candidates:
        return None  # no documented signature: existence is all we can check
    problems = []
    for params in candidates:
        signature = inspect.Signature([
            inspect.Parameter(p.name, inspect.Parameter.POSITIONAL_ONLY if re.fullmatch(r"arg\d+", p.name)
                              else inspect.Parameter.POSITIONAL_OR_KEYWORD,
                              default=inspect.Parameter.empty if p.default is None else p.default)
            for p in params
        ])
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            problems.append(str(exc))
            continue
        by_name = {p.name: p for p in params}
        type_errors = [f"{name}: {why}" for name, value in bound.arguments.items()
                       if (why := _type_problem(real, by_name[name].annotation, by_name[name].default, value))]
        if not type_errors:
            return None
        problems.append("; ".join(type_errors))
    return f"{cls.__name__}.{method}{_show(args, kwargs)} matches no real signature: " + " / ".join(problems)


def _show(args, kwargs) -> str:
    shown = [repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return "(" + ", ".join(shown) + ")"


# ----------------------------------------------------------------------------------------------- recorder
class ApiRecorder:
    """Makes autospec'd objects of real classes and checks every call made on them."""

    def __init__(self, real):
        self.real = real
        self.objects: list[tuple[mock.NonCallableMagicMock, type]] = []
        self.constructed: list[tuple[str, tuple, dict]] = []
        self.problems: list[str] = []
        self.unchecked: set[str] = set()  # methods called whose docstring gave no signature to check against

    def make(self, class_name: str, **attributes):
        cls = getattr(self.real, class_name)  # AttributeError here: the class itself is gone
        obj = mock.create_autospec(cls, instance=True, spec_set=True)
        for name, value in attributes.items():
            setattr(obj, name, value)
        self.objects.append((obj, cls))
        return obj

    def constructor(self, class_name: str, produce):
        """A stand-in for `trt.<class_name>(...)` that checks the arguments and returns `produce(*args)`."""
        cls = getattr(self.real, class_name)

        def construct(*args, **kwargs):
            problem = check_call(self.real, cls, "__init__", args, kwargs)
            if problem:
                self.problems.append(problem)
            self.constructed.append((class_name, args, kwargs))
            return produce(*args, **kwargs)

        return construct

    def violations(self) -> list[str]:
        found = list(self.problems)
        for obj, cls in self.objects:
            for name, args, kwargs in obj.method_calls:
                if "." in name:
                    continue  # calls on children are checked on the child itself
                problem = check_call(self.real, cls, name, args, kwargs)
                if problem:
                    found.append(problem)
                elif not overloads(cls, name):
                    self.unchecked.add(f"{cls.__name__}.{name}")
        return found


def fake_module(real, **replacements) -> types.ModuleType:
    """A module that is the real bindings except for `replacements` (constructors of autospec'd objects)."""
    module = types.ModuleType("tensorrt_conformance")
    module.__dict__.update(replacements)
    module.__version__ = real.__version__

    def __getattr__(name):  # PEP 562: everything else (enums, ILogger, nptype ...) is the real thing
        return getattr(real, name)

    module.__getattr__ = __getattr__
    return module


# ------------------------------------------------------------------------------------------ build scenario
@dataclass
class BuildFakes:
    module: types.ModuleType
    builder: object
    network: object
    parser: object
    config: object
    profiles: list
    caches: list
    loggers: list


def build_fakes(recorder: ApiRecorder, *, network_inputs=(("input", (-1, 3, 8, 8)),), parsed: bool = True,
                parser_errors=(), plan: bytes = b"fake-plan-bytes", cache_attach: bool | list[bool] = True,
                on_build=None) -> BuildFakes:
    """Builder, network, parser and config objects wired the way TensorRT returns them.

    Args:
        network_inputs: (name, shape) of the inputs the parsed network reports.
        parsed: what parse_from_file returns.
        parser_errors: ParserError stand-ins get_error(i) returns.
        plan: what build_serialized_network returns (a buffer, as IHostMemory is); None for failure.
        cache_attach: what set_timing_cache returns (a list: one value per call).
        on_build: called with the logger before build_serialized_network returns (to log errors).
    """
    real = recorder.real
    tensors = [recorder.make("ITensor", name=name, shape=tuple(shape), dtype=real.DataType.FLOAT)
               for name, shape in network_inputs]
    network = recorder.make("INetworkDefinition", num_inputs=len(tensors))
    network.get_input.side_effect = lambda i: tensors[i]
    parser = recorder.make("OnnxParser", num_errors=len(parser_errors))
    parser.parse_from_file.return_value = parsed
    parser.get_error.side_effect = lambda i: parser_errors[i]
    profiles, caches, loggers = [], [], []

    def new_profile():
        profile = recorder.make("IOptimizationProfile")
        profiles.append(profile)
        return profile

    config = recorder.make("IBuilderConfig")
    config.add_optimization_profile.side_effect = lambda p: profiles.index(p)

    def new_cache(data):
        cache = recorder.make("ITimingCache")
        cache.serialize.return_value = bytearray(b"cache:" + bytes(data) + b"+new-tactics")
        caches.append(cache)
        return cache

    config.create_timing_cache.side_effect = new_cache
    attach = list(cache_attach) if isinstance(cache_attach, list) else None
    config.set_timing_cache.side_effect = lambda cache, ignore_mismatch: attach.pop(0) if attach else bool(cache_attach)
    config.get_timing_cache.side_effect = lambda: caches[-1]

    builder = recorder.make("Builder")
    builder.create_network.return_value = network
    builder.create_builder_config.return_value = config
    builder.create_optimization_profile.side_effect = new_profile

    def build(net, cfg):
        if on_build is not None:
            on_build(loggers[-1])
        return None if plan is None else bytearray(plan)

    builder.build_serialized_network.side_effect = build

    def make_builder(logger):
        loggers.append(logger)
        return builder

    module = fake_module(
        real,
        Builder=recorder.constructor("Builder", make_builder),
        OnnxParser=recorder.constructor("OnnxParser", lambda net, logger: parser),
    )
    return BuildFakes(module, builder, network, parser, config, profiles, caches, loggers)


def parser_error(recorder: ApiRecorder, *, code: str, desc: str, node: int, name: str = "", op: str = ""):
    error = recorder.make("ParserError")
    error.code.return_value = getattr(recorder.real.ErrorCode, code)
    error.desc.return_value = desc
    error.node.return_value = node
    if hasattr(recorder.real.ParserError, "node_name"):
        error.node_name.return_value = name
        error.node_operator.return_value = op
    error.file.return_value = "ModelImporter.cpp"
    error.line.return_value = 123
    error.func.return_value = "parseNode"
    return error


# ------------------------------------------------------------------------------------------ run scenario
@dataclass
class RunFakes:
    module: types.ModuleType
    runtime: object
    engine: object
    context: object
    received_plans: list
    executed: list


def _view(address: int, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    count = int(np.prod(shape)) if len(shape) else 1
    raw = (ctypes.c_byte * (count * dtype.itemsize)).from_address(address)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def run_fakes(recorder: ApiRecorder, *, io, profiles, compute, deserializes: bool = True) -> RunFakes:
    """Runtime, engine and context that really move data: execute_async_v3 reads the input buffers at the
    addresses the runner bound, applies `compute` and writes the outputs at their bound addresses.

    Args:
        io: [(name, "INPUT"|"OUTPUT", DataType member name)] in engine order.
        profiles: [{input: (min, opt, max)}] per optimization profile.
        compute: {input: array} -> {output: array}; output shapes follow from it.
        deserializes: False makes deserialize_cuda_engine return None.
    """
    real = recorder.real
    numpy_types = {name: np.dtype(real.nptype(getattr(real.DataType, dtype))) for name, _, dtype in io}
    state = {"shapes": {}, "addresses": {}, "profile": 0}
    executed, received = [], []

    engine = recorder.make("ICudaEngine", num_io_tensors=len(io), num_optimization_profiles=len(profiles))
    engine.get_tensor_name.side_effect = lambda i: io[i][0]
    engine.get_tensor_mode.side_effect = lambda n: getattr(real.TensorIOMode, {t[0]: t[1] for t in io}[n])
    engine.get_tensor_dtype.side_effect = lambda n: getattr(real.DataType, {t[0]: t[2] for t in io}[n])
    engine.get_tensor_profile_shape.side_effect = lambda n, p: [tuple(s) for s in profiles[p][n]]

    def inputs_now():
        return {n: _view(state["addresses"][n], state["shapes"][n], numpy_types[n]).copy()
                for n, mode, _ in io if mode == "INPUT"}

    context = recorder.make("IExecutionContext")

    def set_input_shape(name, shape):
        lo, _, hi = profiles[state["profile"]][name]
        ok = len(shape) == len(lo) and all(a <= s <= b for a, s, b in zip(lo, shape, hi))
        if ok:
            state["shapes"][name] = tuple(shape)
        return ok

    def output_shape(name):
        zeros = {n: np.zeros(state["shapes"][n], numpy_types[n]) for n, mode, _ in io if mode == "INPUT"}
        return tuple(compute(zeros)[name].shape)

    def set_address(name, address):
        state["addresses"][name] = address
        return True

    def switch(index, stream):
        state["profile"] = index
        return True

    def execute(stream):
        results = compute(inputs_now())
        for name, value in results.items():
            shape = output_shape(name)
            _view(state["addresses"][name], shape, numpy_types[name])[...] = value.astype(numpy_types[name])
        executed.append({"stream": stream, "profile": state["profile"], "shapes": dict(state["shapes"])})
        return True

    context.set_input_shape.side_effect = set_input_shape
    context.get_tensor_shape.side_effect = output_shape
    context.set_tensor_address.side_effect = set_address
    context.set_optimization_profile_async.side_effect = switch
    context.execute_async_v3.side_effect = execute
    engine.create_execution_context.return_value = context

    runtime = recorder.make("Runtime")

    def deserialize(data):
        received.append(bytes(data))
        return engine if deserializes else None

    runtime.deserialize_cuda_engine.side_effect = deserialize
    module = fake_module(real, Runtime=recorder.constructor("Runtime", lambda logger: runtime))
    return RunFakes(module, runtime, engine, context, received, executed)
