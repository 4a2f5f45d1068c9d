"""The KServe v2 gRPC service with Triton's own gRPC client: health, metadata, config, statistics, index,
unary inference (raw and typed contents) and bidirectional streaming, outputs compared with PyTorch and
with the HTTP path of the same server."""

from __future__ import annotations

import queue
from functools import partial

import numpy as np
import pytest

from tests.serve.helpers import make_input, needs_serve_extra
from tests.serve.test_statistics import check_shape_against_triton, check_triton_rules

needs_serve_extra()
grpcclient = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc] (test extra)")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def grpc_client(server):
    assert server.grpc_address, server.lines
    c = grpcclient.InferenceServerClient(server.grpc_address)
    yield c
    c.close()


def grpc_infer(client, model, x, *, version="", outputs=None):
    tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    wanted = [grpcclient.InferRequestedOutput(n) for n in outputs] if outputs else None
    return client.infer(model, [tensor], model_version=version, outputs=wanted)


def test_health_metadata_config_and_index(grpc_client, client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("se") and not grpc_client.is_model_ready("no_such_model")
    meta = grpc_client.get_server_metadata(as_json=True)
    assert meta["name"] == "deploykit" and "statistics" in meta["extensions"]
    # The same documents as the HTTP endpoints (Triton's JSON forms of the same messages).
    model = grpc_client.get_model_metadata("se", as_json=True)
    http_model = client.get_model_metadata("se")
    assert model["name"] == http_model["name"] and model["platform"] == http_model["platform"]
    assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in model["inputs"]] == \
        [(t["name"], t["datatype"], t["shape"]) for t in http_model["inputs"]]
    config = grpc_client.get_model_config("se").config
    http_config = client.get_model_config("se")
    assert config.name == "se" and config.max_batch_size == http_config["max_batch_size"]
    assert [i.name for i in config.input] == [i["name"] for i in http_config["input"]]
    index = grpc_client.get_model_repository_index(as_json=True)["models"]
    assert {(row["name"], row["state"]) for row in index} == {
        ("se", "READY"), ("se_fp16", "READY"), ("sam", "READY"), ("se_static", "READY")}


