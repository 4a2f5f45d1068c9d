"""A real Triton client (tritonclient, HTTP) against a live `deploykit serve`: metadata and inference.

Served outputs are compared with PyTorch: the reference module is rebuilt from the model's manifest and
run on the same input, independently of ONNX Runtime and the server.
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from tests.serve.helpers import make_input, needs_serve_extra

needs_serve_extra()
import tritonclient.http as httpclient  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402


def infer(client, model, x, *, binary_in=True, binary_out=True, version="", compression=None):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary_in)
    out = httpclient.InferRequestedOutput("output", binary_data=binary_out)
    result = client.infer(model, [inp], outputs=[out], model_version=version,
                          request_compression_algorithm=compression)
    return result


def test_health_and_server_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata()
    assert meta["name"] == "deploykit"
    assert "binary_tensor_data" in meta["extensions"]


def test_model_metadata_matches_the_manifest(client, reference):
    for model in ("se", "se_fp16", "sam", "se_static"):
        meta = client.get_model_metadata(model)
        manifest = reference.manifest(model)
        assert meta["name"] == model and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        # The manifest has the ONNX graph's own shapes (-1 for symbolic dims); the server's come from
        # config.pbtxt, whose batch dim is -1 whenever max_batch_size > 0.
        for served, graph in ((meta["inputs"], manifest["inputs"]), (meta["outputs"], manifest["outputs"])):
            assert [t["name"] for t in served] == [t["name"] for t in graph]
            for s, g in zip(served, graph):
                assert s["datatype"] == "FP32" and g["dtype"] == "float32"
                batched = model != "se_static"
                assert s["shape"][1:] == g["shape"][1:]
                assert s["shape"][0] == (-1 if batched else g["shape"][0])
        assert client.is_model_ready(model)
        assert client.is_model_ready(model, model_version="1")
        assert client.get_model_metadata(model, model_version="1")["versions"] == ["1"]


def test_model_config_endpoint_mirrors_config_pbtxt(client, model_repo):
    from deploykit.serve.model_config import config_to_dict, load_config

    served = client.get_model_config("se")
    on_disk = config_to_dict(load_config(model_repo / "se" / "config.pbtxt"))
    # --batching auto (the default) serves the config with its measured choice: dynamic_batching present
    # only when batching is on, and a deploykit_batching parameter saying why; the rest is the file's.
    choice = served["parameters"].pop("deploykit_batching")["string_value"]
    assert ("dynamic_batching" in served) is choice.startswith("on")
    if not served["parameters"]:
        del served["parameters"]
    for doc in (served, on_disk):
        doc.pop("dynamic_batching", None)
    assert served == on_disk
    assert served["max_batch_size"] == 4 and served["input"][0]["dims"] == [64, 14, 14]


@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_inference_equals_pytorch(client, reference, binary_in, binary_out):
    x = make_input((3, 64, 14, 14), seed=1)
    result = infer(client, "se", x, binary_in=binary_in, binary_out=binary_out)
    y = result.as_numpy("output")
    assert y.dtype == np.float32 and y.shape == x.shape
    reference.assert_close("se", x, {"output": y})
    params = result.get_output("output").get("parameters", {})
    assert ("binary_data_size" in params) == binary_out


def test_binary_transport_is_lossless(client, model_repo):
    """Binary tensors carry the exact bits: served output == a local ONNX Runtime session's output."""
    from deploykit.backends.ort import OrtRunner

    x = make_input((2, 64, 14, 14), seed=2)
    served = infer(client, "se", x).as_numpy("output")
    with OrtRunner(model_repo / "se" / "1" / "model.onnx") as runner:
        local = runner.infer({"input": x})["output"]
    np.testing.assert_array_equal(served, local)


def test_fp16_model_dynamic_hw_and_static_batch_equal_pytorch(client, reference):
    x = make_input((4, 64, 14, 14), seed=3)
    reference.assert_close("se_fp16", x, {"output": infer(client, "se_fp16", x).as_numpy("output")})
    # sam was exported with H and W dynamic (7..28): an odd, non-square size inside the range
    x = make_input((1, 64, 9, 21), seed=4)
    reference.assert_close("sam", x, {"output": infer(client, "sam", x).as_numpy("output")})
    x = make_input((2, 64, 14, 14), seed=5)
    reference.assert_close("se_static", x, {"output": infer(client, "se_static", x, version="1").as_numpy("output")})


def test_gzip_request_and_version_route(client, reference):
    x = make_input((1, 64, 14, 14), seed=6)
    result = infer(client, "se", x, version="1", compression="gzip")
    assert result.get_response()["model_version"] == "1"
    reference.assert_close("se", x, {"output": result.as_numpy("output")})


def test_request_id_and_default_outputs_follow_the_protocol(server, reference):
    """A raw JSON request without 'outputs' gets every output as JSON, echoing the id (KServe v2)."""
    import httpx

    x = make_input((1, 64, 14, 14), seed=7)
    body = {"id": "req-42", "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                        "data": x.tolist()}]}
    response = httpx.post(f"{server.url}/v2/models/se/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["id"] == "req-42" and doc["model_name"] == "se" and doc["model_version"] == "1"
    (out,) = doc["outputs"]
    assert out["name"] == "output" and out["datatype"] == "FP32" and out["shape"] == list(x.shape)
    y = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
    reference.assert_close("se", x, {"output": y})


def test_binary_response_layout_by_hand(server, reference):
    """The binary extension read without tritonclient: header length, then raw little-endian floats."""
    import httpx

    x = make_input((2, 64, 14, 14), seed=8)
    raw = x.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    response = httpx.post(f"{server.url}/v2/models/se/infer", content=gzip.compress(head + raw),
                          headers={"Inference-Header-Content-Length": str(len(head)), "Content-Encoding": "gzip"},
                          timeout=30)
    assert response.status_code == 200, response.text
    n = int(response.headers["Inference-Header-Content-Length"])
    doc = json.loads(response.content[:n])
    size = doc["outputs"][0]["parameters"]["binary_data_size"]
    assert size == len(response.content) - n == len(raw)
    y = np.frombuffer(response.content[n:], dtype="<f4").reshape(doc["outputs"][0]["shape"])
    reference.assert_close("se", x, {"output": y})


def test_statistics_and_repository_index(client):
    x = make_input((2, 64, 14, 14), seed=9)
    before = client.get_inference_statistics("se")["model_stats"][0]
    infer(client, "se", x)
    after = client.get_inference_statistics("se", model_version="1")["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 2  # samples
    assert after["execution_count"] - before["execution_count"] == 1
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    index = client.get_model_repository_index()
    assert {(row["name"], row["state"]) for row in index} == {
        ("se", "READY"), ("se_fp16", "READY"), ("sam", "READY"), ("se_static", "READY")}
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} == {"se", "se_fp16", "sam", "se_static"}


def test_client_errors_carry_the_server_message(client):
    x = make_input((5, 64, 14, 14))  # max_batch_size is 4
    with pytest.raises(InferenceServerException) as err:
        infer(client, "se", x)
    assert err.value.status() == "400" and "max_batch_size" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("no_such_model")
    assert err.value.status() == "404" and "unknown model" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("se", model_version="7")
    assert err.value.status() == "404"
    assert not client.is_model_ready("no_such_model")
