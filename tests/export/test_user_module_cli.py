"""`deploykit export --module/--program` end to end, and every way a user model can be unusable: one `error:`
line, exit 2, nothing written, the user's traceback only with --debug."""

from __future__ import annotations

import json
import os
import textwrap

import numpy as np
import onnx
import pytest
import torch

from tests.export.test_sources import TWO_INPUTS

FLAGS = ("--input", "image:2x3x16x16", "--input", "mask:2x1x16x16", "--input", "ids:2x5:int64:0..5",
         "--dynamic", "image:0,2=8:16:24,3=8:16:24", "--dynamic", "mask:0,2=8:16:24,3=8:16:24", "--dynamic", "ids:0")


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_net.py"
    path.write_text(TWO_INPUTS)
    return path


def _torch_model(path, **kwargs):
    import importlib.util

    spec = importlib.util.spec_from_file_location("user_net_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ImageMaskIds(**kwargs)


def test_module_export_multi_io_int64_dict_outputs(cli, tmp_path, model_file):
    """Three inputs (one int64), dict output with a nested tuple: ONNX fp32 and fp16 equal PyTorch on a size the
    pipeline did not verify, with the checkpoint's weights, and the Triton config and sidecar say so."""
    trained = _torch_model(model_file, width=8)
    torch.manual_seed(1)
    for p in trained.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ckpt = tmp_path / "trained.pth"
    torch.save({"state_dict": trained.state_dict()}, ckpt)
    out = tmp_path / "repo"
    result = cli("export", "--module", f"{model_file}:ImageMaskIds", "--args", '{"width": 8}', "--weights", str(ckpt),
                 *FLAGS, "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    status = result.json()
    assert status["passed"] and status["weights"]["path"] == str(ckpt.resolve())
    assert [c["block"] for c in status["conversion"]["replaced"]] == ["se"]

    graph = onnx.load(str(out / "imagemaskids" / "1" / "model.onnx"))
    assert [i.name for i in graph.graph.input] == ["image", "mask", "ids"]
    assert [o.name for o in graph.graph.output] == ["seg", "aux.0", "aux.1"]
    pbtxt = (out / "imagemaskids" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in pbtxt and pbtxt.count("TYPE_INT64") == 2   # ids in, aux.1 out
    manifest = json.loads((out / "imagemaskids" / "1" / "deploykit.json").read_text())
    assert manifest["profile"]["ids"] == {"min": [1, 5], "opt": [2, 5], "max": [4, 5]}
    assert manifest["source"]["rebuild"]["weights"]["sha256"] == status["weights"]["sha256"]
    assert len(manifest["verification"]["points"]) == 4
    report = (out / "imagemaskids" / "export_report.md").read_text()
    assert str(ckpt.resolve()) in report and "Export-safe rewrite" in report and "SEEDED" not in report

    rng = np.random.default_rng(42)
    feed = {"image": rng.standard_normal((3, 3, 20, 22), dtype=np.float32),
            "mask": rng.standard_normal((3, 1, 20, 22), dtype=np.float32),
            "ids": rng.integers(0, 5, (3, 5)).astype(np.int64)}
    trained.eval()
    with torch.no_grad():
        expected = trained(*(torch.from_numpy(feed[k]) for k in ("image", "mask", "ids")))
    expected = {"seg": expected["seg"].numpy(), "aux.0": expected["aux"][0].numpy(), "aux.1": expected["aux"][1].numpy()}
    from deploykit.backends.ort import OrtRunner

    for name, atol in (("imagemaskids", 1e-4), ("imagemaskids_fp16", 3e-2)):
        with OrtRunner(str(out / name / "1" / "model.onnx")) as runner:
            actual = runner.infer(feed)
        np.testing.assert_array_equal(actual["aux.1"], expected["aux.1"])
        for key in ("seg", "aux.0"):
            np.testing.assert_allclose(actual[key], expected[key], atol=atol, rtol=atol)


def test_seeded_random_weights_are_said_loudly(cli, tmp_path, model_file):
    out = tmp_path / "repo"
    result = cli("export", "--module", f"{model_file}:ImageMaskIds", "--input", "image:1x3x8x8",
                 "--input", "mask:1x1x8x8", "--input", "ids:1x2:int64", "--precision", "fp32", "--no-rewrite",
                 "--name", "plain", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert "SEEDED RANDOM" in result.stdout
    report = (out / "plain" / "export_report.md").read_text()
    assert "SEEDED RANDOM WEIGHTS" in report and "Export-safe rewrite" not in report
    pbtxt = (out / "plain" / "config.pbtxt").read_text()
    assert "max_batch_size: 0" in pbtxt and "dims: [ 1, 3, 8, 8 ]" in pbtxt


def test_config_source_paths_resolve_against_the_config_file(cli, tmp_path, model_file, monkeypatch):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "net.py").write_text(model_file.read_text())
    (folder / "export.yaml").write_text(textwrap.dedent("""
        name: from_config
        source: {module: net.py:ImageMaskIds, args: {width: 4}}
        inputs:
          - {name: image, shape: [1, 3, 8, 8]}
          - {name: mask, shape: [1, 1, 8, 8]}
          - {name: ids, dtype: int64, shape: [1, 3], high: 5}
        precisions: [fp32]
    """))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli("export", "--config", str(folder / "export.yaml"), "--out", "repo", "--json")
    assert result.exit_code == 0, result.stderr
    assert (elsewhere / "repo" / "from_config" / "1" / "model.onnx").is_file()


def test_saved_program_exports_without_user_code(cli, tmp_path, model_file):
    model = _torch_model(model_file, width=8).eval()
    batch = torch.export.Dim("batch", min=1, max=4)
    args = (torch.randn(2, 3, 8, 8), torch.randn(2, 1, 8, 8), torch.randint(0, 5, (2, 3)))
    program = torch.export.export(model, args, dynamic_shapes=({0: batch}, {0: batch}, {0: batch}))
    path = tmp_path / "net.pt2"
    torch.export.save(program, str(path))
    model_file.unlink()   # no user code at export time
    out = tmp_path / "repo"
    result = cli("export", "--program", str(path), "--precision", "fp32", "--out", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    status = result.json()
    assert status["passed"] and status["weights"]["path"] == str(path.resolve())
    graph = onnx.load(str(out / "net" / "1" / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["seg", "aux.0", "aux.1"]
    from deploykit.backends.ort import OrtRunner

    x = (torch.randn(3, 3, 8, 8), torch.randn(3, 1, 8, 8), torch.randint(0, 5, (3, 3)))
    with torch.no_grad():
        expected = model(*x)
    with OrtRunner(str(out / "net" / "1" / "model.onnx")) as runner:
        actual = runner.infer({n: t.numpy() for n, t in zip(("image", "mask", "ids"), x)})
    np.testing.assert_allclose(actual["seg"], expected["seg"].numpy(), atol=1e-4, rtol=1e-4)


BROKEN = {
    "raises_on_import.py": "raise RuntimeError('cannot find CUDA device 7')\n",
    "raises_on_build.py": "import torch\nclass Net(torch.nn.Module):\n    def __init__(self):\n"
                          "        super().__init__()\n        raise ValueError('depth must be one of 18, 34, 50')\n",
    "no_module.py": "def Net():\n    return {'not': 'a module'}\n",
    "dict_keys.py": "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return {0: x, 1: x * 2}\n",
    "one_input.py": "import torch\nclass Net(torch.nn.Module):\n    def forward(self, x):\n        return x.relu()\n",
}


@pytest.mark.parametrize("file, callable_, extra, message", [
    ("raises_on_import.py", "Net", (), "importing '.*raises_on_import.py' raised RuntimeError: cannot find CUDA device 7"),
    ("raises_on_build.py", "Net", (), "constructing '.*' raised ValueError: depth must be one of 18, 34, 50"),
    ("no_module.py", "Net", (), "returned a dict, not a torch.nn.Module"),
    ("one_input.py", "Missing", (), "has no callable 'Missing'.*callables there:"),
    ("absent.py", "Net", (), "model file '.*absent.py' does not exist"),
    ("dict_keys.py", "Net", (), "dict with non-string keys"),
    ("one_input.py", "Net", ("--input", "y:1x3"), r"inputs \['x', 'y'\] do not match Net.forward\(x\)"),
    ("one_input.py", "Net", ("--args", "[1, 2]"), "--args must be a mapping"),
])
def test_unusable_user_models_fail_in_one_line(cli, tmp_path, file, callable_, extra, message):
    import re

    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "repo"
    result = cli("export", "--module", f"{tmp_path / file}:{callable_}", "--input", "x:1x3", *extra, "--out", str(out))
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr   # progress lines aside, one error
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.rglob("*.onnx"))


def test_debug_shows_the_users_traceback(cli, tmp_path, monkeypatch):
    (tmp_path / "raises_on_build.py").write_text(BROKEN["raises_on_build.py"])
    args = ("export", "--module", f"{tmp_path / 'raises_on_build.py'}:Net", "--input", "x:1x3", "--out", str(tmp_path))
    result = cli(*args, "--debug")
    assert result.exit_code == 2 and "Traceback" in result.stderr and "raises_on_build.py" in result.stderr
    monkeypatch.delenv("DEPLOYKIT_DEBUG", raising=False)
    assert "Traceback" not in cli(*args).stderr
    monkeypatch.setenv("DEPLOYKIT_DEBUG", "1")
    assert "Traceback" in cli(*args).stderr


def test_incompatible_program_is_refused(cli, tmp_path):
    bad = tmp_path / "other_torch.pt2"
    bad.write_bytes(b"PK\x03\x04 not a program written by this torch")
    result = cli("export", "--program", str(bad), "--out", str(tmp_path / "repo"))
    assert result.exit_code == 2
    assert "cannot load saved program" in result.stderr and "torch.export.save under torch" in result.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("*.onnx"))


@pytest.mark.parametrize("args, message", [
    (("--module", "x.py:Net", "--block", "se"), "exclude"),
    (("--module", "x.py:Net"), "--module needs its inputs"),
    (("--module", "x.py:Net", "--input", "x:1x3", "--size", "8x8"), "--size applies to registry"),
    (("--block", "se", "--input", "x:1x3"), "--inputs apply to a user model"),
])
def test_flag_mixups(cli, args, message):
    result = cli("export", *args)
    assert result.exit_code == 2 and message in result.stderr, result.stderr


def test_debug_env_is_not_left_set_by_default():
    assert os.environ.get("DEPLOYKIT_DEBUG") in (None, "", "0")


def test_readme_example_ships_and_exports(cli, tmp_path, monkeypatch):
    """The README's example: the model file and config in examples/, from another working directory."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    monkeypatch.chdir(tmp_path)
    result = cli("export", "--config", str(examples / "tiny_detector.yaml"), "--precision", "fp32", "--out", "repo",
                 "--json")
    assert result.exit_code == 0, result.stderr
    status = result.json()
    assert status["passed"] and [c["block"] for c in status["conversion"]["replaced"]] == ["cbam"]
    graph = onnx.load(str(tmp_path / "repo" / "tinydetector" / "1" / "model.onnx"))
    assert [o.name for o in graph.graph.output] == ["scores", "boxes"]


def test_validate_says_when_the_reference_weights_are_not_the_exported_ones(cli, tmp_path, model_file):
    trained = _torch_model(model_file, width=4)
    ckpt = tmp_path / "w.pth"
    torch.save(trained.state_dict(), ckpt)
    out = tmp_path / "repo"
    result = cli("export", "--module", f"{model_file}:ImageMaskIds", "--args", '{"width": 4}', "--weights", str(ckpt),
                 "--input", "image:1x3x8x8", "--input", "mask:1x1x8x8", "--input", "ids:1x2:int64",
                 "--precision", "fp32", "--name", "w", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    onnx_path = str(out / "w" / "1" / "model.onnx")
    good = cli("validate", onnx_path, "--json", "--trt", "none")
    assert good.exit_code == 0, good.stdout
    torch.nn.init.constant_(trained.head.weight, 0.5)
    torch.save(trained.state_dict(), ckpt)   # the checkpoint changes after the export
    changed = cli("validate", onnx_path, "--json", "--trt", "none")
    checks = {c["name"]: c for c in changed.json()["checks"]}
    assert changed.exit_code == 1 and not checks["reference_weights"]["passed"]
    assert "changed since the export" in checks["reference_weights"]["detail"]


def test_validate_rebuilds_the_reference_from_a_moved_model_file(cli, tmp_path, model_file):
    """A copied repository whose model file moved: validate takes --module/--args/--weights for the reference."""
    trained = _torch_model(model_file, width=4)
    ckpt = tmp_path / "w.pth"
    torch.save(trained.state_dict(), ckpt)
    out = tmp_path / "repo"
    result = cli("export", "--module", f"{model_file}:ImageMaskIds", "--args", '{"width": 4}', "--weights", str(ckpt),
                 "--input", "image:1x3x8x8", "--input", "mask:1x1x8x8", "--input", "ids:1x2:int64",
                 "--precision", "fp32", "--name", "moved", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    moved = tmp_path / "elsewhere" / "net_v2.py"
    moved.parent.mkdir()
    model_file.rename(moved)
    onnx_path = str(out / "moved" / "1" / "model.onnx")
    gone = cli("validate", onnx_path, "--trt", "none")
    assert gone.exit_code == 2 and "does not exist" in gone.stderr
    found = cli("validate", onnx_path, "--json", "--trt", "none", "--module", f"{moved}:ImageMaskIds",
                "--args", '{"width": 4}', "--weights", str(ckpt))
    report = found.json()
    assert found.exit_code == 0 and report["passed"], [c for c in report["checks"] if not c["passed"]]
    assert any(c["name"].startswith("parity[") and c["passed"] for c in report["checks"])
    # The same file with other arguments is another model: parity fails (keys no longer fit: unusable, exit 2).
    wrong = cli("validate", onnx_path, "--trt", "none", "--module", f"{moved}:ImageMaskIds", "--args", '{"width": 8}',
                "--weights", str(ckpt))
    assert wrong.exit_code == 2 and "checkpoint" in wrong.stderr


def test_bench_runs_a_single_input_user_model_from_its_sidecar(cli, tmp_path):
    """bench sizes a user model from its sidecar (no `input:` block) and checks its outputs against PyTorch."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    result = cli("export", "--config", str(examples / "tiny_detector.yaml"), "--precision", "fp32",
                 "--out", str(tmp_path / "repo"))
    assert result.exit_code == 0, result.stderr
    bench = cli("bench", str(tmp_path / "repo" / "tinydetector" / "1" / "model.onnx"), "--batch", "1", "--iters", "2",
                "--warmup", "1", "--json")
    assert bench.exit_code == 0, bench.stderr
    ort = [r for r in bench.json()["rows"] if r["status"] == "ok" and "onnx" in r["backend"].lower() + r["label"].lower()
           or r["label"].startswith("ORT")]
    assert ort and all(r["outputs_checked"] and r["max_abs_err"] < 1e-4 for r in ort)