def test_unary_inference_matches_pytorch_and_http(grpc_client, client, reference):
    import tritonclient.http as httpclient

    x = make_input((3, 64, 14, 14), seed=21)
    result = grpc_infer(grpc_client, "se", x)
    y = result.as_numpy("output")
    reference.assert_close("se", x, {"output": y})
    tensor = httpclient.InferInput("input", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    np.testing.assert_array_equal(y, client.infer("se", [tensor]).as_numpy("output"))  # same bits
    response = result.get_response()
    assert response.model_name == "se" and response.model_version == "1"
    # Dynamic spatial size (sam), and a version named explicitly.
    x = make_input((1, 64, 10, 18), seed=22)
    reference.assert_close("sam", x, {"output": grpc_infer(grpc_client, "sam", x, version="1").as_numpy("output")})


def test_typed_contents_are_accepted_like_raw(server, reference):
    """Requests built by other KServe clients put values in contents.fp32_contents instead of raw bytes."""
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    x = make_input((1, 64, 14, 14), seed=23)
    request = service_pb2.ModelInferRequest(model_name="se", id="typed-1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    import grpc

    with grpc.insecure_channel(server.grpc_address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    assert response.id == "typed-1"
    y = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(response.outputs[0].shape)
    reference.assert_close("se", x, {"output": y})


def test_streaming_answers_every_request_with_its_id(grpc_client, reference):
    results: queue.Queue = queue.Queue()

    def callback(store, result, error):
        store.put((result, error))

    inputs = {f"req-{i}": make_input((1 + i % 3, 64, 14, 14), seed=30 + i) for i in range(8)}
    grpc_client.start_stream(callback=partial(callback, results))
    try:
        for request_id, x in inputs.items():
            tensor = grpcclient.InferInput("input", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            grpc_client.async_stream_infer("se", [tensor], request_id=request_id)
        # A bad request on the stream gets an error for that request only; the stream goes on.
        bad = grpcclient.InferInput("input", [1, 32, 14, 14], "FP32")
        bad.set_data_from_numpy(make_input((1, 32, 14, 14)))
        grpc_client.async_stream_infer("se", [bad], request_id="bad")
        got, errors = {}, []
        for _ in range(len(inputs) + 1):
            result, error = results.get(timeout=60)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy("output")
    finally:
        grpc_client.stop_stream()
    assert set(got) == set(inputs)
    for request_id, x in inputs.items():
        reference.assert_close("se", x, {"output": got[request_id]})
    assert len(errors) == 1 and "shape" in str(errors[0])


def test_statistics_over_grpc_follow_triton_rules(grpc_client):
    from google.protobuf import json_format

    before = grpc_client.get_inference_statistics("se", as_json=True)["model_stats"][0]
    for seed in range(3):
        grpc_infer(grpc_client, "se", make_input((2, 64, 14, 14), seed=seed))
    response = grpc_client.get_inference_statistics("se")
    entry = json_format.MessageToDict(response, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)["model_stats"][0]
    # protobuf's JSON mapping writes uint64 as strings; turn them back into numbers for the checks.
    entry = _ints(entry)
    check_shape_against_triton(entry)
    check_triton_rules(entry)
    before = _ints(before)
    assert entry["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert entry["inference_count"] - before.get("inference_count", 0) == 6
    all_models = grpc_client.get_inference_statistics(as_json=True)["model_stats"]
    assert {s["name"] for s in all_models} == {"se", "se_fp16", "sam", "se_static"}


def _ints(doc):
    if isinstance(doc, dict):
        return {k: (_ints(v) if k not in ("name", "version") else v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_ints(v) for v in doc]
    return int(doc) if isinstance(doc, str) and doc.isdigit() else doc


def test_errors_carry_the_server_message_and_grpc_code(grpc_client):
    with pytest.raises(InferenceServerException) as err:
        grpc_infer(grpc_client, "se", make_input((5, 64, 14, 14)))
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "max_batch_size" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        grpc_client.get_model_metadata("no_such_model")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        grpc_infer(grpc_client, "se", make_input((1, 64, 14, 14)), version="7")
    assert err.value.status() == "StatusCode.NOT_FOUND"


def test_grpc_port_in_use_exits_2_and_no_grpc_serves_http_only(model_repo, tmp_path):
    import socket

    from tests.serve.helpers import LiveServer
    from tests.serve.test_cli_serve import one_error_line, run_cli

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cli("serve", str(model_repo), "--port", "0", "--grpc-port", str(port))
    line = one_error_line(proc)
    assert proc.returncode == 2 and "in use" in line and "--grpc-port" in line
    with LiveServer(model_repo, "--no-grpc", log_dir=tmp_path) as live:
        assert live.url and not live.grpc_address
        assert not any("gRPC" in line for line in live.lines)


def test_wire_level_request_and_response_codecs_agree_with_protobuf():
    """parse_infer_call and RawResponse skip protobuf's copies of the raw tensors; protobuf itself must
    read and write the same messages."""
    from tritonclient.grpc import service_pb2

    from deploykit.serve.grpc_service import (RawResponse, encode_response, parse_infer_call,
                                              serialize_stream_response)

    x = make_input((2, 3, 5), seed=3)
    request = service_pb2.ModelInferRequest(model_name="se", model_version="1", id="a" * 300)
    request.parameters["priority"].int64_param = 7
    for name in ("a", "b"):
        request.inputs.add(name=name, datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.tobytes())
    request.outputs.add(name="y")
    data = request.SerializeToString()
    call = parse_infer_call(data)
    assert [bytes(v) for v in call.raw] == list(request.raw_input_contents)
    rebuilt = service_pb2.ModelInferRequest()
    rebuilt.CopyFrom(call.message)
    rebuilt.raw_input_contents.extend(bytes(v) for v in call.raw)
    assert rebuilt == request
    with pytest.raises(ValueError):
        parse_infer_call(data[:-5])

    results = {"y": x, "z": (x > 0), "w": x.astype(np.float16)}
    raw = encode_response(service_pb2, "se", "1", "id-9", results)
    assert isinstance(raw, RawResponse)
    parsed = service_pb2.ModelInferResponse.FromString(raw.serialize())
    expected = service_pb2.ModelInferResponse()   # the same response built by protobuf itself
    expected.CopyFrom(raw.message)
    expected.raw_output_contents.extend(a.tobytes() for a in raw.arrays)
    assert parsed == expected
    assert parsed.id == "id-9" and [o.name for o in parsed.outputs] == ["y", "z", "w"]
    np.testing.assert_array_equal(np.frombuffer(parsed.raw_output_contents[0], "<f4").reshape(x.shape), x)
    np.testing.assert_array_equal(np.frombuffer(parsed.raw_output_contents[1], "?").reshape(x.shape), x > 0)
    assert parsed.raw_output_contents[2] == x.astype(np.float16).tobytes()
    streamed = service_pb2.ModelStreamInferResponse.FromString(serialize_stream_response(raw))
    assert streamed.infer_response == parsed and not streamed.error_message
    error = service_pb2.ModelStreamInferResponse(error_message="bad")
    assert serialize_stream_response(error) == error.SerializeToString()
