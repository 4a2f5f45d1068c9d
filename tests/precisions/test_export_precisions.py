"""`deploykit export --precision bf16|int8|int8_trt`: gated artifacts in the repository, bf16 as a Triton
OpenVINO-backend entry that `deploykit serve` loads, calibration data or a loud warning without it."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("openvino", reason="needs openvino: pip install 'deploykit[openvino]'")

FLAGS = ("--block", "se", "--size", "8x8", "--batch", "1:2:4")


def _calibration(tmp_path, channels=64):
    path = tmp_path / "cal.npz"
    np.savez(path, input=np.random.default_rng(3).standard_normal((24, channels, 8, 8)).astype(np.float32))
    return path


def test_all_precisions_written_gated_and_served(cli, tmp_path):
    out = tmp_path / "models"
    result = cli("export", *FLAGS, "--precision", "fp32", "--precision", "bf16", "--precision", "int8",
                 "--precision", "int8_trt", "--calibration", str(_calibration(tmp_path)), "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    assert "RANDOM" not in result.stderr
    for name, precision in (("se", "fp32"), ("se_bf16", "bf16"), ("se_int8", "int8"), ("se_int8_trt", "int8_trt")):
        manifest = json.loads((out / name / "1" / "deploykit.json").read_text())
        assert manifest["precision"] == precision
        parity = manifest["parity"][precision]
        assert parity["passed"]
        if precision != "fp32":
            assert parity["max_rel_l2"] <= parity["gate"]["max_rel_l2"]
            assert parity["min_cosine"] >= parity["gate"]["min_cosine"]
            assert len(parity["shapes"]) == 3
    bf16_config = (out / "se_bf16" / "config.pbtxt").read_text()
    assert 'backend: "openvino"' in bf16_config and 'default_model_filename: "model.onnx"' in bf16_config
    assert '"HINT_BF16"' in bf16_config and "platform" not in bf16_config
    assert 'platform: "onnxruntime_onnx"' in (out / "se_int8" / "config.pbtxt").read_text()

    # validate judges an INT8 artifact by its gate (its elements are not meant to meet fp32's atol/rtol) ...
    int8_model = str(out / "se_int8" / "1" / "model.onnx")
    gated = cli("validate", int8_model, "--no-fp16", "--trt", "none", "--json")
    assert gated.exit_code == 0, gated.stdout
    parity = [c for c in gated.json()["checks"] if c["name"].startswith("parity[")]
    assert parity and all(c["passed"] and "int8 gate" in c["detail"] for c in parity)
    assert cli("validate", int8_model, "--no-fp16", "--trt", "none", "--atol", "1e-4", "--rtol", "1e-4").exit_code == 1
    # ... and the TensorRT flavour passes the TensorRT audit, where the CPU flavour (uint8) does not
    assert cli("validate", str(out / "se_int8_trt" / "1" / "model.onnx"), "--no-fp16").exit_code == 0
    assert cli("validate", int8_model, "--no-fp16").exit_code == 1

    pytest.importorskip("tritonclient", reason="needs the serve extra")
    from deploykit.serve.models import Repository
    from deploykit.serve.settings import ServeSettings
    from tests.serve.helpers import Reference

    repo = Repository.load(out, ServeSettings())
    try:
        x = np.random.default_rng(5).standard_normal((2, 64, 8, 8)).astype(np.float32)
        ref = Reference(out).outputs("se", x)["output"]
        for name, limit in (("se_bf16", 0.02), ("se_int8", 0.12)):
            got = repo.get(name).runner.infer({"input": x})["output"]
            rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
            assert rel < limit, (name, rel)
        assert repo.get("se_bf16").runner.precision == "bf16"
    finally:
        for model in repo.models.values():
            for mv in model.versions.values():
                mv.runner.deactivate()


def test_int8_without_calibration_warns_loudly(cli, tmp_path):
    result = cli("export", *FLAGS, "--precision", "int8", "--out", str(tmp_path / "m"), "--json")
    assert result.exit_code == 0, result.stderr
    assert "INT8 calibrated on RANDOM inputs" in result.stderr and "--calibration" in result.stderr
    manifest = json.loads((tmp_path / "m" / "se_int8" / "1" / "deploykit.json").read_text())
    assert any("RANDOM" in n for n in manifest["parity"]["int8"]["notes"])


def test_calibration_of_the_wrong_shape_is_exit_2(cli, tmp_path):
    result = cli("export", *FLAGS, "--precision", "int8", "--calibration", str(_calibration(tmp_path, channels=3)),
                 "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "expected N x 64 x H x W" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "m" / "se_int8" / "1").exists()
