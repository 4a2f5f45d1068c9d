"""Every corpus model through the user's path: `deploykit export --module FILE:FACTORY --input ... --weights CK`
-> ONNX fp32 and fp16 -> `deploykit validate` -> `deploykit serve` queried with a Triton client, outputs equal to
the model's own PyTorch forward with the same checkpoint (the model code itself, not deploykit's reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.user_models import CORPUS, UserModel

pytestmark = pytest.mark.slow

# fp32 graphs must match PyTorch tightly; fp16 within the export's default fp16 tolerance.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}


def trained(entry: UserModel, seed: int) -> torch.nn.Module:
    """The entry's model with non-trivial weights and normalisation statistics, as after training."""
    torch.manual_seed(seed)
    model = entry.build()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 1.5)
                elif name.endswith("running_mean"):
                    tensor.uniform_(-0.2, 0.2)
                elif name.endswith("weight") and tensor.dim() == 1:
                    tensor.uniform_(0.5, 1.5)
    return model.eval()


def flat(outputs) -> list[np.ndarray]:
    if isinstance(outputs, dict):
        return [v.numpy() for v in outputs.values()]
    return [o.numpy() for o in (outputs if isinstance(outputs, (tuple, list)) else (outputs,))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Every corpus model exported (fp32 + fp16) from a checkpoint, through the CLI in a subprocess."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("user_models")
    repo, done = root / "repo", {}
    for i, entry in enumerate(CORPUS):
        ckpt = root / f"{entry.name}.pth"
        torch.save({"model_ema": trained(entry, i).state_dict()}, ckpt)
        result = subprocess.run([sys.executable, "-m", "deploykit", "export", "--module", entry.module_arg,
                                 *entry.input_args(), "--weights", str(ckpt), "--name", entry.name,
                                 "--out", str(repo), "--json"], capture_output=True, text=True)
        done[entry.name] = (result, ckpt)
    return repo, done


@pytest.mark.parametrize("entry", CORPUS, ids=lambda e: e.name)
def test_export_validate_serve(entry, exported, tmp_path):
    import subprocess
    import sys

    repo, done = exported
    result, ckpt = done[entry.name]
    assert result.returncode == 0, result.stderr[-2000:]
    status = json.loads(result.stdout)
    assert status["passed"] and status["weights"]["path"] == str(ckpt.resolve())
    assert status["weights"]["nested_key"] == "model_ema"
    swapped = sorted(c["block"] for c in status["conversion"]["replaced"])
    assert swapped == sorted(entry.swapped)
    assert sorted(c["block"] for c in status["conversion"]["not_replaced"]) == sorted(entry.kept)

    for name in (entry.name, f"{entry.name}_fp16"):
        check = subprocess.run([sys.executable, "-m", "deploykit", "validate", str(repo / name / "1" / "model.onnx"),
                                "--json", "--trt", "none"], capture_output=True, text=True)
        report = json.loads(check.stdout)
        assert check.returncode == 0 and report["passed"], [c for c in report["checks"] if not c["passed"]]
        assert any(c["name"].startswith("parity[") for c in report["checks"]), "compared with PyTorch"

    pytest.importorskip("fastapi")
    httpclient = pytest.importorskip("tritonclient.http")
    from tests.serve.helpers import LiveServer

    model = trained(entry, CORPUS.index(entry))
    inputs = entry.example_inputs(seed=11)
    with torch.no_grad():
        expected = flat(model(*inputs))
    with LiveServer(repo, log_dir=tmp_path) as server:
        client = httpclient.InferenceServerClient(server.address, network_timeout=60)
        try:
            for name, precision in ((entry.name, "fp32"), (f"{entry.name}_fp16", "fp16")):
                requests = []
                for spec, x in zip(entry.inputs, inputs):
                    data = x.numpy()
                    req = httpclient.InferInput(spec.name, list(data.shape), "INT64" if spec.dtype == "int64" else "FP32")
                    req.set_data_from_numpy(data)
                    requests.append(req)
                response = client.infer(name, requests)
                outputs = [o["name"] for o in response.get_response()["outputs"]]
                assert sorted(outputs) == sorted(n for n in _onnx_outputs(repo / name))
                for out_name, want in zip(_onnx_outputs(repo / name), expected):
                    got = response.as_numpy(out_name)
                    tol = TOLERANCE[precision]
                    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), atol=tol, rtol=tol,
                                               err_msg=f"{name}:{out_name}")
        finally:
            client.close()


def _onnx_outputs(model_dir) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(str(model_dir / "1" / "model.onnx"), load_external_data=False).graph.output]
