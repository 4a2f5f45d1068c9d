"""Bad requests get a 4xx with `{"error": ...}` that says what is wrong, and the server keeps serving."""

from __future__ import annotations

import json
import socket
import time

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


# ------------------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version", ["%C2%B2", "\uff11", "\u0661", "1\u0660", "%F0%9D%9F%8F", "+1", "1.0", " 1"])
def test_versions_are_ascii_digits_only(server, version):
    """'²', fullwidth '１', Arabic-Indic '١' pass str.isdigit (and int() reads the last two as 1): each is a 400,
    like Triton's, never a 500 and never version 1."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        ready = http.get(f"/v2/models/se/versions/{version}/ready")
        infer = http.post(f"/v2/models/se/versions/{version}/infer", json={"inputs": [tensor()]})
    for response in (ready, infer):
        assert response.status_code == 400, (version, response.status_code, response.text)
        assert "not a valid version" in response.json()["error"]


def test_an_unknown_ascii_version_is_404(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v2/models/se/versions/7/ready").status_code == 404
        assert http.get("/v2/models/se/versions/1/ready").status_code == 200


# ---------------------------------------------------------------- disconnects and the decode budget
def _stalled_request(server, declared: int, sent: bytes = b'{"inputs": [') -> socket.socket:
    """A POST whose body stops after `sent`, out of `declared` bytes: the server waits for the rest."""
    host, port = server.address.split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /v2/models/se/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % declared + sent)
    return sock


def test_client_disconnecting_mid_body_logs_one_line(server, reference):
    before = server.log()
    for _ in range(3):
        sock = _stalled_request(server, 100_000)
        time.sleep(0.2)
        sock.close()
    deadline = time.monotonic() + 10
    while server.log().count("disconnected before sending the whole body") - \
            before.count("disconnected before sending the whole body") < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    new = server.log()[len(before):]
    assert new.count("disconnected before sending the whole body of POST /v2/models/se/infer") == 3, new
    assert "Traceback" not in new and "Exception in ASGI application" not in new, new
    _still_serving(server, reference)


def test_bodies_decoded_at_once_are_bounded_by_a_budget(server, reference):
    """The shared server takes 1 MiB bodies, so its budget is 4 MiB of bodies in flight: four stalled 1 MiB
    uploads fill it, the next request is told 503 (retry later), and once they go it is served again."""
    limit = 1 << 20
    stalled = [_stalled_request(server, limit) for _ in range(4)]
    try:
        refused = None
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while refused is None and time.monotonic() < deadline:
                response = http.post("/v2/models/se/infer", json={"inputs": [tensor()]})
                if response.status_code == 503:
                    refused = response
                else:
                    assert response.status_code == 200, response.text
                    time.sleep(0.1)
        assert refused is not None, "no request was refused while 4 MiB of bodies were being read"
        assert "budget" in refused.json()["error"] and "retry" in refused.json()["error"]
    finally:
        for sock in stalled:
            sock.close()
    deadline = time.monotonic() + 20
    with httpx.Client(base_url=server.url, timeout=30) as http:
        while http.post("/v2/models/se/infer", json={"inputs": [tensor()]}).status_code == 503:
            assert time.monotonic() < deadline, "the budget was not given back after the clients left"
            time.sleep(0.1)
    _still_serving(server, reference)


# ------------------------------------------------------------------------------- unloadable models
def _copy_model(model_repo, tmp_path, name: str = "se"):
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(model_repo / name, repo / name, ignore=shutil.ignore_patterns("2", "3"))
    return repo, repo / name / "1" / "model.onnx"


def _serve_once(repo, capfd):
    from deploykit.cli import main

    try:
        main(["serve", str(repo), "--port", "0"])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capfd.readouterr().err


def one_hint(err: str) -> str:
    """The hint of a one-line error: exactly one "(...)" at the end of the line, never two in a row."""
    import re

    line = err.strip()
    assert "\n" not in line and "Traceback" not in err, err
    found = re.search(r" \(([^()]*)\)$", line)
    assert found, line
    assert not line[:found.start()].rstrip().endswith(")"), line   # no "(...) (...)"
    return found.group(1)


def test_serve_refuses_a_garbage_model_file_in_one_line(model_repo, tmp_path, capfd):
    repo, path = _copy_model(model_repo, tmp_path)
    path.write_bytes(b"\x08\x07garbage, not a protobuf" * 10)
    code, err = _serve_once(repo, capfd)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "se: version 1: ONNX Runtime cannot load model.onnx" in err
    hint = one_hint(err)   # the model's own advice and the repository's, in one hint
    assert hint.startswith("re-export the model") and hint.endswith("the server starts only when every model loads")


def test_two_unloadable_models_still_get_one_hint(model_repo, tmp_path, capfd):
    import shutil

    repo, path = _copy_model(model_repo, tmp_path)
    path.write_bytes(b"garbage")
    shutil.copytree(repo / "se", repo / "se2")
    config = repo / "se2" / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "se"', 'name: "se2"'))
    code, err = _serve_once(repo, capfd)
    assert code == 2 and "2 model(s)" in err and "se2: version 1" in err, err
    assert one_hint(err).count("re-export the model") == 1, err


def test_serve_refuses_external_data_outside_the_model_folder(model_repo, tmp_path, capfd):
    import onnx

    repo, path = _copy_model(model_repo, tmp_path)
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, location="weights.bin", size_threshold=1024)
    (path.parent / "weights.bin").rename(tmp_path / "weights.bin")   # ../../../weights.bin from the version
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../../../weights.bin"
    path.write_bytes(model.SerializeToString())
    code, err = _serve_once(repo, capfd)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert "cannot load model.onnx" in err and "escapes model directory" in err, err
    one_hint(err)
