"""Inputs, NaN/Inf detection, fp16 readiness and the report files, each checked against numpy computed here."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.compare import Tolerance
from deploykit.errors import UserInputError
from deploykit.validate.numerics import tolerances
from tests.validate import model_zoo as zoo
from tests.validate.helpers import TWO_PROFILES, checks_named

FP16_MAX, FP16_MIN_NORMAL = 65504.0, 2.0 ** -14  # IEEE 754 binary16: largest finite, smallest normal


def _npz(tmp_path, name="in.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


# --------------------------------------------------------------------------------------------- shapes
def test_profile_shapes_cover_min_opt_max_and_an_odd_size(write_model, run_validate):
    lo, opt, hi = (1, 3, 4, 4), (2, 3, 8, 8), (4, 3, 16, 16)
    flag = "x:" + ":".join("x".join(map(str, s)) for s in (lo, opt, hi))
    result, report = run_validate(write_model(zoo.relu(["N", 3, "H", "W"])), "--profile", flag)
    assert result.exit_code == 0, result.stdout
    shapes = [tuple(int(v) for v in s.split("x")) for s in report["summary"]["shapes_run"]]
    assert {lo, opt, hi} <= set(shapes)
    odd = [s for s in shapes if s[2] % 2 and s[3] % 2]
    assert odd and all(lo[i] <= odd[0][i] <= hi[i] for i in range(4))
    assert report["summary"]["shape_source"] == "profile"
    (profile,) = checks_named(report, "trt_dynamic_profile")
    assert profile["passed"] and flag.split(":", 1)[1].replace(":", ":") in profile["detail"]


def test_npz_inputs_replace_random_ones(tmp_path, write_model, run_validate):
    path = write_model(zoo.conv_relu(batch="N"))
    rng = np.random.default_rng(3)
    a = _npz(tmp_path, "a.npz", x=rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    b = _npz(tmp_path, "b.npz", x=rng.standard_normal((5, 3, 8, 8)).astype(np.float32))
    result, report = run_validate(path, "--inputs", a, "--inputs", b)
    assert result.exit_code == 0, result.stdout
    assert report["summary"]["shapes_run"] == ["3x3x8x8", "5x3x8x8"]
    assert report["summary"]["shape_source"] == "--inputs"


def test_same_file_twice_is_two_named_runs(tmp_path, write_model, run_validate):
    a = _npz(tmp_path, "a.npz", x=np.ones((2, 3, 8, 8), np.float32))
    result, report = run_validate(write_model(zoo.conv_relu(batch="N")), "--inputs", a, "--inputs", a)
    assert result.exit_code == 0, result.stdout
    assert report["summary"]["runs"] == [f"{a} 2x3x8x8", f"{a} 2x3x8x8 #2"]


def test_npz_in_any_profile_is_accepted(tmp_path, write_model, run_validate):
    """With two optimization profiles an input set inside the second one runs (it used to be held against the
    first only); ONNX Runtime's output is checked against numpy."""
    a, b = (np.random.default_rng(i).standard_normal((4, 4)).astype(np.float32) for i in (1, 2))
    npz = _npz(tmp_path, a=a, b=b)
    result, report = run_validate(write_model(zoo.two_inputs()), *TWO_PROFILES, "--inputs", npz)
    assert result.exit_code == 0, result.stdout + result.stderr
    assert report["summary"]["runs"] == [f"{npz} a=4x4,b=4x4"]
    (run,) = checks_named(report, "onnxruntime_run")
    assert run["passed"] and run["data"]["runs"] == [f"{npz} a=4x4,b=4x4"]


def test_reference_outputs_pair_by_name_or_position_and_keep_the_leftovers():
    from deploykit.validate.numerics import match_outputs

    one, two, three = (np.full((1,), v, np.float32) for v in (1, 2, 3))
    matched, no_ref, no_model, how = match_outputs([one], ["output", "second"])
    assert (list(matched), no_ref, no_model, how) == (["output"], ["second"], [], "by position")
    matched, no_ref, no_model, how = match_outputs([one, two, three], ["output"])
    assert (list(matched), no_ref, no_model, how) == (["output"], [], ["#1", "#2"], "by position")
    matched, no_ref, no_model, how = match_outputs({"logits": two, "aux": three}, ["aux", "extra"])
    assert (no_ref, no_model, how) == (["extra"], ["logits"], "by name")
    assert matched == {"aux": three}
    # A dict whose keys name no model output is paired in order, as the exporter flattens it.
    matched, no_ref, no_model, how = match_outputs({"a": one, "b": two}, ["y0", "y1"])
    assert (matched, no_ref, no_model, how) == ({"y0": one, "y1": two}, [], [], "by position")


