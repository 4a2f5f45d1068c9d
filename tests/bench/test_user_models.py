"""`deploykit bench` on user models exported with `deploykit export --module`: several named inputs (one of them
int64 class labels), a dict of outputs. Every input is fed by name in its dtype from the sidecar's input specs,
the PyTorch rows rebuild the reference from the sidecar's recipe (or --module/--args/--weights), and every row's
outputs are checked against it before timing. Small sizes, a few calls; no timing assertions."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.user_models import BY_NAME

ROOT = Path(__file__).resolve().parents[2]
FAST = ("--warmup", "1", "--iters", "2", "--threads", "1")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """class_conditional (image + int64 labels) and cbam_detector (dict of three outputs), fp32, from a
    checkpoint, exported through the CLI as a user would."""
    root = tmp_path_factory.mktemp("bench_user")
    paths = {}
    for i, name in enumerate(("class_conditional", "cbam_detector")):
        entry = BY_NAME[name]
        torch.manual_seed(10 + i)
        ckpt = root / f"{name}.pth"
        torch.save(entry.build().state_dict(), ckpt)
        result = subprocess.run([sys.executable, "-m", "deploykit", "export", "--module", entry.module_arg,
                                 *entry.input_args(), "--weights", str(ckpt), "--precision", "fp32",
                                 "--out", str(root / "repo"), "--name", name], capture_output=True, text=True,
                                cwd=ROOT)
        assert result.returncode == 0, result.stderr[-2000:]
        paths[name] = (root / "repo" / name / "1" / "model.onnx", ckpt)
    return paths


def _ok_rows(data):
    return {r["backend"]: r for r in data["rows"]}


def test_int64_two_input_model_is_fed_by_name_and_checked(cli, exported):
    onnx_path, _ = exported["class_conditional"]
    result = cli("bench", str(onnx_path), "--backends", "torch,ort,openvino", "--batch", "1,3", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["passed"] is True
    assert data["source"]["input"] == {"image": [3, 32, 32], "labels": []}
    rows = data["rows"]
    assert {(r["backend"], r["batch"]) for r in rows} >= {(b, n) for b in ("torch-eager-reference", "torch-eager-safe",
                                                                           "onnxruntime-cpu", "openvino-cpu")
                                                          for n in (1, 3)}
    for row in rows:
        assert row["status"] == "ok", row
        assert row["outputs_checked"] is True and row["max_abs_err"] < 1e-4


def test_named_feed_uses_each_inputs_dtype_and_recorded_range(exported):
    from deploykit.bench.source import from_onnx

    onnx_path, _ = exported["class_conditional"]
    source = from_onnx(onnx_path, batches=(6,))   # past the exported batch range: ONNX's batch dim is unbounded
    try:
        x = source.make_input(6, seed=3)
        assert list(x) == ["image", "labels"]   # forward's order
        assert x["image"].dtype == np.float32 and x["image"].shape == (6, 3, 32, 32)
        assert x["labels"].dtype == np.int64 and x["labels"].shape == (6,)
        assert x["labels"].min() >= 0 and x["labels"].max() < 5   # the class count the export recorded
        # The expected outputs are the user's own model run on the same named inputs (independent of bench).
        entry = BY_NAME["class_conditional"]
        model = entry.build()
        model.load_state_dict(torch.load(exported["class_conditional"][1], weights_only=True))
        with torch.inference_mode():
            want = model.eval()(torch.from_numpy(x["image"]), torch.from_numpy(x["labels"]))
        got = source.expected(x)
        np.testing.assert_allclose(next(iter(got.values())), want.numpy(), atol=1e-5, rtol=1e-5)
    finally:
        source.close()


def test_dict_outputs_are_paired_by_name(cli, exported):
    onnx_path, _ = exported["cbam_detector"]
    result = cli("bench", str(onnx_path), "--backends", "torch,ort", "--batch", "2", "--size", "32x32", *FAST,
                 "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["source"]["input"] == [3, 32, 32]   # one float NCHW input: the image path
    assert {r["backend"] for r in data["rows"]} == {"torch-eager-reference", "torch-eager-safe", "onnxruntime-cpu"}
    assert all(r["status"] == "ok" and r["outputs_checked"] for r in data["rows"]), data["rows"]


def test_module_and_weights_flags_replace_the_sidecars_reference(cli, exported, tmp_path):
    onnx_path, _ = exported["class_conditional"]
    entry = BY_NAME["class_conditional"]
    torch.manual_seed(99)
    other = tmp_path / "other.pth"
    torch.save(entry.build().state_dict(), other)
    # Other weights: the PyTorch reference is no longer the exported model, so the ONNX row must fail the check.
    result = cli("bench", str(onnx_path), "--backends", "ort", "--batch", "2", *FAST, "--json",
                 "--module", str(entry.path) + ":" + entry.factory, "--weights", str(other))
    assert result.exit_code == 1
    row = _ok_rows(result.json())["onnxruntime-cpu"]
    assert row["status"] == "failed" and "outputs differ from PyTorch" in row["reason"]
    # The right checkpoint through the same flags passes.
    result = cli("bench", str(onnx_path), "--backends", "ort", "--batch", "2", *FAST, "--json",
                 "--module", str(entry.path) + ":" + entry.factory, "--weights", str(exported["class_conditional"][1]))
    assert result.exit_code == 0, result.stderr
    assert _ok_rows(result.json())["onnxruntime-cpu"]["status"] == "ok"


def test_multi_input_model_without_its_sidecar_is_refused(cli, exported, tmp_path):
    onnx_path, _ = exported["class_conditional"]
    alone = tmp_path / "model.onnx"
    shutil.copy(onnx_path, alone)
    result = cli("bench", str(alone), "--backends", "ort", "--batch", "1", *FAST)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and "input_specs" in result.stderr and "Traceback" not in result.stderr


def test_size_outside_the_exported_range_is_refused(cli, exported):
    onnx_path, _ = exported["class_conditional"]
    result = cli("bench", str(onnx_path), "--backends", "ort", "--batch", "1", "--size", "128x128", *FAST)
    assert result.exit_code == 2 and "takes H, W in 32..64 x 32..64" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
