"""`deploykit build` of a user model with several inputs: one TensorRT profile range per input, taken from the
ranges the export verified (what `deploykit export --module ... --dynamic ...` wrote into the sidecar)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from deploykit.trt.onnx_info import summarize  # noqa: E402
from deploykit.trt.profiles import ShapeRange, read_sidecar, resolve  # noqa: E402


class MaskedStem(torch.nn.Module):
    """An image and a one-channel mask of the same size; the mask gates the features."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 8, 3, padding=1)

    def forward(self, image, mask):
        return torch.relu(self.conv(torch.cat([image, mask], dim=1))) * mask


def test_every_input_gets_its_verified_range(tmp_path):
    import deploykit

    dynamic = {"image": {0: (1, 2, 4), 2: (8, 16, 32), 3: (8, 16, 32)},
               "mask": {0: (1, 2, 4), 2: (8, 16, 32), 3: (8, 16, 32)}}
    status = deploykit.export(MaskedStem().eval(), inputs={"image": (2, 3, 16, 16), "mask": (2, 1, 16, 16)},
                              name="masked", out=tmp_path, precisions=("fp32",), dynamic=dynamic)
    assert status.passed, status.error
    onnx_path = status.artifacts[0].onnx
    sidecar, problem = read_sidecar(onnx_path)
    assert problem is None
    profiles, source = resolve(summarize(onnx_path).inputs, (), sidecar)
    assert source == "sidecar" and len(profiles) == 1
    assert profiles[0] == {
        "image": ShapeRange((1, 3, 8, 8), (2, 3, 16, 16), (4, 3, 32, 32)),
        "mask": ShapeRange((1, 1, 8, 8), (2, 1, 16, 16), (4, 1, 32, 32)),
    }