def test_several_inputs_get_their_own_arrays(tmp_path, write_model, run_validate):
    path = write_model(zoo.two_inputs())
    npz = _npz(tmp_path, a=np.ones((2, 4), np.float32), b=np.full((2, 4), 2, np.float32))
    result, report = run_validate(path, "--inputs", npz)
    assert result.exit_code == 0
    assert report["summary"]["shapes_run"] == ["a=2x4,b=2x4"]


# ------------------------------------------------------------------------------------------ NaN / Inf
def test_nan_and_inf_outputs_are_counted(tmp_path, write_model, run_validate):
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    x[0, :3] = 0.0  # log(0) = -inf
    npz = _npz(tmp_path, x=x)
    result, report = run_validate(write_model(zoo.log_of_input()), "--inputs", npz)
    assert result.exit_code == 1
    (run,) = checks_named(report, "onnxruntime_run")
    counts = run["data"]["non_finite"][f"{npz} 1x64"]["y"]  # runs from --inputs are named after their file
    assert counts == {"nan": int((x < 0).sum()), "inf": int((x == 0).sum()), "size": 64}


# ------------------------------------------------------------------------------------------------ fp16
def _expected_out_of_range(up: float, down: float, x: np.ndarray) -> dict[str, str]:
    """The zoo's scale chain computed in numpy, judged against the fp16 limits written above."""
    big = x * np.float32(up)
    tensors = {"big": big, "big_relu": np.maximum(big, 0), "y": np.maximum(big, 0) * np.float32(down),
               "up": np.array(up, np.float32), "down": np.array(down, np.float32)}
    out = {}
    for name, t in tensors.items():
        a = np.abs(t.astype(np.float64)).ravel()
        nz = a[a > 0]
        if a.max() > FP16_MAX:
            out[name] = "overflow"
        elif nz.size and (nz < FP16_MIN_NORMAL).mean() > 0.5:
            # Scalar weights that fp16 still holds within 1% (epsilons) are exempt.
            if name in ("up", "down") and abs(float(np.float16(t)) - float(t)) / abs(float(t)) < 0.01:
                continue
            out[name] = "underflow"
    return out


@pytest.mark.parametrize("builder,up,down", [(zoo.fp16_overflow, 1e6, 1e-6), (zoo.fp16_underflow, 1e-7, 1e7)])
def test_fp16_readiness_lists_out_of_range_tensors_and_their_producers(tmp_path, write_model, run_validate,
                                                                       builder, up, down):
    x = np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32)
    result, report = run_validate(write_model(builder()), "--inputs", _npz(tmp_path, x=x))
    assert result.exit_code == 0  # a warning: the fp32 graph itself is fine
    (check,) = checks_named(report, "fp16_range")
    found = {t["tensor"]: t["kind"] for t in check["data"]["tensors"]}
    assert found == _expected_out_of_range(up, down, x)
    producers = {t["tensor"]: (t["producer_op"], t["producer"]) for t in check["data"]["tensors"]}
    assert producers["big"] == ("Mul", "scale_up") and producers["big_relu"] == ("Relu", "relu")
    # Keep-list: whoever produces or reads an out-of-range activation stays fp32.
    assert check["data"]["keep_nodes"] == ["scale_up", "relu", "scale_down"]
    assert check["data"]["not_in_default_keep_list"] == ["scale_up", "relu", "scale_down"]
    assert "fp32_nodes=['scale_up', 'relu', 'scale_down']" in check["fix"]


