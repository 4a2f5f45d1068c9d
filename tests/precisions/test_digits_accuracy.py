"""Accuracy, not only closeness: a small CNN with SE and CBAM blocks trained on scikit-learn's digits keeps
its held-out top-1 accuracy within 1 point of fp32 as an INT8 (CPU Q/DQ, calibrated on training images)
artifact and as a bf16 (OpenVINO) artifact, both made by the export's precision step."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="needs scikit-learn (test extra)")
pytest.importorskip("openvino", reason="needs openvino: pip install 'deploykit[openvino]'")

pytestmark = pytest.mark.slow


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None]   # N x 1 x 8 x 8 in [0, 1]
    return train_test_split(x, data.target, test_size=0.3, random_state=0, stratify=data.target)


def _network():
    import torch.nn as nn

    from deploykit.blocks import create

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        create("se", "safe", channels=16, reduction=4),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        create("cbam", "safe", gate_channels=32, reduction_ratio=8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def _train(model, x, y, epochs=12):
    import torch

    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def _top1(logits, y) -> float:
    return float((np.argmax(logits, axis=1) == y).mean())


def test_int8_and_bf16_keep_digits_accuracy_within_one_point(tmp_path):
    import onnx
    import torch

    from deploykit.backends.openvino import OpenVinoRunner
    from deploykit.backends.ort import OrtRunner
    from deploykit.export.exporters import export_with_fallback
    from deploykit.precisions import make_precision

    x_train, x_test, y_train, y_test = _digits()
    torch.manual_seed(0)   # the initial weights too: the run is the same every time
    model = _train(_network(), x_train, y_train, epochs=15)
    with torch.inference_mode():
        fp32_logits = model(torch.from_numpy(x_test)).numpy()
    fp32_acc = _top1(fp32_logits, y_test)
    assert fp32_acc >= 0.9, f"the network did not learn digits (top-1 {fp32_acc:.3f})"

    path = tmp_path / "digits.onnx"
    outcome = export_with_fallback(model, (torch.from_numpy(x_test[:4]),), path, input_names=["input"],
                                   output_names=["output"], dynamic_axes={"input": {0: ("batch", 1, 1024)}})
    assert outcome.exporter is not None, outcome
    fp32_onnx = onnx.load(str(path))
    with OrtRunner(str(path)) as runner:
        np.testing.assert_allclose(runner.infer({"input": x_test})["output"], fp32_logits, rtol=1e-4, atol=1e-4)

    verify = {(64, 1, 8, 8): x_test[:64], (7, 1, 8, 8): x_test[64:71]}
    expected = {s: {"output": fp32_logits[:64] if s[0] == 64 else fp32_logits[64:71]} for s in verify}
    np.savez(tmp_path / "cal.npz", input=x_train[:256])   # real training images calibrate the INT8 ranges

    int8 = make_precision("int8", fp32_onnx, input_name="input", inputs=verify, expected=expected,
                          work=tmp_path / "int8", calibration=tmp_path / "cal.npz")
    assert int8, int8.report.as_dict()
    onnx.save(int8.model, str(tmp_path / "int8.onnx"))
    with OrtRunner(str(tmp_path / "int8.onnx")) as runner:
        int8_acc = _top1(runner.infer({"input": x_test})["output"], y_test)
    with OpenVinoRunner(tmp_path / "int8.onnx", precision="f32") as runner:   # the same graph on OpenVINO
        int8_ov_acc = _top1(runner.infer({"input": x_test})["output"], y_test)

    bf16 = make_precision("bf16", fp32_onnx, input_name="input", inputs=verify, expected=expected,
                          work=tmp_path / "bf16")
    assert bf16, bf16.report.as_dict()
    with OpenVinoRunner(path, precision="bf16") as runner:
        bf16_acc = _top1(runner.infer({"input": x_test})["output"], y_test)

    accuracies = {"fp32": fp32_acc, "int8 ort": int8_acc, "int8 openvino": int8_ov_acc, "bf16 openvino": bf16_acc}
    print("digits top-1 (held-out 30%):", {k: round(v, 4) for k, v in accuracies.items()})
    for name, acc in accuracies.items():
        assert acc >= fp32_acc - 0.01, f"{name} top-1 {acc:.4f} vs fp32 {fp32_acc:.4f}"
