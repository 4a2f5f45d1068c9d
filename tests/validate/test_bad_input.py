"""Unusable input: one `error: ...` line on stderr, no traceback, exit 2 (3 for a missing TensorRT)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from onnx import TensorProto as T

from tests.validate import model_zoo as zoo
from tests.validate.helpers import TWO_PROFILES


def assert_one_line_error(result, code: int = 2, *needles: str):
    assert result.exit_code == code, result.stdout[-2000:] + result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


# --------------------------------------------------------------------------------------------- files
@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "random_bytes"])
def test_unreadable_files(cli, tmp_path, kind):
    good = zoo.write(zoo.conv_relu(), tmp_path / "good").read_bytes()
    content = {"empty": b"", "text": b"this is not an onnx model\n", "truncated": good[: len(good) // 2],
               "random_bytes": np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes()}[kind]
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    needles = () if kind == "empty" else ("is not a readable ONNX model: ",)    # empty bytes parse as a model
    assert_one_line_error(cli("validate", str(path)), 2, *needles)


def test_directory_without_model(cli, tmp_path):
    assert_one_line_error(cli("validate", str(tmp_path)), 2, "without model.onnx")


@pytest.mark.parametrize("opset,ir,needle", [(27, 10, "opset 27"), (21, 14, "IR version 14")])
def test_newer_than_onnxruntime_supports(cli, write_model, opset, ir, needle):
    import onnxruntime

    m = zoo.relu([1, 4], opset=opset)
    m.ir_version = ir
    result = cli("validate", str(write_model(m)))
    assert_one_line_error(result, 2, needle, f"onnxruntime {onnxruntime.__version__}")


def test_model_without_inputs(cli, write_model):
    assert_one_line_error(cli("validate", str(write_model(zoo.no_inputs()))), 2, "no inputs")


def test_symbolic_dims_without_shapes(cli, write_model, run_validate):
    path = write_model(zoo.relu(["N", 3, "H", "W"]))
    assert_one_line_error(cli("validate", str(path)), 2, "symbolic dims", "--profile x:1x3x1x1:8x3x8x8:32x3x32x32")
    # The audit still works without running anything.
    result, report = run_validate(path, "--no-run")
    assert result.exit_code == 0
    assert [c["name"] for c in report["checks"]][-1] == "run"


def test_input_without_declared_shape(cli, write_model):
    m = zoo.relu([1, 4])
    m.graph.input[0].type.tensor_type.ClearField("shape")
    assert_one_line_error(cli("validate", str(write_model(m))), 2, "declares no shape")


def test_declared_dims_over_the_memory_limit(cli, write_model):
    path = write_model(zoo.relu([1, 3, 1024, 1024]))
    need_mib = 3 * 1024 * 1024 * np.dtype(np.float32).itemsize / 2**20  # 12 MiB of float32
    assert_one_line_error(cli("validate", str(path), "--max-input-mb", str(need_mib - 1)), 2,
                          f"{need_mib:,.0f} MiB", "--max-input-mb")
    assert cli("validate", str(path), "--max-input-mb", str(need_mib + 1), "--no-fp16").exit_code == 0
    huge = write_model(zoo.relu([1, 3, 100000, 100000]), "huge")  # 1e10 floats: refused with the default limit
    assert_one_line_error(cli("validate", str(huge)), 2, "1024 MiB")


# ------------------------------------------------------------------------------------------------ npz
@pytest.fixture
def dyn_model(write_model):
    return write_model(zoo.conv_relu(batch="N"))


def _npz(tmp_path, name="inputs.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return str(path)


def _x(shape=(3, 3, 8, 8), dtype=np.float32):
    return np.random.default_rng(1).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("case,arrays,needle", [
    ("missing", {"y": _x()}, "no array for input(s) 'x'"),
    ("extra", {"x": _x(), "z": _x()}, "'z' that are not graph inputs"),
    ("dtype", {"x": _x(dtype=np.float64)}, "is float64, the model takes float32"),
    ("rank", {"x": _x((3, 8, 8))}, "rank 3"),
    ("static_dim", {"x": _x((3, 4, 8, 8))}, "fixes dim 1 at 3"),
    ("nan", {"x": np.where(_x() > 1, np.nan, _x()).astype(np.float32)}, "NaN"),
    ("inf", {"x": np.where(_x() > 1, np.inf, _x()).astype(np.float32)}, "Inf value(s)"),
])
def test_wrong_npz(cli, tmp_path, dyn_model, case, arrays, needle):
    result = cli("validate", str(dyn_model), "--inputs", _npz(tmp_path, **arrays))
    assert_one_line_error(result, 2, needle)


def test_npz_outside_the_profile(cli, tmp_path, dyn_model):
    result = cli("validate", str(dyn_model), "--profile", "x:1x3x8x8:2x3x8x8:2x3x8x8",
                 "--inputs", _npz(tmp_path, x=_x((3, 3, 8, 8))))
    assert_one_line_error(result, 2, "outside the optimization profile")


@pytest.mark.parametrize("a,b", [(5, 5), (2, 3)])
def test_npz_outside_every_profile_lists_them(cli, tmp_path, write_model, a, b):
    """Batch 5 fits neither profile; a at batch 2 fits only profile 1 and b at 3 only profile 2, and one run
    uses one profile, so that set fits none either."""
    npz = _npz(tmp_path, a=np.ones((a, 4), np.float32), b=np.ones((b, 4), np.float32))
    result = cli("validate", str(write_model(zoo.two_inputs())), *TWO_PROFILES, "--inputs", npz)
    assert_one_line_error(result, 2, f"'a' {a}x4, 'b' {b}x4 are outside each of the 2 optimization profiles",
                          "#1 a 1x4:2x4:2x4, b 1x4:2x4:2x4; #2 a 3x4:4x4:4x4, b 3x4:4x4:4x4")


@pytest.mark.parametrize("content", [b"not a zip", b""])
def test_unreadable_npz(cli, tmp_path, dyn_model, content):
    path = tmp_path / "inputs.npz"
    path.write_bytes(content)
    assert_one_line_error(cli("validate", str(dyn_model), "--inputs", str(path)), 2, "not a readable .npz")


def test_npz_with_a_single_unnamed_array(cli, tmp_path, dyn_model):
    path = tmp_path / "single.npz"
    with open(path, "wb") as fh:
        np.save(fh, _x())
    assert_one_line_error(cli("validate", str(dyn_model), "--inputs", str(path)), 2, "single array")


def test_missing_npz(cli, tmp_path, dyn_model):
    assert_one_line_error(cli("validate", str(dyn_model), "--inputs", str(tmp_path / "no.npz")), 2, "does not exist")


# -------------------------------------------------------------------------------------- external data
def test_external_data_inside_the_directory_is_fine(tmp_path, run_validate):
    path = zoo.external_weights(tmp_path / "m", "weights/w.bin")
    result, report = run_validate(path)
    assert result.exit_code == 0, result.stdout
    ext = [c for c in report["checks"] if c["name"] == "external_data"][0]
    assert ext["data"]["files"] == {os.path.join("weights", "w.bin"): 16}


@pytest.mark.parametrize("location,needle", [
    ("../outside.bin", "outside the model's directory"),
    ("weights/../../outside.bin", "outside the model's directory"),
    ("ABSOLUTE", "absolute paths are refused"),
])
def test_external_data_traversal_is_refused(cli, tmp_path, location, needle):
    if location == "ABSOLUTE":
        location = str(tmp_path / "elsewhere" / "w.bin")
    path = zoo.external_weights(tmp_path / "m", location)
    assert_one_line_error(cli("validate", str(path)), 2, needle)


def test_external_data_through_a_symlink_out_is_refused(cli, tmp_path):
    (tmp_path / "outside").mkdir()
    (tmp_path / "m").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "m" / "link")
    path = zoo.external_weights(tmp_path / "m", "link/w.bin")
    assert_one_line_error(cli("validate", str(path)), 2, "outside the model's directory")


def test_external_data_missing_or_short(cli, tmp_path):
    path = zoo.external_weights(tmp_path / "a", "w.bin", write_bytes=False)
    assert_one_line_error(cli("validate", str(path)), 2, "does not exist")
    path = zoo.external_weights(tmp_path / "b", "w.bin", truncate=True)
    assert_one_line_error(cli("validate", str(path)), 2, "the file has 8 bytes")


# ---------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("flags,needle", [
    (("--atol", "abc"), "invalid --atol 'abc'"),
    (("--rtol", "nope:1e-3"), "names output 'nope'"),
    (("--atol", "-1"), "cannot be negative"),
    (("--profile", "x:1x3:2x3"), "--profile"),
    (("--profile", "x:1x3x8x8"), "invalid --profile"),
    (("--profile", "x:1x4x8x8:1x4x8x8:1x4x8x8"), "fixes it at 3"),
    (("--block", "se", "--config", "x.yaml"), "pass only one"),
    (("--model", "no_such_net"), "network"),
    (("--config", "missing.yaml"), "does not exist"),
    (("--block", "sma"), "did you mean 'sam'"),
])
def test_bad_flags(cli, write_model, flags, needle):
    path = write_model(zoo.conv_relu(batch="N"))
    assert_one_line_error(cli("validate", str(path), *flags), 2, needle)


def test_report_path_not_writable(cli, tmp_path, write_model):
    (tmp_path / "a_file").write_text("x")
    path = write_model(zoo.conv_relu())
    result = cli("validate", str(path), "--report", str(tmp_path / "a_file" / "report.md"))
    assert_one_line_error(result, 2, "cannot write the report")


def test_backend_trt_without_tensorrt_is_exit_3(cli, write_model):
    from deploykit.trt.capabilities import cuda_device, import_tensorrt

    if import_tensorrt()[0] is not None and cuda_device()[0] is not None:
        pytest.skip("TensorRT and a GPU are present: --backend trt would run")
    assert_one_line_error(cli("validate", str(write_model(zoo.conv_relu())), "--backend", "trt"), 3,
                          "TensorRT", "pip install")


def test_string_inputs_cannot_be_made_up(cli, write_model):
    assert_one_line_error(cli("validate", str(write_model(zoo.identity_of(T.STRING)))), 2, "--inputs FILE.npz")
