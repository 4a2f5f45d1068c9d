"""`deploykit.export(model, inputs=...)` on a live module: the whole verified pipeline from Python."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

import deploykit
from tests.export.test_sources import TWO_INPUTS


def _model(tmp_path):
    import importlib.util

    path = tmp_path / "live_net.py"
    path.write_text(TWO_INPUTS)
    spec = importlib.util.spec_from_file_location("live_net", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.ImageMaskIds(width=8)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return model


def test_export_a_live_module(tmp_path):
    model = _model(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    status = deploykit.export(
        model, {"image": torch.randn(2, 3, 16, 16), "mask": torch.randn(2, 1, 16, 16), "ids": "2x5:int64:0..5"},
        dynamic={"image": {0: (1, 2, 4), 2: (8, 16, 24), 3: (8, 16, 24)}, "mask": {0: (1, 2, 4), 2: (8, 16, 24),
                 3: (8, 16, 24)}, "ids": [0]}, name="live", out=tmp_path / "repo")
    assert status.passed, status.error
    assert {a.precision for a in status.artifacts} == {"fp32", "fp16"}
    # The caller's module is neither converted nor re-initialised, and its weights are what was exported.
    assert type(model.se).__name__ == "SELayer" and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    weights = status.as_dict()["weights"]
    assert not weights["seeded_random"]
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    assert weights["state_dict_sha256"] == digest.hexdigest()

    from deploykit.backends.ort import OrtRunner

    rng = np.random.default_rng(5)
    feed = {"image": rng.standard_normal((3, 3, 18, 14), dtype=np.float32),
            "mask": rng.standard_normal((3, 1, 18, 14), dtype=np.float32), "ids": rng.integers(0, 5, (3, 5))}
    model.eval()
    with torch.no_grad():
        out = model(*(torch.from_numpy(feed[k]) for k in ("image", "mask", "ids")))
    with OrtRunner(str(tmp_path / "repo" / "live" / "1" / "model.onnx")) as runner:
        actual = runner.infer(feed)
    np.testing.assert_allclose(actual["seg"], out["seg"].numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(actual["aux.1"], out["aux"][1].numpy())


def test_unusable_inputs_raise_before_anything_is_written(tmp_path):
    import pytest

    from deploykit.errors import UserInputError

    model = _model(tmp_path)
    with pytest.raises(UserInputError, match="do not match"):
        deploykit.export(model, torch.randn(1, 3, 8, 8), out=tmp_path / "repo")
    with pytest.raises(UserInputError, match="torch.nn.Module"):
        deploykit.export(lambda x: x, torch.randn(1, 3), out=tmp_path / "repo")
    assert not list((tmp_path / "repo").rglob("*.onnx")) if (tmp_path / "repo").exists() else True
