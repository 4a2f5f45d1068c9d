"""The FastAPI application: KServe v2 routes over a loaded `Repository`.

Routes (Triton's extensions in brackets):
    GET  /v2/health/live, /v2/health/ready, /v2
    GET  /v2/models/{name}[/versions/{v}]                metadata
    GET  /v2/models/{name}[/versions/{v}]/ready
    GET  /v2/models/{name}[/versions/{v}]/config         [model_configuration]
    GET  /v2/models/stats, /v2/models/{name}[/versions/{v}]/stats   [statistics]
    POST /v2/repository/index                            [model_repository, read-only]
    POST /v2/models/{name}[/versions/{v}]/infer          JSON or [binary_tensor_data]
    GET  /metrics                                        Prometheus text, Triton's metric names

Every error is `{"error": "..."}` with a 4xx/5xx status: 400 malformed or mismatched requests and bad
names, 404 unknown models, versions and routes, 413 bodies over the limit, 415 unknown content encodings,
503 a full queue, a model that cannot run here, or a server shutting down.

The infer routes read the raw body themselves (JSON or JSON header + binary tensors), so FastAPI never
parses it; the OpenAPI schema still documents the JSON form with the models below.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from deploykit import __version__
from deploykit.errors import UserInputError
from deploykit.repository import MODEL_NAME_RE
from deploykit.serve.inference import accounted, run_request
from deploykit.serve.metrics import add_metrics_route
from deploykit.serve.model_config import config_to_dict
from deploykit.serve.models import Repository
from deploykit.serve.protocol import (DATATYPES, HEADER_LENGTH, ProtocolError, encode_infer_response, is_decimal,
                                     json_values, parse_infer_request)
from deploykit.serve.settings import ServeSettings

SERVER_NAME = "deploykit"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]
# Bytes read and thrown away after a body passes the limit, so the client can finish sending and read
# the 413 instead of a reset connection; past this the connection is simply closed.
DRAIN_BYTES = 16 << 20
# Above these, request decoding and response encoding run in a worker thread (about 1 ms of Python each).
OFFLOAD_BYTES = 256 << 10
OFFLOAD_JSON_VALUES = 32 << 10
# How many bodies may be read and decoded at once, in bytes of body: decoding costs about the body plus the
# tensor, so this bounds that memory; a request past it is answered 503 (retry later), as a full queue is.
DECODE_BUDGET_BODIES = 4
VERSION_PATTERN = r"^[0-9]{1,18}$"
log = logging.getLogger("uvicorn.error")


class DecodeBudget:
    """Bytes of request bodies being read and decoded at once. Taken and given back on the event loop only,
    so no lock is needed; one request is always let through when none is in flight, whatever its size."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Raises ProtocolError (503) when `size` more bytes would pass the limit."""
        if self.used and self.used + size > self.limit:
            raise ProtocolError(f"the server is decoding {self.used / 2**20:.1f} MiB of other requests and this "
                                f"body would pass its {self.limit / 2**20:.0f} MiB budget; retry later", status=503)
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


# ------------------------------------------------------------------------------- OpenAPI documents
class ErrorBody(BaseModel):
    error: str


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class RequestInput(BaseModel):
    name: str = Field(min_length=1)
    shape: list[Annotated[int, Field(ge=0)]]
    datatype: Literal[tuple(DATATYPES)]  # type: ignore[valid-type]
    parameters: dict[str, Any] | None = Field(
        default=None, description="`binary_data_size`: bytes of this tensor after the JSON header")
    data: list[Any] | float | int | bool | None = Field(default=None, description="row-major values, flat or nested")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(default=None, description="`binary_data`: true for raw bytes")


class InferenceRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="`binary_data_output`: all outputs raw")
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[ResponseOutput]


class IndexEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str | None = None


class Statistics(BaseModel):
    model_stats: list[dict[str, Any]]


def _errors(*codes: int) -> dict:
    return {code: {"model": ErrorBody} for code in codes}


MODEL_ERRORS = _errors(400, 404, 503)
INFER_ERRORS = _errors(400, 404, 413, 415, 500, 503)


