"""Verdicts that must not pass a broken or unchecked model, and unusable inputs refused before they are read.

Each case was a false PASS, a traceback or misleading advice on 82ff32e (issue 17).
"""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy

from tests.validate import model_zoo as zoo
from tests.validate.helpers import checks_named
from tests.validate.test_bad_input import assert_one_line_error


def _w(seed=0):
    return (np.random.default_rng(seed).standard_normal((2, 2, 1, 1)) * 0.3).astype(np.float32)


# ------------------------------------------------------------------------------- non-finite tensors
def test_fp16_scan_reports_nan_weights_instead_of_all_fit(write_model, run_validate):
    w = _w()
    w[0, 1, 0, 0] = np.nan
    result, report = run_validate(write_model(zoo.conv_with_weights(w)))
    assert result.exit_code == 1
    fp16 = checks_named(report, "fp16_range")[0]
    assert not fp16["passed"] and "all fit fp16" not in fp16["detail"]
    assert "NaN or Inf" in fp16["detail"] and "'w'" in fp16["detail"]
    # the NaN weight and the conv output it poisons are both listed, the weight with its exact count
    kinds = {t["tensor"]: (t["kind"], t["non_finite"]) for t in fp16["data"]["tensors"]}
    assert kinds["w"] == ("non_finite", int(np.isnan(w).sum()))
    assert kinds["y"][0] == "non_finite"


def test_fp16_scan_reports_nan_intermediates(write_model, run_validate):
    """log(x) on standard-normal inputs: about half the values are NaN (x < 0)."""
    _, report = run_validate(write_model(zoo.log_of_input()))
    fp16 = checks_named(report, "fp16_range")[0]
    assert not fp16["passed"]
    (entry,) = [t for t in fp16["data"]["tensors"] if t["tensor"] == "y"]
    assert entry["kind"] == "non_finite" and 0 < entry["non_finite"] < 64


def test_nan_in_a_constant_node_fails_the_weights_check(write_model, run_validate):
    w = _w()
    w[1, 0, 0, 0] = np.nan
    result, report = run_validate(write_model(zoo.conv_with_constant_weights(w)))
    assert result.exit_code == 1
    weights = checks_named(report, "initializers")[0]
    assert not weights["passed"] and weights["severity"] == "error"
    assert weights["data"]["non_finite"] == [{"name": "w", "origin": "Constant 'weights'", "nan": 1, "inf": 0,
                                              "size": 4}]


@pytest.mark.parametrize("value", [np.inf, np.nan])
def test_non_finite_constant_of_shape_value_fails_the_weights_check(write_model, run_validate, value):
    result, report = run_validate(write_model(zoo.constant_of_shape_bias(value)), "--no-run")
    assert result.exit_code == 1
    (bad,) = checks_named(report, "initializers")[0]["data"]["non_finite"]
    assert bad["origin"] == "ConstantOfShape 'fill'"
    assert (bad["nan"], bad["inf"]) == ((1, 0) if np.isnan(value) else (0, 1))


def test_clean_constant_weights_pass_and_are_counted(write_model, run_validate):
    result, report = run_validate(write_model(zoo.conv_with_constant_weights(_w())))
    assert result.exit_code == 0
    assert checks_named(report, "initializers")[0]["detail"].startswith("1 weight(s)")


def test_fp16_scan_reads_weights_in_constant_nodes(write_model, run_validate):
    """The 1e6 scale overflows fp16 as a stored weight; 1e-6 is 'mostly' tiny and not a near-exact scalar."""
    _, report = run_validate(write_model(zoo.constant_scale_chain(1e6, 1e-6)))
    fp16 = checks_named(report, "fp16_range")[0]
    by_name = {t["tensor"]: t for t in fp16["data"]["tensors"]}
    assert by_name["up"]["kind"] == "overflow" and by_name["up"]["max_abs"] == pytest.approx(1e6)
    assert by_name["up"]["producer"] == "Constant 'c_up'"


# ---------------------------------------------------------------------------------- empty runs
def test_zero_sized_profile_run_does_not_pass(write_model, run_validate):
    path = write_model(zoo.relu(["N", 4]))
    result, report = run_validate(path, "--profile", "x:0x4:2x4:3x4")
    assert result.exit_code == 1
    (empty,) = [c for c in report["checks"] if c["name"].startswith("empty_run[")]
    assert empty["name"] == "empty_run[0x4]" and not empty["passed"] and empty["severity"] == "error"
    assert "0x4" not in report["summary"]["shapes_run"]  # never compared, so never counted as compared
    assert {"2x4", "3x4"} <= set(report["summary"]["shapes_run"])


def test_static_empty_input_does_not_pass(write_model, run_validate):
    result, report = run_validate(write_model(zoo.relu([0, 4])))
    assert result.exit_code == 1
    assert [c["name"] for c in report["checks"] if not c["passed"]] == ["empty_run[0x4]"]
    assert not checks_named(report, "onnxruntime_run")  # nothing left to run


# ------------------------------------------------------------------------------ skipped parity
def test_parity_without_reference_is_skipped_not_passed(write_model, run_validate, cli):
    path = write_model(zoo.conv_relu())
    result, report = run_validate(path)
    assert result.exit_code == 0
    parity = checks_named(report, "parity")[0]
    assert parity["skipped"] is True
    assert report["counts"]["skipped"] == 1
    assert report["counts"]["passed"] == sum(c["passed"] and not c.get("skipped") for c in report["checks"])
    assert report["verdict"] == "PASSED (outputs were not compared with PyTorch)"
    table = cli("validate", str(path)).stdout
    assert "not compared with PyTorch" in table and "skip" in table