def test_fp16_keep_list_output_converts_to_a_graph_that_stays_accurate(tmp_path, write_model, run_validate):
    """The keep-list is what an fp16 graph needs: with it the fp16 model matches fp32, without it it does not."""
    import onnx
    import onnxruntime as ort

    from deploykit.export.fp16 import convert_to_fp16

    path = write_model(zoo.fp16_overflow())
    x = np.random.default_rng(5).standard_normal((1, 4, 8, 8)).astype(np.float32)
    _, report = run_validate(path, "--inputs", _npz(tmp_path, x=x))
    keep = checks_named(report, "fp16_range")[0]["data"]["keep_nodes"]
    model = onnx.load(str(path))

    def run(m):
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": x})[0].astype(np.float64)

    ref = run(model)
    naive, kept = run(convert_to_fp16(model)), run(convert_to_fp16(model, fp32_nodes=keep))
    assert not np.allclose(naive, ref, rtol=1e-2, atol=1e-2)  # Inf/NaN or flushed values without the keep-list
    np.testing.assert_allclose(kept, ref, rtol=1e-2, atol=1e-2)


# ---------------------------------------------------------------------------------------- tolerances
def test_tolerance_flags_per_output_and_defaults():
    base = Tolerance(atol=1e-4, rtol=2e-4)
    tols = tolerances(base, ["a", "b"], atol=("1e-3", "b:5e-2"), rtol=("a:0",), mode="mean")
    assert (tols["a"].atol, tols["a"].rtol, tols["a"].mode) == (1e-3, 0.0, "mean")
    assert (tols["b"].atol, tols["b"].rtol) == (5e-2, 2e-4)
    with pytest.raises(UserInputError, match="names output 'c'"):
        tolerances(base, ["a"], atol=("c:1",))
    with pytest.raises(UserInputError, match="unknown --check-mode"):
        tolerances(base, ["a"], mode="median")


# ------------------------------------------------------------------------------------- report outputs
def test_markdown_report_and_terminal_table(cli, tmp_path, write_model):
    path = write_model(zoo.fp16_overflow())
    report_md = tmp_path / "out" / "report.md"
    result = cli("validate", str(path), "--report", str(report_md))
    assert result.exit_code == 0
    for text in ("PASSED", "fp16_range", "trt_parser_support", "onnxruntime_run"):
        assert text in result.stdout
    md = report_md.read_text()
    assert md.startswith("# deploykit validate: PASSED")
    for heading in ("## structure", "## tensorrt", "## numerics", "## fp16", "## fp16 keep-list"):
        assert heading in md
    assert "`scale_up`" in md and "onnx/onnx-tensorrt docs/operators.md" in md

    result = cli("validate", str(write_model(zoo.det_unsupported(), "det")), "--report", str(report_md))
    assert result.exit_code == 1
    assert report_md.read_text().startswith("# deploykit validate: FAILED")
    assert "| `trt_unsupported_op` | FAIL |" in report_md.read_text()


def test_json_summary_names_the_support_data(write_model, run_validate):
    from deploykit.validate.support import load_raw

    _, report = run_validate(write_model(zoo.conv_relu()))
    raw = load_raw()
    for key, entry in raw["versions"].items():
        assert f"{entry['tensorrt']} for {key}" in report["summary"]["tensorrt_support"]
    counts = report["counts"]
    assert counts["errors"] == 0 and counts["passed"] + counts["skipped"] == len(report["checks"])
    assert counts["skipped"] == 1  # parity: no reference was given


