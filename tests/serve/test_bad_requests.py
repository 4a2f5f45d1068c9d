"""Bad requests get a 4xx with `{"error": ...}` that says what is wrong, and the server keeps serving."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from tests.serve.helpers import make_input, needs_serve_extra

needs_serve_extra()
import httpx  # noqa: E402

X = make_input((1, 64, 14, 14), seed=11)


def tensor(name="input", shape=(1, 64, 14, 14), datatype="FP32", data=None):
    return {"name": name, "shape": list(shape), "datatype": datatype,
            "data": X.reshape(-1).tolist() if data is None else data}


def binary_body(head: dict, raw: bytes) -> tuple[bytes, dict]:
    encoded = json.dumps(head).encode()
    return encoded + raw, {"Inference-Header-Content-Length": str(len(encoded))}


RAW = X.astype("<f4").tobytes()

# (label, path, body bytes or JSON object, extra headers, expected status, words the error must contain)
CASES = [
    ("wrong datatype", "/v2/models/se/infer", {"inputs": [tensor(datatype="FP64")]}, {}, 400, ["FP32", "FP64"]),
    ("unknown datatype", "/v2/models/se/infer", {"inputs": [tensor(datatype="FP33")]}, {}, 400, ["FP33"]),
    ("wrong rank", "/v2/models/se/infer", {"inputs": [tensor(shape=(64, 14, 14))]}, {}, 400, ["shape"]),
    ("wrong channel dim", "/v2/models/se/infer",
     {"inputs": [tensor(shape=(1, 32, 14, 28))]}, {}, 400, ["shape", "64"]),
    ("data count differs from shape", "/v2/models/se/infer",
     {"inputs": [tensor(data=[1.0, 2.0])]}, {}, 400, ["values"]),
    ("strings as FP32", "/v2/models/se/infer",
     {"inputs": [tensor(shape=(1, 1), data=["1.5"])]}, {}, 400, ["numbers"]),
    ("batch above max_batch_size", "/v2/models/se/infer",
     {"inputs": [tensor(shape=(5, 64, 14, 14), data=[0.0] * (5 * 64 * 14 * 14))]}, {}, 400, ["max_batch_size"]),
    ("missing input", "/v2/models/se/infer", {"inputs": [tensor(name="image")]}, {}, 400, ["no input 'image'"]),
    ("no inputs at all", "/v2/models/se/infer", {"inputs": []}, {}, 400, ["inputs"]),
    ("input given twice", "/v2/models/se/infer", {"inputs": [tensor(), tensor()]}, {}, 400, ["twice"]),
    ("unknown output", "/v2/models/se/infer",
     {"inputs": [tensor()], "outputs": [{"name": "logits"}]}, {}, 400, ["no output 'logits'"]),
    ("malformed JSON", "/v2/models/se/infer", b'{"inputs": [', {}, 400, ["not valid JSON"]),
    ("JSON that is not an object", "/v2/models/se/infer", b"[1, 2]", {}, 400, ["JSON object"]),
    ("negative dim", "/v2/models/se/infer", {"inputs": [tensor(shape=(1, -64, 14, 14))]}, {}, 400, ["shape"]),
    ("binary size disagrees with shape", "/v2/models/se/infer",
     *binary_body({"inputs": [{"name": "input", "shape": [1, 64, 14, 14], "datatype": "FP32",
                               "parameters": {"binary_data_size": len(RAW) - 4}}]}, RAW[:-4]), 400, ["needs"]),
    ("binary data missing", "/v2/models/se/infer",
     *binary_body({"inputs": [{"name": "input", "shape": [1, 64, 14, 14], "datatype": "FP32",
                               "parameters": {"binary_data_size": len(RAW)}}]}, RAW[:100]), 400, ["only"]),
    ("trailing bytes", "/v2/models/se/infer",
     *binary_body({"inputs": [{"name": "input", "shape": [1, 64, 14, 14], "datatype": "FP32",
                               "parameters": {"binary_data_size": len(RAW)}}]}, RAW + b"xx"), 400, ["add up"]),
    ("header length past the body", "/v2/models/se/infer", b"{}", {"Inference-Header-Content-Length": "99"},
     400, ["only"]),
    ("header length not a number", "/v2/models/se/infer", b"{}", {"Inference-Header-Content-Length": "-1"},
     400, ["integer"]),
    # str.isdigit() takes the superscript two, int() does not: this once got a plain-text 500.
    ("header length a non-ASCII digit", "/v2/models/se/infer", b"{}",
     {"Inference-Header-Content-Length": "\u00b2".encode("latin-1")}, 400, ["integer"]),
    ("dim too large for numpy", "/v2/models/se/infer",
     {"inputs": [tensor(shape=(0, 2 ** 64), data=[])]}, {}, 400, ["too large"]),
    ("more dims than numpy takes", "/v2/models/se/infer",
     {"inputs": [tensor(shape=(1,) * 70, data=[1.0])]}, {}, 400, ["70 dims"]),
    ("unsupported content encoding", "/v2/models/se/infer", b"xx", {"Content-Encoding": "br"}, 415, ["br"]),
    ("corrupt gzip", "/v2/models/se/infer", b"not gzip", {"Content-Encoding": "gzip"}, 400, ["decompress"]),
    ("unknown model", "/v2/models/resnet/infer", {"inputs": [tensor()]}, {}, 404, ["unknown model", "se"]),
    ("unknown version", "/v2/models/se/versions/3/infer", {"inputs": [tensor()]}, {}, 404, ["no version 3"]),
    ("non-numeric version", "/v2/models/se/versions/latest", None, {}, 400, ["version"]),
    ("dot-dot name", "/v2/models/../infer", None, {}, 404, []),
    ("encoded traversal", "/v2/models/..%2F..%2Fetc/infer", {"inputs": [tensor()]}, {}, 404, []),
    ("encoded dot-dot", "/v2/models/%2E%2E/ready", None, {}, 400, ["not a valid model name"]),
    ("hidden name", "/v2/models/.se/ready", None, {}, 400, ["not a valid model name"]),
    ("name with spaces", "/v2/models/se%20x", None, {}, 400, ["not a valid model name"]),
    ("name with a trailing newline", "/v2/models/se%0A", None, {}, 400, ["not a valid model name"]),
    ("unknown route", "/v2/nothing/here", None, {}, 404, []),
]


@pytest.mark.parametrize("label,path,body,headers,status,words", CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_and_explained(server, label, path, body, headers, status, words):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        if body is None:
            response = http.get(path, headers=headers)
        elif isinstance(body, (bytes, bytearray)):
            response = http.post(path, content=bytes(body), headers=headers)
        else:
            response = http.post(path, json=body, headers=headers)
    assert response.status_code == status, (label, response.status_code, response.text)
    error = response.json()["error"]
    assert isinstance(error, str) and error
    for word in words:
        assert word in error, (label, error)


def test_oversize_body_gets_413_and_the_next_request_works(server, reference):
    big = np.zeros(2 << 20, dtype=np.uint8).tobytes()  # 2 MiB against the fixture's 1 MiB limit
    with httpx.Client(base_url=server.url, timeout=30) as http:
        response = http.post("/v2/models/se/infer", content=big, headers={"Inference-Header-Content-Length": "2"})
        assert response.status_code == 413 and "limit" in response.json()["error"]
        # A gzip body that inflates past the limit is refused the same way.
        import gzip

        response = http.post("/v2/models/se/infer", content=gzip.compress(big), headers={"Content-Encoding": "gzip"})
        assert response.status_code == 413
    _still_serving(server, reference)


def test_garbage_on_the_socket_does_not_hurt(server, reference):
    host, port = server.address.split(":")
    for junk in (b"NOT HTTP AT ALL\r\n\r\n", b"POST /v2/models/se/infer HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            try:
                sock.recv(4096)
            except OSError:
                pass
    _still_serving(server, reference)


def test_server_still_serves_after_every_bad_request(server, reference):
    _still_serving(server, reference)


def _still_serving(server, reference):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v2/health/ready").status_code == 200
        response = http.post("/v2/models/se/infer", json={"inputs": [tensor()]})
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    reference.assert_close("se", X, {"output": np.asarray(out["data"], np.float32).reshape(out["shape"])})
