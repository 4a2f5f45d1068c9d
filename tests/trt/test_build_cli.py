"""`deploykit build` where TensorRT or a GPU is missing (this CI): one clear line, exit code 3; usage errors
still exit 2 first; nothing heavy is imported just to load the command."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from deploykit.errors import EXIT_MISSING_DEPENDENCY, EXIT_USAGE, MissingDependency
from deploykit.trt.capabilities import cuda_device, import_tensorrt
from deploykit.trt.onnx_info import summarize
from deploykit.trt.pipeline import default_model_name, triton_max_batch_size
from deploykit.trt.profiles import resolve
from tests.trt import onnx_zoo

HAVE_TRT_AND_GPU = import_tensorrt()[0] is not None and cuda_device()[0] is not None
needs_no_trt = pytest.mark.skipif(HAVE_TRT_AND_GPU, reason="TensorRT and a GPU are present: nothing is missing here")


@pytest.fixture
def static_model(tmp_path):
    return onnx_zoo.conv_relu(tmp_path / "models", dynamic=False)


@needs_no_trt
def test_build_without_tensorrt_says_what_is_missing_in_one_line(cli, static_model, tmp_path):
    result = cli("build", str(static_model), "--out", str(tmp_path / "out"))
    assert result.exit_code == EXIT_MISSING_DEPENDENCY == 3
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    line = lines[0]
    assert "TensorRT is not installed" in line or "no CUDA GPU" in line
    assert "pip install 'deploykit[trt]'" in line and "nvcr.io/nvidia/tensorrt" in line
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()  # nothing half-written


@needs_no_trt
def test_build_json_reports_the_failed_step(cli, static_model, tmp_path):
    result = cli("build", str(static_model), "--out", str(tmp_path / "out"), "--json")
    assert result.exit_code == 3
    report = result.json()
    assert report["status"] == "failed" and report["failed_step"] == "environment"
    assert report["graph"]["precision"] == "fp32" and report["profiles"]["source"] == "static"


def test_usage_errors_come_before_the_missing_dependency(cli, tmp_path):
    dynamic = onnx_zoo.conv_relu(tmp_path / "models")
    result = cli("build", str(dynamic))
    assert result.exit_code == EXIT_USAGE
    assert "--profile input:1x3x1x1:8x3x8x8:32x3x32x32" in result.stderr
    assert cli("build", str(tmp_path / "missing.onnx")).exit_code == EXIT_USAGE
    assert cli("build", str(dynamic), "--profile", "input:1x3:1x3:1x3").exit_code == EXIT_USAGE
    assert cli("build", str(dynamic), "--workspace", "lots").exit_code == EXIT_USAGE
    assert cli("build", str(dynamic), "--opt-level", "9").exit_code == EXIT_USAGE


def test_help_lists_the_options(cli):
    result = cli("build", "--help")
    assert result.exit_code == 0
    for option in ("--precision", "--profile", "--workspace", "--timing-cache", "--opt-level", "--out", "--json"):
        assert option in result.stdout


@needs_no_trt
def test_runner_without_tensorrt_is_a_missing_dependency():
    from deploykit.backends.trt import TrtRunner

    runner = TrtRunner(b"plan")
    with pytest.raises(MissingDependency) as err:
        runner.activate()
    assert err.value.exit_code == 3 and "deploykit[trt]" in err.value.one_line()
    with pytest.raises(RuntimeError, match="activate"):
        runner.infer({"input": np.zeros(1, np.float32)})


def test_loading_the_command_imports_neither_torch_nor_tensorrt_nor_onnx():
    code = ("import sys, deploykit.commands.build, deploykit.trt.pipeline, deploykit.backends.trt; "
            "heavy = [m for m in ('torch', 'tensorrt', 'tensorrt_bindings', 'onnx') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_triton_batching_follows_profile_zero(tmp_path):
    dynamic = summarize(onnx_zoo.conv_relu(tmp_path / "models"))
    profiles, _ = resolve(dynamic.inputs, ["input:1x3x8x8:4x3x8x8:8x3x8x8", "input:16x3x8x8:16x3x8x8:64x3x8x8"])
    assert triton_max_batch_size(dynamic, profiles) == 8
    no_batch_one, _ = resolve(dynamic.inputs, ["input:2x3x8x8:4x3x8x8:8x3x8x8"])
    assert triton_max_batch_size(dynamic, no_batch_one) == 0  # Triton would send batch 1 to it
    static = summarize(onnx_zoo.conv_relu(tmp_path / "models", "fixed", dynamic=False))
    assert triton_max_batch_size(static, resolve(static.inputs)[0]) == 0


def test_default_model_names(tmp_path):
    assert default_model_name(tmp_path / "models" / "se" / "1" / "model.onnx") == "se_trt"
    assert default_model_name(tmp_path / "models" / "se_fp16" / "2" / "model.onnx") == "se_fp16_trt"
    assert default_model_name(tmp_path / "my model.onnx") == "my_model_trt"
    assert default_model_name(tmp_path / "__.onnx") == "model_trt"