# ---------------------------------------------------------------------------------- --backend trt wiring
def test_backend_trt_compares_the_engine_with_onnxruntime(monkeypatch, write_model, run_validate):
    """No TensorRT here: the environment, the build and the engine are stand-ins (the engine returns ONNX
    Runtime's outputs plus a known offset), so this proves the wiring (profile spanning the shapes run,
    per-shape comparisons, tolerances), not TensorRT itself; that needs a machine with TensorRT and a GPU."""
    import types

    import onnxruntime as ort

    from deploykit.trt.builder import BuildResult
    from deploykit.trt.capabilities import GpuInfo

    path = write_model(zoo.conv_relu(batch="N"))
    offset = np.float32(3e-3)
    fake_trt = types.SimpleNamespace(
        __version__="11.4.0.106", BuilderFlag=types.SimpleNamespace(),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(STRONGLY_TYPED=0),
        IBuilderConfig=types.SimpleNamespace(builder_optimization_level=None),
        ParserError=types.SimpleNamespace(node_name=None))
    built = {}

    def fake_build(trt, summary, profiles, plan, caps, settings=None, sink=None):
        built.update(profiles=profiles, plan=plan)
        return BuildResult(plan=b"engine", seconds=0.01)

    class FakeEngine:
        def __init__(self, plan, trt=None):
            assert plan == b"engine"
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def infer(self, feed):
            return {"y": self.session.run(None, dict(feed))[0] + offset}

    monkeypatch.setattr("deploykit.trt.capabilities.require_build_environment",
                        lambda purpose="": (fake_trt, GpuInfo("stand-in", "9.0")))
    monkeypatch.setattr("deploykit.trt.builder.build_serialized", fake_build)
    monkeypatch.setattr("deploykit.backends.trt.TrtRunner", FakeEngine)

    result, report = run_validate(path, "--backend", "trt", "--atol", f"{2 * offset}", "--rtol", "0", "--no-fp16")
    assert result.exit_code == 0, result.stdout[-2000:]
    trt_checks = [c for c in report["checks"] if c["name"].startswith("trt_parity[")]
    assert [c["name"] for c in trt_checks] == [f"trt_parity[{s}]" for s in report["summary"]["shapes_run"]]
    assert all(abs(c["data"]["max_abs"] - offset) < 1e-6 for c in trt_checks)
    (profile,) = built["profiles"]
    assert (profile["x"].min[0], profile["x"].max[0]) == (1, 2)  # spans batch 1 and 2, the shapes run
    assert built["plan"].precision == "fp32" and built["plan"].strongly_typed

    result, report = run_validate(path, "--backend", "trt", "--atol", f"{offset / 2}", "--rtol", "0", "--no-fp16")
    assert result.exit_code == 1
    assert all(not c["passed"] for c in report["checks"] if c["name"].startswith("trt_parity["))


@pytest.mark.parametrize("order", ["calm first", "loud first"])
def test_fp16_readiness_scans_every_inputs_file(tmp_path, write_model, run_validate, order):
    """y = 100 x: the calm file (|x| < 5) stays inside fp16, the loud one (x = 1000) reaches 1e5 > 65504.
    Either order of the files must report the overflow."""
    from onnx import TensorProto as T
    from onnx import helper

    m = zoo.model([helper.make_node("Mul", ["x", "c"], ["y"], name="scale")], [zoo.vi("x", T.FLOAT, [1, 8])],
                  [zoo.vi("y", T.FLOAT, [1, 8])], [zoo.const("c", np.array(100.0, np.float32))])
    calm = np.clip(np.random.default_rng(3).standard_normal((1, 8)), -4.9, 4.9).astype(np.float32)
    loud = np.full((1, 8), 1000.0, np.float32)
    assert np.abs(calm * 100).max() < 65504 < np.abs(loud * 100).max()  # the premise, computed here
    files = [_npz(tmp_path, "calm.npz", x=calm), _npz(tmp_path, "loud.npz", x=loud)]
    if order == "loud first":
        files.reverse()
    _, report = run_validate(write_model(m, "scale100"), *(a for f in files for a in ("--inputs", f)))
    (check,) = checks_named(report, "fp16_range")
    assert not check["passed"]
    (tensor,) = check["data"]["tensors"]
    assert tensor["tensor"] == "y" and tensor["kind"] == "overflow" and tensor["max_abs"] == float(np.abs(loud * 100).max())


def test_scalar_epsilons_are_not_fp16_findings_but_tiny_scalars_are(tmp_path, write_model, run_validate):
    """x + 1e-5 (an epsilon fp16 holds within 0.2%) is fine; x * 1e-7 is not (fp16 rounds it by ~19%)."""
    from onnx import TensorProto as T
    from onnx import helper

    x = np.random.default_rng(2).standard_normal((1, 8)).astype(np.float32)
    for value, flagged in ((1e-5, False), (1e-7, True)):
        assert (abs(float(np.float16(value)) - value) / value > 0.01) is flagged  # the premise, computed here
        m = zoo.model([helper.make_node("Add", ["x", "c"], ["y"], name="add")], [zoo.vi("x", T.FLOAT, [1, 8])],
                      [zoo.vi("y", T.FLOAT, [1, 8])], [zoo.const("c", np.array(value, np.float32))])
        _, report = run_validate(write_model(m, f"eps{value}"), "--inputs", _npz(tmp_path, x=x))
        found = [t["tensor"] for t in checks_named(report, "fp16_range")[0]["data"]["tensors"]]
        assert found == (["c"] if flagged else [])
