"""OrtRunner's session options: the `spinning` switch that serve and tune turn off."""

from __future__ import annotations

import numpy as np
import pytest

from deploykit.backends.ort import OrtRunner
from tests.backends.conftest import torch_reference


@pytest.mark.parametrize("spinning", [True, False])
def test_spinning_switch_sets_the_session_option_and_keeps_the_numbers(tiny_onnx, spinning):
    path, w, b = tiny_onnx
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    runner = OrtRunner(path, threads=1, spinning=spinning).activate()
    try:
        entries = runner.session.get_session_options().get_session_config_entry
        if spinning:   # ONNX Runtime's default: the entry is not written at all
            with pytest.raises(Exception):
                entries("session.intra_op.allow_spinning")
        else:
            assert entries("session.intra_op.allow_spinning") == "0"
        out = runner.infer({"input": x})["output"]
    finally:
        runner.deactivate()
    np.testing.assert_allclose(out, torch_reference(x, w, b), rtol=1e-5, atol=1e-5)
