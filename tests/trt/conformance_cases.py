"""Every TensorRT build and run code path of deploykit against ONE real TensorRT Python API.

Not collected by a plain `pytest` run (the name has no test_ prefix): test_api_conformance.py runs this file
in a subprocess per TensorRT version, with the real `tensorrt_bindings` wheel of that version importable
against gcc-compiled stub libraries (conformance_env.py). The TensorRT objects are
`create_autospec(real_class, instance=True, spec_set=True)` and the enums are the real ones, so using a
member the version lacks raises AttributeError, and every call is checked against the real docstring
signatures when each test ends (the `recorder` fixture).

DEPLOYKIT_TRT_MISUSE=fp16-flag makes the capability detection claim BuilderFlag.FP16 exists, as code that
assumes the 10.x API does: on 11.x the FP16 path then fails here, which is the point of that mode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

real = pytest.importorskip("tensorrt_bindings", reason="run through test_api_conformance.py (needs the bindings and stubs)")

from deploykit.backends.trt import TorchBuffers, TrtRunner  # noqa: E402
from deploykit.errors import CheckFailed, UserInputError  # noqa: E402
from deploykit.trt import capabilities  # noqa: E402
from deploykit.trt.builder import BuildFailed, BuildSettings, ParseFailed  # noqa: E402
from deploykit.trt.capabilities import GpuInfo  # noqa: E402
from deploykit.trt.pipeline import build_model  # noqa: E402
from tests.trt import onnx_zoo  # noqa: E402
from tests.trt.trt_fakes import ApiRecorder, build_fakes, check_call, parser_error, run_fakes  # noqa: E402

MAJOR = int(real.__version__.split(".")[0])
GPU = GpuInfo("Conformance Stub GPU", "8.9")


@pytest.fixture
def recorder():
    rec = ApiRecorder(real)
    yield rec
    problems = rec.violations()
    assert not problems, "calls the real TensorRT API would reject:\n  " + "\n  ".join(problems)
    assert not rec.unchecked, f"no real signature found to check calls of {sorted(rec.unchecked)}"


@pytest.fixture(autouse=True)
def _misuse(monkeypatch):
    if os.environ.get("DEPLOYKIT_TRT_MISUSE") == "fp16-flag":
        detect = capabilities.detect
        monkeypatch.setattr(capabilities, "detect", lambda trt: dataclasses.replace(detect(trt), fp16_flag=True))


def _build(fakes, onnx_path: Path, out: Path, **kwargs):
    return build_model(onnx_path, trt=fakes.module, gpu=GPU, out_dir=out, **kwargs)


def _strongly_typed_flags() -> int:
    return 1 << int(real.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def _set_flag_args(config) -> list:
    return [c.args[0] for c in config.set_flag.call_args_list]


# ------------------------------------------------------------------------------------------ capabilities
def test_detected_capabilities_match_the_documented_api():
    caps = capabilities.detect(real)
    assert caps.version == real.__version__
    assert caps.strongly_typed and caps.optimization_level and caps.parser_error_node_name
    # tensorrt.md: 10.x still has the precision flags (deprecated), 11.x removed them.
    assert caps.fp16_flag == caps.int8_flag == (MAJOR == 10)


# ------------------------------------------------------------------------------------------------- build
def test_fp32_static_graph_builds_strongly_typed_into_triton_layout(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))], plan=b"\x00plan-bytes\xff")
    report = _build(fakes, onnx_path, tmp_path / "out")

    fakes.builder.create_network.assert_called_once_with(_strongly_typed_flags())
    fakes.parser.parse_from_file.assert_called_once_with(str(onnx_path))
    assert _set_flag_args(fakes.config) == []
    fakes.profiles[0].set_shape.assert_called_once_with("input", (1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))
    fakes.builder.build_serialized_network.assert_called_once_with(fakes.network, fakes.config)
    fakes.config.set_memory_pool_limit.assert_not_called()

    model_dir = tmp_path / "out" / "tiny_trt"
    assert (model_dir / "1" / "model.plan").read_bytes() == b"\x00plan-bytes\xff"  # exactly, no header
    pbtxt = (model_dir / "config.pbtxt").read_text()
    assert 'platform: "tensorrt_plan"' in pbtxt and "max_batch_size: 0" in pbtxt
    sidecar = json.loads((model_dir / "1" / "deploykit.json").read_text())
    assert sidecar["tensorrt_version"] == real.__version__
    assert sidecar["gpu"] == {"name": GPU.name, "compute_capability": "8.9", "index": 0}
    assert sidecar["precision"] == "fp32" and sidecar["precision_plan"]["strongly_typed"] is True
    assert sidecar["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert sidecar["plan"]["sha256"] == hashlib.sha256(b"\x00plan-bytes\xff").hexdigest()
    assert sidecar["profiles"] == [{"input": {"min": [1, 3, 8, 8], "opt": [1, 3, 8, 8], "max": [1, 3, 8, 8]}}]
    assert sidecar["built_at"] and report.status == "ok"


def test_fp16_graph_builds_strongly_typed_without_precision_flags(tmp_path, recorder):
    fp32 = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    fp16 = onnx_zoo.fp16_of(fp32)
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    report = _build(fakes, fp16, tmp_path / "out", precision="fp16")

    fakes.builder.create_network.assert_called_once_with(_strongly_typed_flags())
    assert _set_flag_args(fakes.config) == []
    sidecar = json.loads((tmp_path / "out" / "tiny_fp16_trt" / "1" / "deploykit.json").read_text())
    assert sidecar["precision"] == "fp16" and sidecar["precision_plan"]["source"] == "graph"
    assert report.details["graph"]["precision"] == "fp16"


def test_fp16_on_an_fp32_graph_uses_the_flag_where_it_exists_and_points_to_the_fp16_graph_where_not(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    if hasattr(real.BuilderFlag, "FP16"):  # 10.x: the optional weakly typed path
        report = _build(fakes, onnx_path, tmp_path / "out", precision="fp16")
        fakes.builder.create_network.assert_called_once_with(0)  # weakly typed: no STRONGLY_TYPED bit
        assert _set_flag_args(fakes.config) == [real.BuilderFlag.FP16]
        assert report.details["precision"]["source"] == "builder flag" and report.notes
    else:  # 11.x: strongly typed only; the error names the graph to build instead
        with pytest.raises(UserInputError) as err:
            _build(fakes, onnx_path, tmp_path / "out", precision="fp16")
        assert "no FP16 builder flag" in err.value.message
        assert str(onnx_path.parent.parent.parent / "tiny_fp16" / "1" / "model.onnx") in err.value.hint
        assert recorder.constructed == []  # refused before TensorRT was touched


def test_several_profiles_from_flags(tmp_path, recorder):
    onnx_path = onnx_zoo.two_inputs(tmp_path / "models")
    fakes = build_fakes(recorder, network_inputs=[("a", (-1, 3, 8, 8)), ("b", (-1, 3, 8, 8))])
    flags = ["a:1x3x8x8:2x3x8x8:4x3x8x8", "b:1x3x8x8:2x3x8x8:4x3x8x8",
             "a:8x3x8x8:16x3x8x8:32x3x8x8", "b:8x3x8x8:16x3x8x8:32x3x8x8"]
    report = _build(fakes, onnx_path, tmp_path / "out", profile_flags=flags)

    assert len(fakes.profiles) == 2
    assert [c.args[0] for c in fakes.config.add_optimization_profile.call_args_list] == fakes.profiles
    for profile, (lo, opt, hi) in zip(fakes.profiles, [(1, 2, 4), (8, 16, 32)]):
        expected = {n: ((lo, 3, 8, 8), (opt, 3, 8, 8), (hi, 3, 8, 8)) for n in ("a", "b")}
        assert {c.args[0]: c.args[1:] for c in profile.set_shape.call_args_list} == expected
    # Triton serves profile 0 by default: its max batch is the model's.
    assert "max_batch_size: 4" in (tmp_path / "out" / "tiny_pair_trt" / "config.pbtxt").read_text()
    assert report.details["profiles"]["source"] == "flags"


def test_profiles_from_the_export_sidecar(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models")
    onnx_zoo.write_export_sidecar(onnx_path, batch=(1, 2, 4), height=(8, 8, 16), width=(8, 12, 16))
    fakes = build_fakes(recorder)
    report = _build(fakes, onnx_path, tmp_path / "out")
    fakes.profiles[0].set_shape.assert_called_once_with("input", (1, 3, 8, 8), (2, 3, 8, 12), (4, 3, 16, 16))
    assert report.details["profiles"]["source"] == "sidecar"


def test_timing_cache_is_created_written_and_read_back(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    cache_file = tmp_path / "cache" / "timing.cache"
    settings = BuildSettings(timing_cache=cache_file)

    first = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    report = _build(first, onnx_path, tmp_path / "out", settings=settings)
    first.config.create_timing_cache.assert_called_once_with(b"")
    first.config.set_timing_cache.assert_called_once_with(first.caches[0], ignore_mismatch=False)
    written = cache_file.read_bytes()
    assert written == b"cache:+new-tactics"  # what the attached cache serialised after the build
    assert report.details["build"]["timing_cache"]["status"] == "created"

    second = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    report = _build(second, onnx_path, tmp_path / "out", settings=settings)
    second.config.create_timing_cache.assert_called_once_with(written)
    assert report.details["build"]["timing_cache"]["status"] == "loaded"
    assert cache_file.read_bytes() == b"cache:" + written + b"+new-tactics"


def test_timing_cache_from_another_gpu_is_replaced_not_fatal(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    cache_file = tmp_path / "timing.cache"
    cache_file.write_bytes(b"made-elsewhere")
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))], cache_attach=[False, True])
    report = _build(fakes, onnx_path, tmp_path / "out", settings=BuildSettings(timing_cache=cache_file))
    assert [c.args[0] for c in fakes.config.create_timing_cache.call_args_list] == [b"made-elsewhere", b""]
    assert report.details["build"]["timing_cache"]["status"].startswith("discarded")
    assert cache_file.read_bytes() == b"cache:+new-tactics"


def test_workspace_and_optimization_level(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    _build(fakes, onnx_path, tmp_path / "out", settings=BuildSettings(workspace=2 * 2**30, opt_level=5))
    fakes.config.set_memory_pool_limit.assert_called_once_with(real.MemoryPoolType.WORKSPACE, 2 * 2**30)
    assert fakes.config.builder_optimization_level == 5


def test_parser_errors_are_reported_with_their_nodes(tmp_path, recorder):
    onnx_path = onnx_zoo.unsupported_op(tmp_path / "models")
    errors = [
        parser_error(recorder, code="UNSUPPORTED_NODE", desc="No importer registered for op: FancyOp", node=1,
                     name="fancy1", op="FancyOp"),
        # A parser that leaves the name empty: the node is named from the graph by its index.
        parser_error(recorder, code="INVALID_NODE", desc="bad input", node=0),
    ]
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))], parsed=False, parser_errors=errors)
    with pytest.raises(ParseFailed) as err:
        _build(fakes, onnx_path, tmp_path / "out")
    issues = err.value.issues
    assert [(i.code, i.node, i.node_name, i.node_op) for i in issues] == [
        ("UNSUPPORTED_NODE", 1, "fancy1", "FancyOp"), ("INVALID_NODE", 0, "relu0", "Relu")]
    assert "node 1 'fancy1' (FancyOp): UNSUPPORTED_NODE: No importer registered for op: FancyOp" in err.value.one_line()
    fakes.builder.build_serialized_network.assert_not_called()
    assert not (tmp_path / "out").exists()


def test_a_failed_build_reports_what_tensorrt_logged(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)

    def log_error(logger):
        logger.log(real.ILogger.Severity.WARNING, "some warning")
        logger.log(real.ILogger.Severity.ERROR, "out of memory while building")

    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))], plan=None, on_build=log_error)
    seen = []
    with pytest.raises(BuildFailed) as err:
        build_model(onnx_path, trt=fakes.module, gpu=GPU, out_dir=tmp_path / "out", sink=lambda s, m: seen.append((s, m)))
    assert "out of memory while building" in err.value.one_line()
    assert seen == [("WARNING", "some warning"), ("ERROR", "out of memory while building")]
    assert not (tmp_path / "out").exists()


def test_int8_only_for_graphs_with_qdq_nodes(tmp_path, recorder):
    qdq = onnx_zoo.qdq_conv(tmp_path / "models")
    fakes = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    report = _build(fakes, qdq, tmp_path / "out", precision="int8")
    fakes.builder.create_network.assert_called_once_with(_strongly_typed_flags())
    assert _set_flag_args(fakes.config) == []  # Q/DQ nodes carry the precision; no INT8 flag, no calibrator
    assert report.details["precision"]["precision"] == "int8"

    plain = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    other = build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))])
    with pytest.raises(UserInputError, match="QuantizeLinear/DequantizeLinear"):
        _build(other, plain, tmp_path / "out", precision="int8")


# ------------------------------------------------------------------------------------------------ runner
def _affine(feed):
    x = feed["input"]
    return {"output": (2.0 * x + 1.0)}


def _runner(fakes, plan=b"engine", **kwargs) -> TrtRunner:
    return TrtRunner(plan, trt=fakes.module, buffers=TorchBuffers("cpu"), **kwargs)


def test_runner_sets_up_and_runs_across_profiles(recorder):
    profiles = [{"input": ((1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4))},
                {"input": ((8, 3, 4, 4), (16, 3, 4, 4), (32, 3, 4, 4))}]
    fakes = run_fakes(recorder, io=[("input", "INPUT", "FLOAT"), ("output", "OUTPUT", "HALF")],
                      profiles=profiles, compute=_affine)
    rng = np.random.default_rng(0)
    with _runner(fakes, plan=b"the plan") as runner:
        assert (runner.inputs, runner.outputs) == (["input"], ["output"])
        assert runner.dtypes == {"input": np.float32, "output": np.float16}
        for batch, profile in ((2, 0), (16, 1), (3, 0)):
            x = rng.standard_normal((batch, 3, 4, 4)).astype(np.float32)
            out = runner.infer({"input": x})["output"]
            assert out.dtype == np.float16 and out.shape == x.shape
            np.testing.assert_array_equal(out, (2.0 * x + 1.0).astype(np.float16))
            assert fakes.executed[-1] == {"stream": 0, "profile": profile, "shapes": {"input": x.shape}}
    assert fakes.received_plans == [b"the plan"]
    switches = [c.args for c in fakes.context.set_optimization_profile_async.call_args_list]
    assert switches == [(1, 0), (0, 0)]


def test_runner_refuses_shapes_outside_every_profile_and_wrong_dtypes(recorder):
    fakes = run_fakes(recorder, io=[("input", "INPUT", "FLOAT"), ("output", "OUTPUT", "FLOAT")],
                      profiles=[{"input": ((1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4))}], compute=_affine)
    with _runner(fakes) as runner:
        with pytest.raises(UserInputError, match="outside the engine's optimization profiles"):
            runner.infer({"input": np.zeros((5, 3, 4, 4), np.float32)})
        with pytest.raises(UserInputError, match="expects float32"):
            runner.infer({"input": np.zeros((1, 3, 4, 4), np.float64)})
        with pytest.raises(UserInputError, match="missing"):
            runner.infer({"other": np.zeros((1, 3, 4, 4), np.float32)})
    assert fakes.executed == []


def test_runner_with_a_fixed_profile(recorder):
    profiles = [{"input": ((1, 3, 4, 4), (1, 3, 4, 4), (2, 3, 4, 4))},
                {"input": ((1, 3, 4, 4), (4, 3, 4, 4), (8, 3, 4, 4))}]
    fakes = run_fakes(recorder, io=[("input", "INPUT", "FLOAT"), ("output", "OUTPUT", "FLOAT")],
                      profiles=profiles, compute=_affine)
    with _runner(fakes, profile=1) as runner:
        x = np.ones((2, 3, 4, 4), np.float32)
        np.testing.assert_array_equal(runner.infer({"input": x})["output"], 2.0 * x + 1.0)
    assert fakes.executed[0]["profile"] == 1


def test_runner_reports_an_engine_that_does_not_deserialize(recorder):
    fakes = run_fakes(recorder, io=[("input", "INPUT", "FLOAT"), ("output", "OUTPUT", "FLOAT")],
                      profiles=[{"input": ((1,), (1,), (1,))}], compute=_affine, deserializes=False)
    runner = _runner(fakes)
    with pytest.raises(UserInputError, match="could not load the engine"):
        runner.activate()
    assert not runner.active


def test_plan_written_by_build_is_what_the_runner_loads(tmp_path, recorder):
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models")
    build = build_fakes(recorder, plan=b"round-trip plan")
    _build(build, onnx_path, tmp_path / "out", profile_flags=["input:1x3x4x4:2x3x4x4:4x3x4x4"])
    plan_path = tmp_path / "out" / "tiny_trt" / "1" / "model.plan"
    run = run_fakes(recorder, io=[("input", "INPUT", "FLOAT"), ("output", "OUTPUT", "FLOAT")],
                    profiles=[{"input": ((1, 3, 4, 4), (2, 3, 4, 4), (4, 3, 4, 4))}], compute=_affine)
    with TrtRunner(plan_path, trt=run.module, buffers=TorchBuffers("cpu")) as runner:
        runner.infer({"input": np.zeros((1, 3, 4, 4), np.float32)})
    assert run.received_plans == [b"round-trip plan"]


def test_a_rebuild_that_fails_while_writing_keeps_the_previous_engine_whole(tmp_path, recorder, monkeypatch):
    """Plan, sidecar and config.pbtxt go in together (the repository journal): a write failing half-way (a full
    disk) leaves the previous engine with its own sidecar, never the new plan beside the old sidecar."""
    import deploykit.repository as repository

    onnx_path = onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)
    out = tmp_path / "out"
    _build(build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))], plan=b"first plan"), onnx_path, out)
    entry = out / "tiny_trt"
    before = {p.relative_to(entry): p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    real_write_json = repository.atomic_write_json

    def disk_full(path, obj):
        if Path(path).name == "deploykit.json":
            raise OSError(28, "No space left on device")
        return real_write_json(path, obj)

    monkeypatch.setattr("deploykit.trt.pipeline.atomic_write_json", disk_full)
    with pytest.raises(OSError):
        _build(build_fakes(recorder, network_inputs=[("input", (1, 3, 8, 8))], plan=b"second plan"), onnx_path, out)
    after = {p.relative_to(entry): p.read_bytes() for p in entry.rglob("*") if p.is_file()}
    assert after == before   # nothing of the second build, no staging left behind
    assert not [p for p in out.rglob(".*")]


# ------------------------------------------------------------------------------ the checks have teeth
def test_misuse_is_caught_by_the_checks(recorder):
    probe = ApiRecorder(real)
    config, cache = probe.make("IBuilderConfig"), probe.make("ITimingCache")
    config.set_timing_cache(cache)  # ignore_mismatch is required
    config.set_flag(3)  # an int where a BuilderFlag is required
    parser = probe.make("OnnxParser")
    parser.parse_from_file(Path("model.onnx"))  # pybind11 takes str, not Path
    parser.num_errors()  # a property called as a method
    found = probe.violations()
    assert len(found) == 4, found
    assert check_call(real, real.IBuilderConfig, "set_timing_cache", (cache,), {"ignore_mismatch": False}) is None

    builder = recorder.make("Builder")
    if MAJOR >= 11:  # members removed in 11.x fail exactly as they would on a machine with TensorRT
        with pytest.raises(AttributeError):
            real.BuilderFlag.FP16  # noqa: B018
        with pytest.raises(AttributeError):
            builder.platform_has_fast_fp16  # noqa: B018
    else:
        assert real.BuilderFlag.FP16 is not None and builder.platform_has_fast_fp16 is not None


def test_check_failed_is_the_exit_1_family():
    assert issubclass(ParseFailed, CheckFailed) and issubclass(BuildFailed, CheckFailed)
