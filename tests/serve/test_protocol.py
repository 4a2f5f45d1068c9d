"""The wire format on its own, checked against tritonclient's encoder and decoder (Triton's reference client).

Requests are produced by `InferenceServerClient.generate_request_body` and responses read back with
`InferResult.from_response_body`, so both directions are checked against an implementation that is not
ours, for every datatype the server takes, in JSON and binary.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.serve.helpers import needs_serve_extra

needs_serve_extra()
import tritonclient.http as httpclient  # noqa: E402

from deploykit.serve.protocol import (  # noqa: E402
    DATATYPES, InferRequest, ProtocolError, RequestedOutput, datatype_of, encode_infer_response, json_values,
    parse_infer_request, sends_binary, triton_to_kserve,
)


def values(datatype: str, shape=(2, 3, 5), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dtype = DATATYPES[datatype]
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 100).astype(dtype)


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_requests_decode_exactly(datatype, binary):
    a, b = values(datatype, seed=1), values(datatype, shape=(2, 4), seed=2)
    inputs = []
    for name, array in (("a", a), ("b", b)):
        tensor = httpclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array, binary_data=binary)
        inputs.append(tensor)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(
        inputs, outputs=[httpclient.InferRequestedOutput("y", binary_data=binary)], request_id="r1")
    request = parse_infer_request(body, None if header_length is None else str(header_length))
    assert request.id == "r1" and [t.name for t in request.inputs] == ["a", "b"]
    for parsed, original in zip(request.inputs, (a, b)):
        assert parsed.datatype == datatype and parsed.shape == original.shape
        assert parsed.array.dtype == original.dtype
        np.testing.assert_array_equal(parsed.array, original)
    assert request.outputs == [RequestedOutput("y", binary)]


@pytest.mark.parametrize("datatype", list(DATATYPES))
@pytest.mark.parametrize("binary", [True, False])
def test_responses_decode_exactly_in_tritonclient(datatype, binary):
    y, z = values(datatype, seed=3), values(datatype, shape=(4,), seed=4)
    request = InferRequest(inputs=[], outputs=[RequestedOutput("y", binary), RequestedOutput("z", not binary)],
                           id="abc")
    parts, header_length = encode_infer_response("m", "3", {"y": y, "z": z}, request)
    body = b"".join(parts)
    result = httpclient.InferResult.from_response_body(body, header_length=header_length)
    assert result.get_response()["model_name"] == "m" and result.get_response()["model_version"] == "3"
    assert result.get_response()["id"] == "abc"
    for name, original in (("y", y), ("z", z)):
        decoded = result.as_numpy(name)
        assert decoded.shape == original.shape and decoded.dtype == original.dtype
        np.testing.assert_array_equal(decoded, original)


def test_binary_output_for_the_whole_request():
    request = InferRequest(inputs=[], outputs=None, binary_output=True)
    y = values("FP32")
    parts, header_length = encode_infer_response("m", "1", {"y": y}, request)
    body = b"".join(parts)
    assert len(parts) == 2 and len(parts[0]) == header_length
    head = json.loads(body[:header_length])
    assert head["outputs"][0]["parameters"]["binary_data_size"] == y.nbytes == len(body) - header_length
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<f4").reshape(y.shape), y)


def test_binary_inputs_are_aligned_whatever_the_header_length():
    x = values("FP32", shape=(8, 16))
    raw = x.tobytes()
    for pad in range(0, 8):
        head = json.dumps({"id": "x" * pad, "inputs": [{"name": "x", "shape": [8, 16], "datatype": "FP32",
                                                        "parameters": {"binary_data_size": len(raw)}}]}).encode()
        parsed = parse_infer_request(head + raw, str(len(head))).inputs[0].array
        assert parsed.ctypes.data % 64 == 0
        np.testing.assert_array_equal(parsed, x)


def test_nested_json_data_is_accepted():
    x = values("INT32", shape=(2, 3))
    body = json.dumps({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT32", "data": x.tolist()}]})
    np.testing.assert_array_equal(parse_infer_request(body.encode()).inputs[0].array, x)


@pytest.mark.parametrize("datatype,data,words", [
    ("INT32", [1.5, 2.0], "integers"),
    ("INT8", [300, 1], "range"),
    ("UINT8", [-1, 1], "range"),
    ("BOOL", [1, 0], "true/false"),
    ("FP32", ["1.0", "2.0"], "numbers"),
    ("FP32", [[1.0], [2.0, 3.0]], "regularly nested"),
    ("INT64", [2 ** 70, 1], "range"),
    ("UINT64", [1.5, 2 ** 64 - 1], "integers"),
    ("INT64", [2 ** 63, -1], "range"),
])
def test_json_data_that_a_cast_would_change_is_refused(datatype, data, words):
    body = json.dumps({"inputs": [{"name": "x", "shape": [2], "datatype": datatype, "data": data}]}).encode()
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(body)
    assert err.value.status == 400 and words in err.value.message


@pytest.mark.parametrize("data", [[2 ** 64 - 1, 0, 2 ** 63], [2 ** 63, 1], [5, 2 ** 64 - 2]])
def test_uint64_json_data_beyond_int64_is_exact(data):
    # numpy reads a list mixing such values with small ones as float64, which would round them.
    expected = np.array(data, dtype=np.uint64)
    inp = httpclient.InferInput("x", [len(data)], "UINT64")
    inp.set_data_from_numpy(expected, binary_data=False)
    body, _ = httpclient.InferenceServerClient.generate_request_body([inp])
    parsed = parse_infer_request(body).inputs[0].array
    assert parsed.dtype == np.uint64 and parsed.tolist() == data


def test_json_requests_have_no_limit_of_their_own():
    # The body limit (--max-body-size, checked before parsing) is the only one, as in Triton.
    x = np.arange(3 << 20, dtype=np.float32) / 7   # about 30 MB of JSON
    body = json.dumps({"inputs": [{"name": "x", "shape": [x.size], "datatype": "FP32", "data": x.tolist()}]})
    assert len(body) > 16 << 20
    np.testing.assert_array_equal(parse_infer_request(body.encode()).inputs[0].array, x)


@pytest.mark.parametrize("output_params,request_params,binary", [
    (None, {}, {"a": False, "b": False}),
    (None, {"binary_data_output": True}, {"a": True, "b": True}),
    ({"a": {"binary_data": True}}, {}, {"a": True, "b": False}),
    ({"a": {"binary_data": False}}, {"binary_data_output": True}, {"a": False, "b": True}),
])
def test_json_value_count_follows_the_binary_choices(output_params, request_params, binary):
    # What decides whether a response is encoded off the event loop.
    doc = {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}], "parameters": request_params}
    if output_params is not None:
        doc["outputs"] = [{"name": n, "parameters": p} for n, p in output_params.items()]
    request = parse_infer_request(json.dumps(doc).encode())
    results = {"a": np.zeros((2, 3), np.float32), "b": np.zeros(5, np.float32)}
    assert {n: sends_binary(request, n) for n in results} == binary
    assert json_values(results, request) == sum(r.size for n, r in results.items() if not binary[n])


@pytest.mark.parametrize("doc,words", [
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0],
                  "parameters": {"shared_memory_region": "r"}}]}, "shared-memory"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
      "outputs": [{"name": "y", "parameters": {"classification": 3}}]}, "classification"),
    ({"inputs": [{"name": "x", "shape": [True], "datatype": "FP32", "data": [1.0]}]}, "integer"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}, "neither"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]}, "BYTES"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}], "id": 5}, "'id'"),
    ({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}],
      "parameters": {"binary_data_output": "yes"}}, "true or false"),
])
def test_unsupported_or_malformed_fields_are_refused(doc, words):
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(json.dumps(doc).encode())
    assert words in err.value.message


def test_datatype_names():
    assert triton_to_kserve("TYPE_FP16") == "FP16" and triton_to_kserve("TYPE_STRING") == "BYTES"
    for name, dtype in DATATYPES.items():
        assert datatype_of(dtype) == name
        assert datatype_of(dtype.newbyteorder("=")) == name


# ------------------------------------------------------------------- NaN, Inf and overflow (as Triton)
def test_non_finite_outputs_are_written_as_triton_writes_them():
    """Triton (server and client, since 22.02) writes NaN/Infinity/-Infinity tokens in JSON tensors and its
    client reads them; a response must round-trip through tritonclient with the same values."""
    y = np.array([1.5, np.nan, np.inf, -np.inf], np.float32)
    parts, header_length = encode_infer_response("m", "1", {"y": y}, InferRequest(inputs=[]))
    body = b"".join(parts)
    assert b"[1.5,NaN,Infinity,-Infinity]" in body
    decoded = httpclient.InferResult.from_response_body(body, header_length=header_length).as_numpy("y")
    np.testing.assert_array_equal(decoded, y)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64"])
def test_non_finite_json_inputs_from_tritonclient_are_taken(datatype):
    x = np.array([0.25, np.nan, np.inf, -np.inf, -2.0], DATATYPES[datatype])
    tensor = httpclient.InferInput("x", [5], datatype)
    tensor.set_data_from_numpy(x, binary_data=False)
    body, _ = httpclient.InferenceServerClient.generate_request_body([tensor])
    parsed = parse_infer_request(body).inputs[0].array
    assert parsed.dtype == x.dtype
    np.testing.assert_array_equal(parsed, x)


@pytest.mark.parametrize("datatype,data", [
    ("FP32", [1e39, 1.0]), ("FP32", [1.0, -3.5e38]), ("FP16", [70000.0, 0.0]), ("FP64", [1e400, 1.0]),
    ("FP32", [[1e39], [1.0]]),                       # nested: the json path checks it too
    ("FP32", "NaN-ONE"),                              # an Infinity elsewhere does not excuse an overflow
])
def test_finite_json_numbers_the_datatype_cannot_hold_are_refused(datatype, data):
    if data == "NaN-ONE":
        body = b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [Infinity, 1e39, 1]}]}'
    else:
        shape = [len(data)] if not isinstance(data[0], list) else [len(data), 1]
        body = ('{"inputs": [{"name": "x", "shape": %s, "datatype": "%s", "data": %s}]}'
                % (shape, datatype, str(data).replace("inf", "1e400"))).encode()
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(body)
    assert err.value.status == 400 and f"outside the range of {datatype}" in err.value.message


def test_the_largest_finite_values_are_kept():
    body = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [3.4028234e38, -65504]}]}'
    np.testing.assert_array_equal(parse_infer_request(body).inputs[0].array,
                                  np.array([np.finfo(np.float32).max, -65504], np.float32))


# ----------------------------------------------------------------------------- large JSON tensors
def _flat_json_body(x: np.ndarray, datatype: str = "FP32") -> bytes:
    return json.dumps({"id": 'a "data": [1, 2] inside a string', "inputs": [
        {"name": "x", "shape": list(x.shape), "datatype": datatype, "data": x.reshape(-1).tolist()}]}).encode()


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "INT32"])
def test_json_tensors_longer_than_a_chunk_decode_exactly(datatype):
    x = values(datatype, shape=(3, 120_001), seed=7)   # several 1 MiB chunks of text
    request = parse_infer_request(_flat_json_body(x, datatype))
    assert request.id == 'a "data": [1, 2] inside a string'
    np.testing.assert_array_equal(request.inputs[0].array, x)
    assert request.inputs[0].array.dtype == x.dtype


@pytest.mark.parametrize("text,words", [(b"[1.0,,2.0]", "not valid JSON"), (b"[1.0,2.0,]", "not valid JSON"),
                                        (b"[.5,1]", "not valid JSON"), (b"[1 2]", "not valid JSON"),
                                        (b"[01,2]", "not valid JSON"), (b'[1,"2"]', "numbers")])
def test_malformed_numeric_lists_are_refused_as_json_would(text, words):
    body = b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ' + text + b"}]}"
    with pytest.raises(ProtocolError) as err:
        parse_infer_request(body)
    assert err.value.status == 400 and words in err.value.message


def test_json_decoding_costs_about_the_body_and_the_tensor():
    """A 20 MiB body of short numbers: Python floats cost 32 bytes each against 5 bytes of text, which made
    decoding take 13x the body. Measured with tracemalloc (numpy reports its buffers to it)."""
    import tracemalloc

    n = 4 << 20
    x = np.round(np.random.default_rng(0).random(n), 2).astype(np.float32)
    body = _flat_json_body(x)
    tracemalloc.start()
    try:
        parsed = parse_infer_request(body).inputs[0].array
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(parsed, x)
    assert peak < len(body) + 2 * x.nbytes + (16 << 20), (peak / 2**20, len(body) / 2**20)