# ----------------------------------------------------------------------------------------- the app
def create_app(repository: Repository, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI application serving `repository` (already loaded; schedulers start with the app)."""
    settings = settings or ServeSettings()
    state = {"ready": False}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        repository.start()
        state["ready"] = True
        try:
            yield
        finally:
            state["ready"] = False
            await repository.stop(settings.graceful_timeout_s)

    app = FastAPI(title="deploykit serve", version=__version__, lifespan=lifespan,
                  description="KServe v2 inference protocol with Triton's binary tensor extension.",
                  docs_url="/docs", redoc_url=None)
    app.state.serving = state
    app.state.repository = repository
    budget = DecodeBudget(settings.decode_budget_bytes or DECODE_BUDGET_BODIES * settings.max_body_bytes)
    app.state.decode_budget = budget

    # --------------------------------------------------------------------------- error bodies
    @app.exception_handler(ProtocolError)
    async def _protocol_error(_request, exc: ProtocolError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request, exc: Exception):
        # A bug, not a bad request: answered with the protocol's error body (Starlette re-raises it after
        # sending, so uvicorn still logs the traceback).
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {str(exc)[:300]}"}, status_code=500)

    @app.exception_handler(ClientDisconnect)
    async def _disconnected(request, _exc: ClientDisconnect):
        # Nobody is left to answer; one line in the log instead of an ASGI traceback.
        peer = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning("%s disconnected before sending the whole body of %s %s", peer, request.method,
                    request.url.path)
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": f"invalid request: {where}: {first.get('msg', 'invalid')}"}, status_code=400)

    # --------------------------------------------------------------------------------- health
    @app.get("/v2/health/live", response_model=Live, tags=["health"])
    async def live():
        return {"live": True}

    @app.get("/v2/health/ready", response_model=Ready, responses=_errors(503), tags=["health"])
    async def ready():
        if not state["ready"]:
            return JSONResponse({"error": "the server is starting or shutting down"}, status_code=503)
        return {"ready": True}

    @app.get("/v2", response_model=ServerMetadata, tags=["metadata"])
    async def server_metadata():
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    # ----------------------------------------------------------------- statistics (before {name})
    @app.get("/v2/models/stats", response_model=Statistics, tags=["statistics"])
    async def all_stats():
        return {"model_stats": [mv.stats.as_dict(mv.model.name, str(mv.version)) for mv in repository.versions()]}

    @app.get("/v2/models/{model_name}/stats", response_model=Statistics, responses=MODEL_ERRORS, tags=["statistics"])
    async def model_stats(model_name: str):
        repository.get(model_name)
        model = repository.models[model_name]
        return {"model_stats": [mv.stats.as_dict(model_name, str(v)) for v, mv in sorted(model.versions.items())]}

    @app.get("/v2/models/{model_name}/versions/{version}/stats", response_model=Statistics, responses=MODEL_ERRORS,
             tags=["statistics"])
    async def version_stats(model_name: str, version: str):
        mv = repository.get(model_name, version)
        return {"model_stats": [mv.stats.as_dict(model_name, str(mv.version))]}

    # ------------------------------------------------------------------------------- metadata
    @app.get("/v2/models/{model_name}", response_model=ModelMetadata, responses=MODEL_ERRORS, tags=["metadata"])
    async def model_metadata(model_name: str):
        return repository.get(model_name).model.metadata()

    @app.get("/v2/models/{model_name}/versions/{version}", response_model=ModelMetadata, responses=MODEL_ERRORS,
             tags=["metadata"])
    async def version_metadata(model_name: str, version: str):
        mv = repository.get(model_name, version)
        return {**mv.model.metadata(), "versions": [str(mv.version)]}

    def _model_ready(model_name: str, version: str | None):
        repository.get(model_name, version)
        if not state["ready"]:  # clients read readiness from the status code
            raise ProtocolError("the server is starting or shutting down", status=503)
        return {"name": model_name, "ready": True}

    @app.get("/v2/models/{model_name}/ready", response_model=ModelReady, responses=MODEL_ERRORS, tags=["health"])
    async def model_ready(model_name: str):
        return _model_ready(model_name, None)

    @app.get("/v2/models/{model_name}/versions/{version}/ready", response_model=ModelReady, responses=MODEL_ERRORS,
             tags=["health"])
    async def version_ready(model_name: str, version: str):
        return _model_ready(model_name, version)

    @app.get("/v2/models/{model_name}/config", response_model=dict[str, Any], responses=MODEL_ERRORS,
             tags=["metadata"])
    async def model_config(model_name: str):
        return _config_json(repository.get(model_name))

    @app.get("/v2/models/{model_name}/versions/{version}/config", response_model=dict[str, Any],
             responses=MODEL_ERRORS, tags=["metadata"])
    async def version_config(model_name: str, version: str):
        return _config_json(repository.get(model_name, version))

    @app.post("/v2/repository/index", response_model=list[IndexEntry], tags=["repository"])
    async def repository_index():
        return repository.index()

    # -------------------------------------------------------------------------------- inference
    async def _infer(request: Request, model_name: str, version: str | None, header_length: str | None):
        mv = repository.get(model_name, version)
        with accounted(mv) as outcome:
            declared = request.headers.get("content-length")
            encoded = request.headers.get("content-encoding", "identity").strip().lower() != "identity"
            reserved = (int(declared) if declared is not None and is_decimal(declared) and not encoded
                        and int(declared) <= settings.max_body_bytes else settings.max_body_bytes)
            budget.take(reserved)
            try:
                body = await _read_body(request, settings.max_body_bytes, header_length)
                body = _decode(body, request.headers.get("content-encoding"), settings.max_body_bytes)
                # Decoding and encoding JSON tensors is seconds of Python for a large batch; off the event loop,
                # other requests (health probes included) are answered meanwhile.
                if len(body) > OFFLOAD_BYTES:
                    parsed = await run_in_threadpool(parse_infer_request, body, header_length)
                else:
                    parsed = parse_infer_request(body, header_length)
                del body
            finally:
                budget.give(reserved)
            results = await run_request(mv, parsed, outcome)
            if json_values(results, parsed) > OFFLOAD_JSON_VALUES:
                parts, head = await run_in_threadpool(encode_infer_response, model_name, str(mv.version), results,
                                                      parsed)
            else:
                parts, head = encode_infer_response(model_name, str(mv.version), results, parsed)
        if head is None:
            return PartsResponse(parts, "application/json")
        return PartsResponse(parts, "application/octet-stream", {HEADER_LENGTH: str(head)})

    ok_response = {"description": "outputs (JSON, or JSON header + raw tensors)", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceResponse"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    infer_doc = {"responses": {200: ok_response, **INFER_ERRORS}, "tags": ["inference"], "response_class": Response}

    @app.post("/v2/models/{model_name}/infer", **infer_doc)
    async def infer(request: Request, model_name: str,
                    header_length: str | None = Header(default=None, alias=HEADER_LENGTH)):
        return await _infer(request, model_name, None, header_length)

    @app.post("/v2/models/{model_name}/versions/{version}/infer", **infer_doc)
    async def infer_version(request: Request, model_name: str, version: str,
                            header_length: str | None = Header(default=None, alias=HEADER_LENGTH)):
        return await _infer(request, model_name, version, header_length)

    add_metrics_route(app, repository, settings.metrics_port)
    app.openapi = lambda: _openapi(app)
    return app


class PartsResponse(Response):
    """A response whose body is sent as several parts (JSON header, then raw tensors) without joining them."""

    def __init__(self, parts: list[bytes], media_type: str, headers: dict[str, str] | None = None):
        self.parts = parts
        total = sum(len(p) for p in parts)
        super().__init__(None, media_type=media_type, headers={**(headers or {}), "content-length": str(total)})

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        last = len(self.parts) - 1
        for i, part in enumerate(self.parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < last})


def _config_json(mv) -> dict:
    return config_to_dict(mv.model.config) | {"name": mv.model.name}


async def _read_body(request: Request, limit: int, header_length: str | None = None):
    """The request body, refused with 413 past `limit` bytes.

    With a Content-Length (what tritonclient sends) the body is written straight into one buffer placed so
    that the byte after the JSON header is 64-byte aligned: the first binary tensor can then be used where
    it lies, with no join and no aligning copy (see protocol._aligned).
    """
    declared = request.headers.get("content-length")
    if declared is not None and not is_decimal(declared):
        raise ProtocolError("Content-Length must be a non-negative integer")
    if declared is not None and int(declared) <= limit:
        size = int(declared)
        split = int(header_length) if header_length and is_decimal(header_length) else 0
        buffer = np.empty(size + 64, dtype=np.uint8)
        start = -(buffer.ctypes.data + split) % 64
        view = memoryview(buffer)
        end = start
        async for chunk in request.stream():
            if end + len(chunk) > start + size:
                raise ProtocolError(f"the body is longer than its Content-Length ({size})")
            view[end:end + len(chunk)] = chunk
            end += len(chunk)
        return view[start:end]
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit + DRAIN_BYTES:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit or (declared is not None and int(declared) > limit):
        raise ProtocolError(f"the request body is over the {limit}-byte limit (--max-body-size)", status=413)
    return b"".join(chunks)


def _decode(body, encoding: str | None, limit: int):
    """Undo `Content-Encoding: gzip|deflate` (as tritonclient sends it) without inflating past the limit."""
    if not encoding or encoding.strip().lower() == "identity":
        return body
    kind = encoding.strip().lower()
    wbits = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}.get(kind)
    if wbits is None:
        raise ProtocolError(f"Content-Encoding '{encoding[:40]}' is not supported (use gzip or deflate)", status=415)
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {kind} body cannot be decompressed: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise ProtocolError(f"the decompressed body is over the {limit}-byte limit (--max-body-size)", status=413)
    return out


def _document_path_rules(operation: dict) -> None:
    """Put the server's rules for model names and versions into the schema (a pattern), so every request
    the schema calls valid gets past them (to 200, or 404 for a model or version that does not exist)."""
    for parameter in operation.get("parameters", ()):
        if parameter.get("in") != "path":
            continue
        schema = parameter.setdefault("schema", {})
        if parameter.get("name") == "model_name":
            schema["pattern"] = MODEL_NAME_RE.pattern
        elif parameter.get("name") == "version":
            schema["pattern"] = VERSION_PATTERN


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema plus the infer request body, which the handlers read raw."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (InferenceRequest, InferenceResponse):
        doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(doc.pop("$defs", {}))
        components[model.__name__] = doc
    body = {"required": True, "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                     "description": f"JSON header of {HEADER_LENGTH} bytes, then raw tensors"}}}
    for path, item in schema.get("paths", {}).items():
        if path.endswith("/infer"):
            item["post"]["requestBody"] = body
        for operation in item.values():
            _document_path_rules(operation)
    app.openapi_schema = schema
    return schema
