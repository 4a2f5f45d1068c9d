"""`deploykit validate` on a model `deploykit export` wrote: the manifest's reference, every shape of its
ranges, and Polygraphy-style tolerances checked against errors measured here with onnxruntime directly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tests.validate.helpers import checks_named, failed


CONFIG = """\
source: {block: se}
input: {channels: 64, batch: {min: 1, opt: 2, max: 4}, height: {opt: 14, min: 7, max: 28},
        width: {opt: 14, min: 7, max: 28}}
precisions: [fp32]
exporters: [torchscript]
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """se exported once with dynamic batch and spatial dims (torchscript exporter: about 10 s on 2 cores)."""
    out = tmp_path_factory.mktemp("export")
    (out / "se.yaml").write_text(CONFIG)
    proc = subprocess.run([sys.executable, "-m", "deploykit", "export", "--config", str(out / "se.yaml"),
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "se" / "1" / "model.onnx"


def test_exported_model_passes_everything(exported, run_validate):
    result, report = run_validate(exported)
    assert result.exit_code == 0, result.stdout[-3000:]
    assert failed(report) == []
    manifest = json.loads((exported.parent / "deploykit.json").read_text())
    shapes = report["summary"]["shapes_run"]
    parity = [c for c in report["checks"] if c["name"].startswith("parity[")]
    assert [c["name"] for c in parity] == [f"parity[{s}]" for s in shapes]
    dims = [tuple(int(v) for v in s.split("x")) for s in shapes]
    batch = manifest["config"]["input"]["batch"]
    assert {d[0] for d in dims} >= {batch["min"], batch["max"]}
    assert any(d[2] % 2 and d[3] % 2 for d in dims), "an odd spatial size is verified"
    assert all(c["data"]["max_abs"] < 1e-4 for c in parity)
    assert checks_named(report, "trt_parser_support")[0]["passed"]
    assert "sidecar" in checks_named(report, "trt_dynamic_profile")[0]["detail"]
    assert checks_named(report, "fp16_range")[0]["passed"]
    assert "PyTorch se" in report["summary"]["reference"]


@pytest.fixture(scope="module")
def perturbed(exported, tmp_path_factory):
    """A copy whose largest weight is scaled by 1.01, its manifest beside it, and a fixed input."""
    folder = tmp_path_factory.mktemp("perturbed")
    shutil.copy(exported.parent / "deploykit.json", folder / "deploykit.json")
    model = onnx.load(str(exported))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) * 1.01).astype(np.float32), init.name))
    onnx.save(model, str(folder / "model.onnx"))
    x = np.random.default_rng(11).standard_normal((2, 64, 14, 14)).astype(np.float32)
    np.savez(folder / "x.npz", input=x)
    return folder / "model.onnx", str(folder / "x.npz"), x


def _measured_errors(exported, perturbed_path, x):
    """|perturbed - original| with onnxruntime; the original equals PyTorch to ~1e-7 (the export proved it)."""
    import onnxruntime as ort

    def run(p):
        return ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]

    diff = np.abs(run(perturbed_path).astype(np.float64) - run(exported).astype(np.float64))
    return float(diff.max()), float(diff.mean())


def test_tolerances_follow_polygraphy_semantics(exported, perturbed, run_validate):
    path, npz, x = perturbed
    max_abs, mean_abs = _measured_errors(exported, path, x)
    assert max_abs > 1e-5, "the perturbation must be measurable"
    base = ("--inputs", npz, "--no-fp16", "--trt", "none")

    def verdict(*flags):
        result, report = run_validate(path, *base, *flags)
        (check,) = [c for c in report["checks"] if c["name"].startswith("parity[")]
        return result.exit_code, check

    code, check = verdict("--atol", f"{2 * max_abs}", "--rtol", "0")
    assert code == 0 and abs(check["data"]["max_abs"] - max_abs) < 2e-6
    assert abs(check["data"]["min_passing"]["output"]["atol"] - max_abs) < 2e-6
    code, check = verdict("--atol", f"{max_abs / 2}", "--rtol", "0")
    assert code == 1 and "exceed atol" in check["detail"]
    # An element fails only if it exceeds BOTH tolerances: a huge rtol rescues a tight atol.
    assert verdict("--atol", f"{max_abs / 2}", "--rtol", "1e9")[0] == 0
    # Per-output tolerance (the output is named "output").
    assert verdict("--atol", f"output:{2 * max_abs}", "--rtol", "0")[0] == 0
    assert verdict("--atol", f"output:{max_abs / 2}", "--rtol", "0")[0] == 1
    # Statistic modes: the mean error passes a bound the worst element does not.
    bound = (mean_abs + max_abs) / 2
    assert mean_abs < bound < max_abs
    assert verdict("--atol", f"{bound}", "--rtol", "0", "--check-mode", "mean")[0] == 0
    assert verdict("--atol", f"{bound}", "--rtol", "0", "--check-mode", "max")[0] == 1
    assert verdict("--atol", f"{bound}", "--rtol", "0")[0] == 1


