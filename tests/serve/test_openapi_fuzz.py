"""The HTTP API fuzzed against its own OpenAPI schema with schemathesis (bounded, 127.0.0.1 only).

For every operation in /openapi.json, schemathesis generates valid requests, deliberately invalid ones,
and valid ones aimed at a real model (`se`, version 1), and checks each answer: never a 5xx, only
documented status codes and content types, bodies that match the documented schemas, and schema-violating
requests refused with a 4xx. The server keeps serving afterwards.

(Driven through schemathesis' Python API with one bounded hypothesis run per operation and mode, rather
than its pytest plugin, whose lazy fixture loader does not support pytest 9.)
"""

from __future__ import annotations

import pytest

from tests.serve.helpers import needs_serve_extra

needs_serve_extra()
schemathesis = pytest.importorskip("schemathesis", reason="needs schemathesis (test extra)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance, negative_data_rejection, not_a_server_error, positive_data_acceptance,
    response_schema_conformance, status_code_conformance,
)
from schemathesis.generation import GenerationMode  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]
EXAMPLES = 8  # per operation and mode: ~16 operations x 3 modes x 8 requests


def run_operation(operation, mode: GenerationMode, path_parameters: dict | None) -> int:
    """Requests sent for one operation in one mode (0 when the mode has nothing to generate).

    Operations whose only inputs are path parameters must also accept every schema-valid request
    (positive_data_acceptance: 2xx, or 404 for a model or version that does not exist): the schema carries
    the server's rules for names and versions. An infer body's validity depends on the model, which no
    schema can say, so those are only held to the checks above.
    """
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    sent = [0]
    checks = CHECKS if len(operation.body) else [*CHECKS, positive_data_acceptance]

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def check(case):
        sent[0] += 1
        case.call_and_validate(checks=checks, timeout=30)

    try:
        check()
    except Unsatisfiable:
        # Negative mode where the schema has nothing that can be violated over HTTP (no body, and path
        # parameters that are free strings).
        assert mode is GenerationMode.NEGATIVE and not len(operation.body), operation.label
    return sent[0]


def test_api_conforms_to_its_schema(server):
    assert server.url.startswith("http://127.0.0.1:")  # loopback only
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=30)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14
    sent = {}
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        real = {k: v for k, v in (("model_name", "se"), ("version", "1")) if k in names}
        runs = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        runs += [(GenerationMode.POSITIVE, real)] if real else []
        sent[operation.label] = sum(run_operation(operation, mode, params) for mode, params in runs)
    assert all(n > 0 for n in sent.values()), sent
    assert sent["POST /v2/models/{model_name}/infer"] >= 3 * EXAMPLES  # valid, invalid and aimed at se


def test_schema_documents_every_kserve_route(server):
    import httpx

    paths = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    for route in ("/v2/health/live", "/v2/health/ready", "/v2", "/v2/models/{model_name}",
                  "/v2/models/{model_name}/versions/{version}", "/v2/models/{model_name}/ready",
                  "/v2/models/{model_name}/infer", "/v2/models/{model_name}/versions/{version}/infer"):
        assert route in paths, route
    body = paths["/v2/models/{model_name}/infer"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "application/octet-stream"}


def test_still_serving_after_the_fuzzing(server):
    import httpx

    assert httpx.get(f"{server.url}/v2/health/ready", timeout=30).status_code == 200


def test_schema_states_the_name_and_version_rules(server):
    """Every model_name and version path parameter carries the pattern the server enforces, and names the
    pattern accepts are never refused as malformed (the server answers 404 for ones it does not have)."""
    import re

    import httpx

    from deploykit.repository import MODEL_NAME_RE

    paths = httpx.get(f"{server.url}/openapi.json", timeout=30).json()["paths"]
    seen = set()
    for path, item in paths.items():
        for operation in item.values():
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "path" and parameter["name"] in ("model_name", "version"):
                    seen.add(parameter["name"])
                    assert parameter["schema"]["pattern"] == (MODEL_NAME_RE.pattern if parameter["name"] ==
                                                              "model_name" else r"^[0-9]{1,18}$"), path
    assert seen == {"model_name", "version"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name in ("a", "Z9", "x.y-z_1", "a" * 128, "0."):
            assert re.fullmatch(MODEL_NAME_RE.pattern, name)
            assert http.get(f"/v2/models/{name}/ready").status_code == 404, name
        for version in ("0", "000000000000000007", "999999999999999999"):
            assert http.get(f"/v2/models/se/versions/{version}/ready").status_code == 404, version
