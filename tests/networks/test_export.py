"""Every network through the export pipeline: dynamo ONNX with a dynamic batch, no shape computation, fp32 and
fp16 parity with PyTorch within the config's tolerance, and a batch size the pipeline did not verify."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from deploykit import networks
from deploykit.backends.ort import OrtRunner
from deploykit.export.config import parse_config
from deploykit.export.pipeline import run_export
from deploykit.onnx_utils.graph import count_shape_nodes
from deploykit.sources import build_source
from tests.networks.small import SMALL_ARGS, small_size

# The largest graphs (HA-CNN's twelve transformer crops, EPSANet's four-branch PSA, SMT-S/B) take longest.
HEAVY = {"ha_cnn", "epsanet50_small", "smt_s", "smt_b"}
PARAMS = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in networks.names()]


def small_config(name: str, **extra):
    h, w = small_size(name)
    data = {"source": {"network": name, "args": SMALL_ARGS[name]}, "precisions": ["fp32", "fp16"],
            "input": {"channels": 3, "batch": {"min": 1, "opt": 2, "max": 4}, "height": {"opt": h},
                      "width": {"opt": w}},
            "exporters": ["dynamo"], **extra}
    return parse_config(data, f"small {name}")


@pytest.mark.parametrize("name", PARAMS)
def test_network_exports_with_parity_and_no_shape_computation(name, tmp_path):
    config = small_config(name)
    status = run_export(config, tmp_path)
    assert status.passed, status.error
    assert status.exporter == "dynamo"
    assert set(status.parity) == {"fp32", "fp16"} and all(bool(p) for p in status.parity.values())
    by_precision = {a.precision: a for a in status.artifacts}
    for precision, artifact in by_precision.items():
        model = onnx.load(str(artifact.onnx))
        assert count_shape_nodes(model) == 0, precision
        batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.dim_value, "the batch must stay dynamic"
        manifest = json.loads(artifact.manifest.read_text())
        assert manifest["onnx"]["shape_computation_nodes"] == 0
        assert manifest["source"]["network"] == name

    # A batch size the pipeline did not verify (it checks 1, 2 and 4), against the same seeded reference.
    reference = build_source(config).reference
    h, w = small_size(name)
    x = np.random.default_rng(7).standard_normal((3, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x)).numpy()
    tolerances = {"fp32": (1e-4, 1e-4), "fp16": (2e-2, 2e-2)}
    for precision, artifact in by_precision.items():
        with OrtRunner(artifact.onnx) as runner:
            actual = runner.infer({"input": x})["output"]
        atol, rtol = tolerances[precision]
        assert actual.shape == expected.shape
        # Polygraphy semantics, as the pipeline: an element fails when both errors exceed their tolerance.
        bad = (np.abs(actual - expected) > atol) & (np.abs(actual - expected) > rtol * np.abs(expected))
        assert not bad.any(), f"{precision}: max abs {np.abs(actual - expected).max():.3g}"


def test_reference_variant_also_exports_and_matches(tmp_path):
    """The authors' computation itself goes through the pipeline (dynamo copes with its shape reads)."""
    config = small_config("resnet18_cbam", precisions=["fp32"])
    data = config.model_dump(mode="json")
    data["source"]["variant"] = "reference"
    status = run_export(parse_config(data), tmp_path)
    assert status.passed, status.error


def test_fixed_size_network_refuses_other_sizes(tmp_path):
    from deploykit.errors import UserInputError

    data = small_config("ha_cnn").model_dump(mode="json")
    data["input"]["height"] = {"opt": 128}
    with pytest.raises(UserInputError, match="only accepts 160x64"):
        run_export(parse_config(data), tmp_path)