def test_reference_from_block_or_config_when_the_manifest_is_gone(exported, tmp_path, run_validate):
    import yaml

    folder = tmp_path / "bare"
    folder.mkdir()
    shutil.copy(exported, folder / "model.onnx")
    manifest = json.loads((exported.parent / "deploykit.json").read_text())
    # Without the manifest nothing sizes the dynamic H and W: unusable for a run (exit 2), fine for the audit.
    result, _ = run_validate(folder / "model.onnx")
    assert result.exit_code == 2 and "--profile input:" in result.stderr
    result, report = run_validate(folder / "model.onnx", "--no-run")
    assert result.exit_code == 0
    assert "no optimization profile" in checks_named(report, "trt_dynamic_profile")[0]["detail"]
    result, report = run_validate(folder / "model.onnx", "--profile", "input:1x64x8x8:2x64x14x14:2x64x16x16")
    assert result.exit_code == 0
    assert checks_named(report, "parity")[0]["severity"] == "info"

    config = tmp_path / "se.yaml"
    config.write_text(yaml.safe_dump(manifest["config"]))
    result, report = run_validate(folder / "model.onnx", "--config", str(config), "--no-fp16")
    assert result.exit_code == 0, result.stdout[-2000:]
    assert len([c for c in report["checks"] if c["name"].startswith("parity[")]) >= 5

    result, report = run_validate(folder / "model.onnx", "--block", "se", "--no-fp16")
    assert result.exit_code == 0, result.stdout[-2000:]
    assert [c for c in report["checks"] if c["name"].startswith("parity[")]


def test_profile_flags_choose_the_shapes_parity_runs_at(exported, run_validate):
    lo, opt, hi = (1, 64, 7, 7), (2, 64, 9, 9), (3, 64, 12, 12)
    flag = "input:" + ":".join("x".join(map(str, s)) for s in (lo, opt, hi))
    result, report = run_validate(exported, "--profile", flag, "--no-fp16")
    assert result.exit_code == 0, result.stdout[-2000:]
    assert report["summary"]["shape_source"] == "profile"
    shapes = {tuple(int(v) for v in s.split("x")) for s in report["summary"]["shapes_run"]}
    assert {lo, opt, hi} <= shapes
    assert {c["name"] for c in report["checks"] if c["name"].startswith("parity[")} == \
        {f"parity[{s}]" for s in report["summary"]["shapes_run"]}