def test_parity_with_reference_is_a_plain_pass(tmp_path, run_validate, cli):
    out = tmp_path / "repo"
    assert cli("export", "--block", "se", "--out", str(out), "--size", "14x14", "--batch", "1:1:2").exit_code == 0
    result, report = run_validate(out / "se" / "1" / "model.onnx", "--no-fp16")
    assert result.exit_code == 0 and report["verdict"] == "PASSED" and report["counts"]["skipped"] == 0


# ----------------------------------------------------------------------------- .npz size bombs
def _npz_declaring(path, name: str, shape, dtype=np.float32) -> None:
    """A zip holding only the .npy header of `name`: it declares `shape` and carries no data."""
    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": npy.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                                        "shape": tuple(shape)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{name}.npy", header.getvalue())


def test_npz_declaring_terabytes_is_refused_from_its_header(cli, write_model, tmp_path):
    path = write_model(zoo.relu(["N", 4]))
    bomb = tmp_path / "bomb.npz"
    _npz_declaring(bomb, "x", (1 << 40, 4))   # 16 TiB of float32 in a few hundred bytes
    assert bomb.stat().st_size < 400
    assert_one_line_error(cli("validate", str(path), "--inputs", str(bomb)), 2, "'x.npy' declares shape",
                          "--max-input-mb")


def test_compressed_npz_is_refused_before_decompressing(cli, write_model, tmp_path, monkeypatch):
    path = write_model(zoo.relu(["N", 4]))
    big = tmp_path / "zeros.npz"
    np.savez_compressed(big, x=np.zeros((1 << 22, 4), np.float32))   # 64 MiB of zeros in ~65 KB
    assert big.stat().st_size < 200_000
    reads = []
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a) or pytest.fail("np.load was called"))
    assert_one_line_error(cli("validate", str(path), "--inputs", str(big), "--max-input-mb", "10"), 2,
                          "declares 64 MiB", "--max-input-mb limit of 10 MiB")
    assert not reads


def test_npz_within_the_limit_still_runs(run_validate, write_model, tmp_path):
    path = write_model(zoo.relu(["N", 4]))
    ok = tmp_path / "ok.npz"
    np.savez_compressed(ok, x=np.ones((3, 4), np.float32))
    result, report = run_validate(path, "--inputs", str(ok), "--max-input-mb", "1")
    assert result.exit_code == 0 and report["summary"]["shapes_run"] == ["3x4"]


# ----------------------------------------------------------------------------- malformed sidecar
@pytest.mark.parametrize("content,field", [({"precision": ["fp16"]}, "precision"),
                                           ({"source": {"block": 3}}, "source.block"),
                                           ({"config": "se.yaml"}, "config")])
def test_malformed_sidecar_names_the_field(cli, write_model, content, field):
    path = write_model(zoo.conv_relu())
    (path.parent / "deploykit.json").write_text(json.dumps(content))
    assert_one_line_error(cli("validate", str(path)), 2, "deploykit.json", f"field '{field}'")


# ----------------------------------------------------------------------------------------- advice
def test_ir3_initializer_inputs_are_not_advised_away(write_model, run_validate):
    result, report = run_validate(write_model(zoo.ir3_initializer_as_input()), "--trt", "none")  # opset 8
    assert result.exit_code == 0
    check = checks_named(report, "initializer_inputs")[0]
    assert check["severity"] == "info" and "IR 3 requires" in check["detail"]
    assert check["fix"].startswith("nothing to do at IR 3")


def test_ir4_initializer_inputs_still_get_the_removal_advice(write_model, run_validate):
    _, report = run_validate(write_model(zoo.initializer_as_input()))
    check = checks_named(report, "initializer_inputs")[0]
    assert check["severity"] == "warning" and "remove them from graph.input" in check["fix"]


def test_symlinked_external_data_is_named_as_a_symlink(cli, tmp_path, run_validate):
    (tmp_path / "outside").mkdir()
    (tmp_path / "m").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "m" / "link")
    path = zoo.external_weights(tmp_path / "m", "link/w.bin")
    assert_one_line_error(cli("validate", str(path)), 2, "a symlink: 'link' -> ", str(tmp_path / "outside"),
                          "outside the model's directory")
    # a symlink that stays inside is refused too (onnx will not read through it), and named as one
    inside = zoo.external_weights(tmp_path / "n", "real.bin")
    os.symlink("real.bin", tmp_path / "n" / "alias.bin")
    m = __import__("onnx").load(str(inside), load_external_data=False)
    for entry in m.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "alias.bin"
    inside.write_bytes(m.SerializeToString())
    result = cli("validate", str(inside))
    assert_one_line_error(result, 2, "a symlink: 'alias.bin' -> 'real.bin'", "read through a symlink is refused")
    assert "outside" not in result.stderr


def test_unregistered_custom_op_gets_a_fitting_hint(write_model, run_validate):
    _, report = run_validate(write_model(zoo.unregistered_custom_op()))
    session = checks_named(report, "onnxruntime_session")[0]
    assert not session["passed"]
    assert "usually say why" not in session["fix"]
    assert "'Frobnicate' is a custom op of domain 'mycorp'" in session["fix"]


def test_batch_only_profile_also_runs_an_odd_size(write_model, run_validate):
    _, report = run_validate(write_model(zoo.relu(["N", 4])), "--profile", "x:2x4:4x4:8x4")
    shapes = report["summary"]["shapes_run"]
    assert {"2x4", "4x4", "8x4"} <= set(shapes)
    odd = [s for s in shapes if int(s.split("x")[0]) % 2]
    assert odd == ["3x4"]
