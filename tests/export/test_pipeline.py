"""The export pipeline: configs, fallbacks, verified simplification, fp16, atomic artifacts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from deploykit import repository_journal
from deploykit.export import pipeline, stages
from deploykit.export.config import find_config_dir, load_config
from deploykit.repository import sha256_file
from tests.conftest import SMALL

REPO = Path(__file__).resolve().parents[2]


# --- configs -------------------------------------------------------------------------------------------

def write(tmp_path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


GOOD = """
source: {block: se, args: {channels: 32}}
input: {channels: 32, batch: {min: 1, opt: 2, max: 4}, height: {opt: 10}, width: {opt: 12}}
precisions: [fp32]
"""


@pytest.mark.parametrize("text,needle", [
    ("source: {block: se\ninput: [", "malformed YAML at line"),
    (GOOD + "colour: blue\n", "colour: unknown field"),
    ("input: {height: {opt: 8}, width: {opt: 8}}\n", "source: required field is missing"),
    (GOOD.replace("min: 1, opt: 2, max: 4", "min: 8, opt: 2, max: 4"), "input.batch: min (8) <= opt (2) <= max (4)"),
    (GOOD.replace("height: {opt: 10}", "height: {opt: 0}"), "input.height.opt: Input should be greater than 0"),
    (GOOD.replace("width: {opt: 12}", "width: {opt: 12, min: 20}"), "input.width: min (20) <= opt (12)"),
    (GOOD.replace("precisions: [fp32]", "precisions: [fp8]"), "precisions.0"),
    ("- just\n- a list\n", "top level must be a mapping"),
])
def test_bad_configs_name_file_field_and_fix(cli, tmp_path, text, needle):
    path = write(tmp_path, text)
    result = cli("export", "--config", str(path), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2, result.stderr
    assert str(path) in result.stderr and needle in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m" / "se").exists()


def test_channels_that_do_not_fit_the_block(cli, tmp_path):
    path = write(tmp_path, GOOD.replace("input: {channels: 32", "input: {channels: 48"))
    result = cli("export", "--config", str(path), "--out", str(tmp_path / "m"))
    assert result.exit_code == 2
    assert "input.channels is 48" in result.stderr and "set input.channels to 32" in result.stderr
    assert f"{path}: input.channels" in result.stderr   # the file the field is in


def test_unwritable_output_directory(cli, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("export", "--block", "se", "--out", str(blocker / "models"), *SMALL)
    assert result.exit_code == 2 and "not writable: " in result.stderr


def test_every_shipped_config_is_valid():
    folder = find_config_dir(REPO)
    configs = sorted(folder.glob("*.yaml"))
    assert configs
    for path in configs:
        cfg = load_config(path)
        assert cfg.model_name == path.stem
        assert set(cfg.precisions) == {"fp32", "fp16"}


# --- flags, artifacts, versions ------------------------------------------------------------------------

def test_flags_override_the_config_and_reach_the_artifacts(cli, tmp_path):
    result = cli("export", "--block", "sam", "--out", str(tmp_path), "--json", "--opset", "17", "--batch", "1:2:6",
                 "--size", "12x10", "--dynamic-hw", "--precision", "fp32", "--precision", "fp16")
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.json()
    manifest = json.loads(Path(out["manifest"]).read_text())
    cfg = manifest["config"]
    assert cfg["opset"] == 17 and cfg["input"]["batch"] == {"min": 1, "opt": 2, "max": 6}
    assert cfg["input"]["height"] == {"opt": 12, "min": 6, "max": 24}
    model = onnx.load(out["onnx"])
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.HasField("dim_value") for d in dims] == [False, True, False, False]
    shapes = [tuple(s["shape"]) for s in out["parity"]["fp32"]["shapes"]]
    assert (2, 64, 6, 5) in shapes and (2, 64, 24, 20) in shapes, "min and max spatial sizes verified"
    assert any(h % 2 and w % 2 and h != w for _, _, h, w in shapes), "an odd non-square size verified"
    pbtxt = (tmp_path / "sam" / "config.pbtxt").read_text()
    assert "max_batch_size: 6" in pbtxt and "dims: [ 64, -1, -1 ]" in pbtxt and 'platform: "onnxruntime_onnx"' in pbtxt


def test_fp16_is_a_separate_model_with_fp32_io(cli, tmp_path):
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL, "--precision", "fp32",
                 "--precision", "fp16")
    out = result.json()
    assert result.exit_code == 0 and {a["model"] for a in out["artifacts"]} == {"se", "se_fp16"}
    half = onnx.load(str(tmp_path / "se_fp16" / "1" / "model.onnx"))
    assert half.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
    p16 = out["parity"]["fp16"]
    assert p16["passed"] and p16["min_passing_atol"] == p16["max_abs"] > 0
    assert 'name: "se_fp16"' in (tmp_path / "se_fp16" / "config.pbtxt").read_text()


def test_existing_model_needs_force_or_new_version(cli, tmp_path):
    args = ("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL, "--precision", "fp32")
    assert cli(*args).exit_code == 0
    onnx_path = tmp_path / "se" / "1" / "model.onnx"
    before = onnx_path.read_bytes()
    result = cli(*args)
    assert result.exit_code == 2 and "--force" in result.stderr and "--new-version" in result.stderr
    assert onnx_path.read_bytes() == before
    assert cli(*args, "--new-version").exit_code == 0
    assert (tmp_path / "se" / "2" / "model.onnx").is_file() and onnx_path.read_bytes() == before
    assert cli(*args, "--force").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "se").iterdir() if p.is_dir()) == ["1", "2"]
    assert not list(tmp_path.rglob(".staging-*")) and not list(tmp_path.glob(".deploykit-export-*"))


# --- failures on purpose ------------------------------------------------------------------------------

def test_dynamo_failure_falls_back_to_torchscript(cli, tmp_path, monkeypatch):
    from deploykit.export import exporters

    real = exporters.export_onnx

    def broken_dynamo(*args, exporter, **kwargs):
        if exporter == "dynamo":
            raise RuntimeError("simulated dynamo failure")
        return real(*args, exporter=exporter, **kwargs)

    monkeypatch.setattr(exporters, "export_onnx", broken_dynamo)
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL)
    out = result.json()
    assert result.exit_code == 0 and out["exporter"] == "torchscript"
    assert [(a["exporter"], a["ok"]) for a in out["attempts"]] == [("dynamo", False), ("torchscript", True)]
    assert "simulated dynamo failure" in out["attempts"][0]["error"]
    report = Path(out["report"]).read_text()
    assert "simulated dynamo failure" in report and "| export | fallback |" in report


def test_every_exporter_failing_writes_nothing_and_reports(cli, tmp_path, monkeypatch):
    from deploykit.export import exporters

    def broken(*args, exporter, **kwargs):
        raise RuntimeError(f"simulated {exporter} failure")

    monkeypatch.setattr(exporters, "export_onnx", broken)
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL)
    out = result.json()
    assert result.exit_code == 1 and out["passed"] is False and out["first_failed_stage"] == "export"
    assert not list(tmp_path.rglob("model.onnx"))
    report = Path(out["report"]).read_text()
    assert "simulated dynamo failure" in report and "simulated torchscript failure" in report


def _perturbing_simplifier(model):
    """A 'simplifier' that changes the outputs slightly: multiplies the graph output by 1.001."""
    from onnx import helper

    from deploykit.export.simplify import SimplifyResult

    m = onnx.ModelProto.FromString(model.SerializeToString())
    out = m.graph.output[0].name
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.001, dtype=np.float32), "scale_bug"))
    for node in m.graph.node:
        for i, name in enumerate(node.output):
            if name == out:
                node.output[i] = "pre_scale"
    m.graph.node.append(helper.make_node("Mul", ["pre_scale", "scale_bug"], [out]))
    return SimplifyResult(m, True, None, len(model.graph.node), len(m.graph.node))


def test_simplifier_that_changes_outputs_is_rejected(cli, tmp_path, monkeypatch):
    monkeypatch.setattr("deploykit.export.simplify.simplify", _perturbing_simplifier)
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL)
    out = result.json()
    assert result.exit_code == 0 and out["simplified"] is False
    stage = next(s for s in out["stages"] if s["name"] == "simplify")
    assert stage["status"] == "fallback" and "changed the outputs" in stage["detail"]
    assert not any(n.op_type == "Mul" and "scale_bug" in n.input for n in onnx.load(out["onnx"]).graph.node)


def test_simplifier_crash_keeps_the_unsimplified_graph(cli, tmp_path, monkeypatch):
    def crash(model, **kwargs):
        raise RuntimeError("simulated onnxsim crash")

    monkeypatch.setattr("onnxsim.simplify", crash)
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL)
    out = result.json()
    stage = next(s for s in out["stages"] if s["name"] == "simplify")
    assert result.exit_code == 0 and stage["status"] == "fallback" and "simulated onnxsim crash" in stage["detail"]


def test_parity_failure_writes_nothing(cli, tmp_path, monkeypatch):
    """If the ONNX graph disagrees with PyTorch (here: a wrong reference), no artifact is written."""
    from deploykit.export import verify

    real = verify.torch_outputs
    monkeypatch.setattr(verify, "torch_outputs", lambda m, x, names: {k: v + 1.0 for k, v in real(m, x, names).items()})
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL)
    assert result.exit_code == 1 and result.json()["passed"] is False
    assert not list(tmp_path.rglob("model.onnx")) and (tmp_path / "se" / "export_report.failed.md").is_file()
    assert "FAILED" in (tmp_path / "se" / "export_report.failed.md").read_text()


def test_a_failed_run_leaves_the_good_models_report_alone(cli, tmp_path, monkeypatch):
    args = ("export", "--block", "se", "--out", str(tmp_path), *SMALL, "--precision", "fp32")
    assert cli(*args).exit_code == 0
    report = tmp_path / "se" / "export_report.md"
    good_report, good_model = report.read_text(), (tmp_path / "se" / "1" / "model.onnx").read_bytes()
    # Unusable input: nothing at all is written.
    chan = write(tmp_path, GOOD.replace("input: {channels: 32", "input: {channels: 48"))
    assert cli("export", "--config", str(chan), "--out", str(tmp_path), "--force").exit_code == 2
    assert sorted(p.name for p in (tmp_path / "se").iterdir()) == ["1", "config.pbtxt", "export_report.md"]
    # A failed export reports in its own file; the models in place keep theirs.
    from deploykit.export import verify

    real = verify.torch_outputs
    monkeypatch.setattr(verify, "torch_outputs", lambda m, x, names: {k: v + 1.0 for k, v in real(m, x, names).items()})
    assert cli(*args, "--force").exit_code == 1
    assert report.read_text() == good_report and (tmp_path / "se" / "1" / "model.onnx").read_bytes() == good_model
    assert "FAILED" in (tmp_path / "se" / "export_report.failed.md").read_text()
    # The next passing run removes the stale failure report.
    monkeypatch.setattr(verify, "torch_outputs", real)
    assert cli(*args, "--force").exit_code == 0
    assert not (tmp_path / "se" / "export_report.failed.md").exists()


def test_a_failed_rename_while_installing_restores_every_model(cli, tmp_path, monkeypatch):
    """fp32 and fp16 models and their config.pbtxt are installed together or not at all."""
    args = ("export", "--block", "se", "--out", str(tmp_path), *SMALL)
    assert cli(*args).exit_code == 0
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    real = os.replace

    def replace(src, dst):
        if Path(dst) == tmp_path / "se_fp16" / "1" and Path(src).name.startswith(".staging-"):
            # fp16's version directory: fp32's model and config are already in place
            raise OSError(28, "No space left on device")
        real(src, dst)

    monkeypatch.setattr(repository_journal.os, "replace", replace)
    result = cli(*args, "--force", "--batch", "2:2:2")
    assert result.exit_code == 2 and "No space left on device" in result.stderr
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before  # every file as it was, and nothing added (no .old-*, .staging-*, reports)


def test_a_file_where_a_model_or_version_goes(cli, tmp_path):
    (tmp_path / "se").write_text("not a directory")
    result = cli("export", "--block", "se", "--out", str(tmp_path), *SMALL)
    assert result.exit_code == 2 and "is a file" in result.stderr and len(result.stderr.splitlines()) == 1
    (tmp_path / "se").unlink()
    (tmp_path / "se").mkdir()
    (tmp_path / "se" / "1").write_text("a stray file named like version 1")
    result = cli("export", "--block", "se", "--out", str(tmp_path), *SMALL, "--precision", "fp32")
    assert result.exit_code == 2 and "already exists" in result.stderr
    assert (tmp_path / "se" / "1").read_text() == "a stray file named like version 1"


@pytest.mark.parametrize("args_text,words", [
    ("{channels: 32, reduction: 0}", ["leaves no hidden channels", "source.args"]),
    ("{channels: 32, reduction: 2.5}", ["bad constructor arguments", "2.5"]),
])
def test_constructor_failures_are_config_errors(cli, tmp_path, args_text, words):
    path = write(tmp_path, GOOD.replace("args: {channels: 32}", f"args: {args_text}"))
    result = cli("export", "--config", str(path), "--out", str(tmp_path / "m"))
    error = result.stderr.strip().splitlines()[-1]   # after the progress lines of the stages that ran
    assert result.exit_code == 2 and "Traceback" not in result.stderr and error.startswith("error: ")
    assert all(w in error for w in words) and error.startswith(f"error: {path}: "), result.stderr


def test_a_checkpoint_that_is_not_a_state_dict(cli, tmp_path):
    import torch

    torch.save([1, 2, 3], tmp_path / "list.pth")
    result = cli("export", "--block", "se", "--weights", str(tmp_path / "list.pth"), "--out", str(tmp_path), *SMALL)
    assert result.exit_code == 2 and "holds a list, not a state dict" in result.stderr


def test_shapes_too_large_for_memory_are_refused_before_any_work(cli, tmp_path):
    result = cli("export", "--block", "se", "--size", "8192x8192", "--out", str(tmp_path))
    assert result.exit_code == 2 and "GiB for the input alone" in result.stderr and "--batch" in result.stderr
    assert not (tmp_path / "se").exists()


def test_an_opset_the_dynamo_exporter_cannot_write_falls_back(cli, tmp_path):
    result = cli("export", "--block", "se", "--opset", "13", "--out", str(tmp_path), *SMALL, "--precision", "fp32",
                 "--json")
    out = result.json()
    assert result.exit_code == 0 and out["exporter"] == "torchscript"
    assert "wrote opset 18, not the requested 13" in out["attempts"][0]["error"]
    model = onnx.load(str(tmp_path / "se" / "1" / "model.onnx"))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    manifest = json.loads((tmp_path / "se" / "1" / "deploykit.json").read_text())
    assert opset == 13 and manifest["onnx"]["opset"] == 13


def test_interrupt_while_writing_keeps_the_old_model(cli, tmp_path, monkeypatch):
    args = ("export", "--block", "se", "--out", str(tmp_path), *SMALL, "--precision", "fp32")
    assert cli(*args).exit_code == 0
    good = (tmp_path / "se" / "1" / "model.onnx").read_bytes()

    def interrupted_save(model, path, *a, **k):
        Path(path).write_bytes(model.SerializeToString()[:100])  # half a file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(onnx, "save", interrupted_save)
    result = cli(*args, "--force")
    assert result.exit_code == 130 and "interrupted" in result.stderr
    assert (tmp_path / "se" / "1" / "model.onnx").read_bytes() == good
    assert not list(tmp_path.rglob(".staging-*")) and not list(tmp_path.glob(".deploykit-export-*"))


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    base = [sys.executable, "-m", "deploykit", "export", "--block", "se", "--out", str(tmp_path), *SMALL,
            "--precision", "fp32"]
    subprocess.run(base, check=True, capture_output=True, timeout=300)
    good = (tmp_path / "se" / "1" / "model.onnx").read_bytes()
    proc = subprocess.Popen(base + ["--force", "--batch", "2:2:2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".deploykit-export-*/raw.onnx")) and time.monotonic() < deadline:
        time.sleep(0.02)   # the export is under way once its raw graph is written
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()
    lines = err.decode().strip().splitlines()   # progress lines of the stages that ran, then the error
    assert "Traceback" not in err.decode()
    # On a loaded machine the signal can land after the verified graphs went in: the line then says so, and
    # the repository must be wholly the new model. Either way it is one of the two, named correctly.
    if lines[-1] == "error: interrupted before the install; the repository keeps its previous models":
        assert (tmp_path / "se" / "1" / "model.onnx").read_bytes() == good
    else:
        assert lines[-1] == "error: interrupted after the install; the repository holds the new models se/1", lines
        assert (tmp_path / "se" / "1" / "model.onnx").read_bytes() != good
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(
        ["se", "1", "model.onnx", "deploykit.json", "config.pbtxt", "export_report.md"])


def test_ctrl_c_while_installing_never_mixes_old_and_new_models(tmp_path):
    """Ctrl-C the moment the new fp32 version directory is in place: fp32, fp16 and both config.pbtxt are
    then either all old or all new (Ctrl-C waits for the renames), and nothing is left aside."""
    base = [sys.executable, "-m", "deploykit", "export", "--block", "se", "--out", str(tmp_path), *SMALL]
    subprocess.run(base, check=True, capture_output=True, timeout=300)
    inode = (tmp_path / "se" / "1").stat().st_ino
    proc = subprocess.Popen(base + ["--force", "--batch", "2:2:2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while proc.poll() is None:
        try:
            if (tmp_path / "se" / "1").stat().st_ino != inode:
                proc.send_signal(signal.SIGINT)
                break
        except FileNotFoundError:
            pass
    _, err = proc.communicate(timeout=120)
    run = f"exit {proc.returncode}: {err.decode()[-600:]}"
    batches = set()
    for name in ("se", "se_fp16"):
        manifest = json.loads((tmp_path / name / "1" / "deploykit.json").read_text())
        batch = manifest["config"]["input"]["batch"]
        config_max = 0 if batch["min"] == batch["max"] else batch["max"]
        assert f"max_batch_size: {config_max}\n" in (tmp_path / name / "config.pbtxt").read_text(), run
        assert manifest["onnx"]["sha256"] == sha256_file(tmp_path / name / "1" / "model.onnx"), run
        batches.add(json.dumps(batch))
    assert len(batches) == 1, (batches, run)
    # The interruption says which models the repository holds: the new ones (batch 2:2:2) or the old ones.
    new = json.loads(batches.pop())["max"] == 2
    if proc.returncode == 130:
        said = err.decode().strip().splitlines()[-1]
        assert ("holds the new models se/1, se_fp16/1" in said) == new, run
        assert ("keeps its previous models" in said) == (not new), run
    assert not [p for p in tmp_path.rglob(".*")], ([str(p) for p in tmp_path.rglob(".*")], run)


def test_kill_during_export_never_leaves_a_half_written_model(tmp_path):
    """SIGKILL at several moments of `export --force`: the model on disk is always whole and matches its
    manifest (either the old one or the new one)."""
    base = [sys.executable, "-m", "deploykit", "export", "--block", "se", "--out", str(tmp_path), *SMALL,
            "--precision", "fp32"]
    subprocess.run(base, check=True, capture_output=True, timeout=300)
    for delay in (1.0, 3.0, 5.0):
        proc = subprocess.Popen(base + ["--force"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        model = tmp_path / "se" / "1" / "model.onnx"
        manifest = json.loads((tmp_path / "se" / "1" / "deploykit.json").read_text())
        assert manifest["onnx"]["sha256"] == sha256_file(model)
        onnx.checker.check_model(str(model), full_check=True)


# --- the shipped configs, as users run them -------------------------------------------------------------

# Block configs export here at their shipped settings; network configs (224x224) are exported at small
# resolutions in tests/networks and at full size by benchmarks/networks.py.
SHIPPED = sorted(p.stem for p in (REPO / "export_configs").glob("*.yaml") if load_config(p).source.block)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_exports_fp32_and_fp16(cli, tmp_path, name):
    result = cli("export", "--config", str(REPO / "export_configs" / f"{name}.yaml"), "--out", str(tmp_path), "--json")
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr
    out = result.json()
    assert out["parity"]["fp32"]["passed"] and out["parity"]["fp16"]["passed"]
    for artifact in out["artifacts"]:
        assert os.path.isfile(artifact["onnx"]) and os.path.isfile(artifact["config_pbtxt"])


def test_fp16_keep_list_keeps_overflowing_tensors_in_fp32(tmp_path):
    """x*1e5/1e5 overflows fp16 in the middle: the range scan keeps those nodes in fp32, so the tensor's
    declared type (what TensorRT's strongly typed networks hold it in) is float32; without it, float16."""
    from onnx import TensorProto, helper

    from deploykit.backends.ort import OrtRunner
    from deploykit.export.fp16 import convert_to_fp16

    big = onnx.numpy_helper.from_array(np.array(1e5, dtype=np.float32), "big")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "big"], ["scaled"], name="scale_up"),
         helper.make_node("Relu", ["scaled"], ["r"], name="relu"),
         helper.make_node("Div", ["r", "big"], ["y"], name="scale_down")],
        "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])], [big])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32) * 3
    keep = stages._fp16_keep_nodes(model, tmp_path, {"x": x})
    assert {"scale_up", "relu"} <= set(keep)

    def declared_types(m, op_type):
        """Declared element types of the outputs of every `op_type` node."""
        inferred = onnx.shape_inference.infer_shapes(m)
        types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output)}
        return {types[n.output[0]] for n in inferred.graph.node if n.op_type == op_type}

    kept, naive = convert_to_fp16(model, fp32_nodes=keep), convert_to_fp16(model)
    onnx.checker.check_model(kept, full_check=True)
    assert kept.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT, "fp32 I/O kept"
    assert declared_types(kept, "Mul") == declared_types(kept, "Relu") == {TensorProto.FLOAT}
    assert declared_types(naive, "Mul") == {TensorProto.FLOAT16}
    # 1e5 * |x| > 65504 for |x| > 0.66: in fp16 that tensor is Inf.
    assert not np.isfinite(x.astype(np.float16) * np.float16(65504)).all()
    with OrtRunner(kept.SerializeToString()) as runner:
        np.testing.assert_allclose(runner.infer({"x": x})["y"], np.maximum(x, 0), rtol=1e-3, atol=1e-3)


def test_fp16_conversion_failure_still_writes_the_verified_fp32_model(cli, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated converter failure")

    monkeypatch.setattr("deploykit.export.fp16.convert_to_fp16", broken)
    result = cli("export", "--block", "se", "--out", str(tmp_path), "--json", *SMALL, "--precision", "fp32",
                 "--precision", "fp16")
    out = result.json()
    assert result.exit_code == 1 and out["passed"] is False
    assert [a["precision"] for a in out["artifacts"]] == ["fp32"]
    assert not (tmp_path / "se_fp16").exists()
    stage = next(s for s in out["stages"] if s["name"] == "fp16")
    assert stage["status"] == "failed" and "simulated converter failure" in stage["detail"]
