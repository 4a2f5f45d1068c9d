"""The dynamo exporter's graphs at sizes other than the example's: modules torch.onnx lowers with the example's
size baked in are exported through their exact definition, and the user's model is left as it was."""

import numpy as np
import torch
from torch import nn

from deploykit.export.exporters import export_onnx


class StripPools(nn.Module):
    """Coordinate Attention's pooling (Hou et al., CVPR 2021): a mean over W per row, and over H per column."""

    def __init__(self):
        super().__init__()
        self.pool_h, self.pool_w = nn.AdaptiveAvgPool2d((None, 1)), nn.AdaptiveAvgPool2d((1, None))

    def forward(self, x):
        return self.pool_h(x) * self.pool_w(x)


def test_strip_pools_are_right_at_every_dynamic_size(tmp_path):
    import onnxruntime as ort

    model = StripPools().eval()
    path = tmp_path / "strip.onnx"
    export_onnx(model, (torch.randn(1, 4, 16, 16),), path, exporter="dynamo", input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: ("batch", 1, 4), 2: ("h", 8, 32), 3: ("w", 8, 32)}})
    assert isinstance(model.pool_h, nn.AdaptiveAvgPool2d) and isinstance(model.pool_w, nn.AdaptiveAvgPool2d)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for h, w in ((16, 16), (8, 8), (9, 13), (32, 24)):
        x = np.random.default_rng(h * w).standard_normal((2, 4, h, w)).astype(np.float32)
        # The definition, in numpy: row means times column means.
        want = x.mean(3, keepdims=True) * x.mean(2, keepdims=True)
        np.testing.assert_allclose(session.run(None, {"x": x})[0], want, atol=1e-5, rtol=1e-5)
