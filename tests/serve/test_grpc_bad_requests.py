"""The bad-request suite over both protocols: each malformed request goes to the HTTP endpoint (JSON) and
to the gRPC service (raw protobuf, so the client cannot tidy it up first); both refuse it with the same
message, 4xx on HTTP and the matching gRPC code, and the server keeps serving."""

from __future__ import annotations

import numpy as np
import pytest

from tests.serve.helpers import make_input, needs_serve_extra

needs_serve_extra()
grpc = pytest.importorskip("grpc", reason="needs grpcio (serve extra)")
import httpx  # noqa: E402
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402

X = make_input((1, 64, 14, 14), seed=11)
CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
         503: grpc.StatusCode.UNAVAILABLE}


def tensor(name="input", shape=(1, 64, 14, 14), datatype="FP32", data=None):
    return {"name": name, "shape": list(shape), "datatype": datatype,
            "data": X.reshape(-1).tolist() if data is None else data}


# (label, model, version, inputs, requested outputs, HTTP status, words the error must contain)
CASES = [
    ("wrong datatype", "se", "", [tensor(datatype="FP64")], None, 400, ["FP32", "FP64"]),
    ("unknown datatype", "se", "", [tensor(datatype="FP33")], None, 400, ["FP33"]),
    ("wrong rank", "se", "", [tensor(shape=(64, 14, 14))], None, 400, ["shape"]),
    ("wrong channel dim", "se", "", [tensor(shape=(1, 32, 14, 28))], None, 400, ["shape", "64"]),
    ("value count differs from shape", "se", "", [tensor(data=[1.0, 2.0])], None, 400, ["values"]),
    ("batch above max_batch_size", "se", "", [tensor(shape=(5, 64, 14, 14), data=[0.0] * (5 * 64 * 14 * 14))],
     None, 400, ["max_batch_size"]),
    ("unknown input", "se", "", [tensor(name="image")], None, 400, ["no input 'image'"]),
    ("no inputs at all", "se", "", [], None, 400, ["inputs"]),
    ("input given twice", "se", "", [tensor(), tensor()], None, 400, ["twice"]),
    ("unknown output", "se", "", [tensor()], ["logits"], 400, ["no output 'logits'"]),
    ("negative dim", "se", "", [tensor(shape=(1, -64, 14, 14))], None, 400, ["shape"]),
    ("dim too large for numpy", "se", "", [tensor(shape=(0, 2 ** 62), data=[])], None, 400, ["too large"]),
    ("more dims than numpy takes", "se", "", [tensor(shape=(1,) * 70, data=[1.0])], None, 400, ["70 dims"]),
    ("unknown model", "resnet", "", [tensor()], None, 404, ["unknown model", "se"]),
    ("unknown version", "se", "3", [tensor()], None, 404, ["no version 3"]),
    ("non-numeric version", "se", "latest", [tensor()], None, 400, ["version"]),
    ("hidden name", ".se", "", [tensor()], None, 400, ["not a valid model name"]),
    ("name with spaces", "se x", "", [tensor()], None, 400, ["not a valid model name"]),
    ("name with a trailing newline", "se\n", "", [tensor()], None, 400, ["not a valid model name"]),
]


def send_http(server, model, version, inputs, outputs):
    from urllib.parse import quote

    path = f"/v2/models/{quote(model, safe='')}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": inputs}
    if outputs:
        body["outputs"] = [{"name": n} for n in outputs]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post(path, json=body)
    return response.status_code, response.json()["error"] if response.status_code != 200 else ""


def grpc_request(model, version, inputs, outputs):
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    for t in inputs:
        entry = request.inputs.add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        field = {"FP64": "fp64_contents"}.get(t["datatype"], "fp32_contents")
        getattr(entry.contents, field).extend(t["data"])
    for name in outputs or ():
        request.outputs.add(name=name)
    return request


def send_grpc(server, request):
    with grpc.insecure_channel(server.grpc_address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("label,model,version,inputs,outputs,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_alike_on_both_protocols(server, protocol, label, model, version, inputs, outputs,
                                                        status, words):
    if protocol == "http":
        got, error = send_http(server, model, version, inputs, outputs)
        assert got == status, (label, got, error)
    else:
        got, error = send_grpc(server, grpc_request(model, version, inputs, outputs))
        assert got == CODES[status], (label, got, error)
    assert error
    for word in words:
        assert word in error, (label, error)


RAW = X.astype("<f4").tobytes()


@pytest.mark.parametrize("label,raw,words", [
    ("raw contents shorter than the shape", [RAW[:-4]], ["bytes"]),
    ("raw contents longer than the shape", [RAW + b"xxxx"], ["bytes"]),
    ("raw contents for some inputs only", [RAW, RAW], ["raw_input_contents"]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_raw_contents_must_match_the_inputs(server, label, raw, words):
    request = service_pb2.ModelInferRequest(model_name="se")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 64, 14, 14])
    request.raw_input_contents.extend(raw)
    code, error = send_grpc(server, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (label, code, error)
    for word in words:
        assert word in error


def test_typed_contents_must_use_the_field_of_the_datatype(server):
    request = service_pb2.ModelInferRequest(model_name="se")
    entry = request.inputs.add(name="input", datatype="FP32", shape=[1, 2])
    entry.contents.int_contents.extend([1, 2])
    code, error = send_grpc(server, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "fp32_contents" in error


def test_message_over_the_body_limit_is_refused_and_the_server_goes_on(server, reference):
    big = make_input((4, 64, 32, 32))  # 1 MiB of floats plus the header: over the fixture's 1 MiB limit
    request = service_pb2.ModelInferRequest(model_name="sam")
    request.inputs.add(name="input", datatype="FP32", shape=list(big.shape))
    request.raw_input_contents.append(big.tobytes())
    code, _error = send_grpc(server, request)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    request = service_pb2.ModelInferRequest(model_name="se")
    request.inputs.add(name="input", datatype="FP32", shape=list(X.shape))
    request.raw_input_contents.append(RAW)
    with grpc.insecure_channel(server.grpc_address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape)
    reference.assert_close("se", X, {"output": y})
