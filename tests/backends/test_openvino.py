"""OpenVinoRunner: outputs against PyTorch, one compile per shape (bounded), the bf16 hint, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="needs openvino: pip install 'deploykit[openvino]'")

from deploykit.backends.openvino import OpenVinoRunner, compile_config  # noqa: E402
from deploykit.errors import MissingDependency, UserInputError  # noqa: E402
from tests.backends.conftest import torch_reference  # noqa: E402


def _x(batch, seed=1):
    return np.random.default_rng(seed).standard_normal((batch, 3, 8, 8), dtype=np.float32)


def _has_native_bf16() -> bool:
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def test_f32_matches_pytorch_at_every_batch_and_compiles_once_per_shape(tiny_onnx):
    path, w, b = tiny_onnx
    with OpenVinoRunner(path, precision="f32", threads=1) as runner:
        assert runner.inputs == ["input"] and runner.outputs == ["output"]
        assert runner.shapes["input"] == [-1, 3, 8, 8]
        for batch in (1, 3, 1, 3):
            x = _x(batch, seed=batch)
            out = runner.infer({"input": x})["output"]
            np.testing.assert_allclose(out, torch_reference(x, w, b), rtol=1e-5, atol=1e-5)
        assert len(runner.compiled) == 2   # batch 1 and 3, each compiled once and reused
        assert runner.compiled_precision() == "f32"
    assert not runner.compiled and not runner.active


def test_outputs_are_copies_not_the_request_buffers(tiny_onnx):
    path, w, b = tiny_onnx
    with OpenVinoRunner(path, precision="f32") as runner:
        first = runner.infer({"input": _x(2, 1)})["output"]
        kept = first.copy()
        runner.infer({"input": _x(2, 2)})
        np.testing.assert_array_equal(first, kept)


def test_cache_is_bounded_least_recently_used_first(tiny_onnx):
    path, _, _ = tiny_onnx
    with OpenVinoRunner(path, precision="f32", max_compiled=2) as runner:
        for batch in (1, 2, 1, 4):
            runner.infer({"input": _x(batch)})
        keys = [dict(k)["input"][0] for k in runner.compiled]
        assert keys == [1, 4]   # 2 was the least recently used when 4 came


def test_dynamic_compile_when_static_shapes_off(tiny_onnx):
    path, w, b = tiny_onnx
    with OpenVinoRunner(path, precision="f32", static_shapes=False) as runner:
        assert list(runner.compiled) == [None]
        for batch in (1, 5):
            x = _x(batch)
            np.testing.assert_allclose(runner.infer({"input": x})["output"], torch_reference(x, w, b),
                                       rtol=1e-5, atol=1e-5)
        assert list(runner.compiled) == [None]


@pytest.mark.skipif(not _has_native_bf16(), reason="this CPU has no native bf16")
def test_bf16_hint_runs_bf16_close_to_fp32(tiny_onnx):
    path, w, b = tiny_onnx
    x = _x(4)
    ref = torch_reference(x, w, b)
    with OpenVinoRunner(path, precision="bf16") as runner:
        out = runner.infer({"input": x})["output"]
        assert runner.compiled_precision() == "bf16"
    # bf16 rounds the inputs and weights (8 bits of mantissa): close to fp32, but not equal to it
    rel = np.linalg.norm(out - ref) / np.linalg.norm(ref)
    assert 0 < rel < 2e-2


def test_compile_config_keys_and_bad_precision():
    assert compile_config("bf16", 2) == {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "bf16",
                                         "INFERENCE_NUM_THREADS": "2"}
    assert "INFERENCE_PRECISION_HINT" not in compile_config(None, None)
    with pytest.raises(UserInputError, match="unknown OpenVINO precision 'fp8'"):
        compile_config("fp8", None)


def test_wrong_inputs_are_user_errors(tiny_onnx):
    path, _, _ = tiny_onnx
    runner = OpenVinoRunner(path)
    with pytest.raises(RuntimeError, match="activate"):
        runner.infer({"input": _x(1)})
    with runner:
        with pytest.raises(UserInputError, match="float64"):
            runner.infer({"input": _x(1).astype(np.float64)})
        with pytest.raises(UserInputError, match="missing"):
            runner.infer({"image": _x(1)})
        with pytest.raises(UserInputError, match="cannot fix the input shapes|could not compile|failed to run"):
            runner.infer({"input": np.zeros((1, 5, 8, 8), np.float32)})


def test_unreadable_or_absent_model(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        OpenVinoRunner(tmp_path / "none.onnx").activate()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UserInputError, match="cannot read"):
        OpenVinoRunner(bad).activate()


def test_missing_openvino_is_exit_3_with_install_hint(tiny_onnx, no_openvino):
    with pytest.raises(MissingDependency) as err:
        OpenVinoRunner(tiny_onnx[0]).activate()
    assert err.value.exit_code == 3
    assert "pip install 'deploykit[openvino]'" in err.value.one_line()