# ------------------------------------------------------------- every file, every output, every profile
def _parity(report) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"] if c["name"].startswith("parity[")}


def test_every_inputs_file_is_compared_even_when_their_shapes_agree(exported, perturbed, tmp_path, run_validate):
    """Two files of one shape: the perturbed weight shows on random values, not on zeros (x * gate = 0 in both
    graphs), so one run fails and one passes, in either order, each named after its file."""
    path, npz, x = perturbed
    zeros = tmp_path / "zeros.npz"
    np.savez(zeros, input=np.zeros_like(x))
    err_x, _ = _measured_errors(exported, path, x)
    err_zeros, _ = _measured_errors(exported, path, np.zeros_like(x))
    atol = err_x / 2
    assert err_zeros < atol, "the premise: zeros pass the tolerance random values fail"
    for files in ((npz, str(zeros)), (str(zeros), npz)):
        result, report = run_validate(path, "--inputs", files[0], "--inputs", files[1], "--atol", f"{atol}",
                                      "--rtol", "0", "--no-fp16", "--trt", "none")
        assert result.exit_code == 1, result.stdout[-2000:]
        assert report["summary"]["runs"] == [f"{f} 2x64x14x14" for f in files]
        checks = _parity(report)
        assert list(checks) == [f"parity[{f} 2x64x14x14]" for f in files]
        failing, passing = checks[f"parity[{npz} 2x64x14x14]"], checks[f"parity[{zeros} 2x64x14x14]"]
        assert not failing["passed"] and abs(failing["data"]["max_abs"] - err_x) < 2e-6
        assert passing["passed"] and abs(passing["data"]["max_abs"] - err_zeros) < 2e-6


def test_a_model_output_the_reference_lacks_fails_and_is_named(exported, perturbed, tmp_path, run_validate):
    """`second = output * 1e30` has no PyTorch counterpart: it used to be dropped by the pairing and pass."""
    import onnxruntime as ort
    from onnx import helper

    _, npz, x = perturbed
    model = onnx.load(str(exported))
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.array(1e30, np.float32), "big"))
    g.node.append(helper.make_node("Mul", [g.output[0].name, "big"], ["second"]))
    second = onnx.ValueInfoProto()
    second.CopyFrom(g.output[0])
    second.name = "second"
    g.output.append(second)
    folder = tmp_path / "twoout"
    folder.mkdir()
    onnx.save(model, str(folder / "model.onnx"))
    shutil.copy(exported.parent / "deploykit.json", folder / "deploykit.json")

    result, report = run_validate(folder / "model.onnx", "--inputs", npz, "--no-fp16", "--trt", "none")
    assert result.exit_code == 1, result.stdout[-2000:]
    assert failed(report) == [("parity_outputs", "error")]
    (outputs,) = checks_named(report, "parity_outputs")
    assert "'second'" in outputs["detail"] and "1 output(s), the model has 2" in outputs["detail"]
    assert outputs["data"]["compared"] == ["output"] and outputs["data"]["not_compared"] == ["second"]
    # "output" is still compared, with the error onnxruntime measures here against the original export.
    (check,) = _parity(report).values()
    assert [o["name"] for o in check["data"]["outputs"]] == ["output"]
    run = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    original = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(run[1]).max() > 1e29  # what passed unseen before
    assert abs(check["data"]["max_abs"] - float(np.abs(run[0] - original).max())) < 2e-6


def test_npz_inside_the_second_profile_is_compared(exported, perturbed, tmp_path, run_validate):
    """Batch 4 lies in the second of two --profile ranges: it runs and is compared (it used to be refused,
    being outside the first); batch 5 lies in neither: exit 2 listing both."""
    path, _, _ = perturbed
    profiles = ("--profile", "input:1x64x14x14:2x64x14x14:2x64x14x14",
                "--profile", "input:3x64x14x14:4x64x14x14:4x64x14x14")
    x4 = np.random.default_rng(5).standard_normal((4, 64, 14, 14)).astype(np.float32)
    np.savez(tmp_path / "b4.npz", input=x4)
    max_abs, _ = _measured_errors(exported, path, x4)
    result, report = run_validate(path, *profiles, "--inputs", str(tmp_path / "b4.npz"), "--atol", f"{2 * max_abs}",
                                  "--rtol", "0", "--no-fp16", "--trt", "none")
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr
    (check,) = _parity(report).values()
    assert check["name"] == f"parity[{tmp_path / 'b4.npz'} 4x64x14x14]"
    assert check["passed"] and abs(check["data"]["max_abs"] - max_abs) < 2e-6

    np.savez(tmp_path / "b5.npz", input=np.zeros((5, 64, 14, 14), np.float32))
    result, _ = run_validate(path, *profiles, "--inputs", str(tmp_path / "b5.npz"))
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert ("outside each of the 2 optimization profiles: #1 input 1x64x14x14:2x64x14x14:2x64x14x14; "
            "#2 input 3x64x14x14:4x64x14x14:4x64x14x14") in result.stderr
