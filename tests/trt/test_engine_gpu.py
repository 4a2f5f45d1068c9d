"""Real engines: what only a machine with TensorRT and an NVIDIA GPU proves (skipped everywhere else).

Builds tiny graphs with the installed TensorRT through `build_model`, runs them with TrtRunner and compares
with ONNX Runtime on the CPU, the independent reference.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from deploykit.trt.builder import BuildSettings
from deploykit.trt.capabilities import cuda_device, import_tensorrt
from tests.trt import onnx_zoo

trt, _why_not = import_tensorrt()
gpu, _no_gpu = cuda_device()

pytestmark = [
    pytest.mark.tensorrt,
    pytest.mark.gpu,
    pytest.mark.skipif(trt is None, reason=f"needs TensorRT ({_why_not})"),
    pytest.mark.skipif(gpu is None, reason=f"needs an NVIDIA GPU ({_no_gpu})"),
]


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("the runner needs a CUDA build of torch")


def _ort(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def test_fp32_engine_with_two_profiles_matches_onnxruntime(tmp_path):
    from deploykit.backends.trt import TrtRunner
    from deploykit.trt.pipeline import build_model

    _torch_cuda()
    onnx_path = onnx_zoo.conv_relu(tmp_path / "models")
    cache = tmp_path / "timing.cache"
    report = build_model(onnx_path, out_dir=tmp_path / "out", settings=BuildSettings(timing_cache=cache, opt_level=1),
                         profile_flags=["input:1x3x8x8:2x3x8x8:4x3x16x16", "input:8x3x8x8:8x3x8x8:16x3x16x16"])
    plan_path = tmp_path / "out" / "tiny_trt" / "1" / "model.plan"
    sidecar = json.loads((plan_path.parent / "deploykit.json").read_text())
    assert report.status == "ok" and sidecar["tensorrt_version"] == trt.__version__ and cache.stat().st_size > 0

    # A plain plan: TensorRT deserializes the file's bytes as they are.
    runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
    assert runtime.deserialize_cuda_engine(plan_path.read_bytes()) is not None

    rng = np.random.default_rng(0)
    with TrtRunner(plan_path) as runner:
        for shape in ((2, 3, 8, 8), (12, 3, 16, 16), (1, 3, 16, 8)):
            x = rng.standard_normal(shape).astype(np.float32)
            np.testing.assert_allclose(runner.infer({"input": x})["output"], _ort(onnx_path, x), rtol=1e-3, atol=1e-3)

    again = build_model(onnx_path, out_dir=tmp_path / "out", settings=BuildSettings(timing_cache=cache, opt_level=1),
                        profile_flags=["input:1x3x8x8:2x3x8x8:4x3x16x16"])
    assert again.details["build"]["timing_cache"]["status"] == "loaded"


def test_fp16_engine_from_the_fp16_graph(tmp_path):
    from deploykit.backends.trt import TrtRunner
    from deploykit.trt.pipeline import build_model

    _torch_cuda()
    fp32 = onnx_zoo.conv_relu(tmp_path / "models")
    fp16 = onnx_zoo.fp16_of(fp32)
    report = build_model(fp16, out_dir=tmp_path / "out", precision="fp16", profile_flags=["input:1x3x8x8:2x3x8x8:4x3x8x8"])
    precision = report.details["precision"]
    assert (precision["precision"], precision["strongly_typed"], precision["fp16_flag"]) == ("fp16", True, False)
    x = np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32)
    with TrtRunner(tmp_path / "out" / "tiny_fp16_trt" / "1" / "model.plan") as runner:
        out = runner.infer({"input": x})["output"]
    np.testing.assert_allclose(out, _ort(fp32, x), rtol=2e-2, atol=2e-2)


def test_parser_error_names_the_node(tmp_path):
    from deploykit.trt.builder import ParseFailed
    from deploykit.trt.pipeline import build_model

    with pytest.raises(ParseFailed) as err:
        build_model(onnx_zoo.unsupported_op(tmp_path / "models"), out_dir=tmp_path / "out")
    assert any(issue.node_name == "fancy1" or issue.node == 1 for issue in err.value.issues), err.value.issues
