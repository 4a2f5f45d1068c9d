"""The KServe v2 gRPC service (`inference.GRPCInferenceService`), as Triton's clients speak it.

The service and its messages are Triton's own `grpc_service.proto`, compiled in the tritonclient package
(`tritonclient.grpc.service_pb2` / `service_pb2_grpc`), so Triton's gRPC client and perf_analyzer
(`-i grpc`) work unchanged. It runs on grpc.aio in the same event loop as the HTTP server and shares
everything behind the wire with it: the loaded repository, the schedulers (queues, batching, limits),
the request checks (`protocol.check_tensor_header`, `models.Model.check_request`) and the statistics,
through `inference.run_request`. The largest message accepted is the HTTP body limit (--max-body-size).

Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig,
ModelStatistics, RepositoryIndex, ModelInfer (raw_input_contents or typed contents) and ModelStreamInfer
(one response per request, in completion order, matched by `id`). Shared memory, model load/unload,
trace and log settings answer UNIMPLEMENTED, as the HTTP routes for them do not exist either.

Errors use the HTTP status mapped to gRPC codes: 400 INVALID_ARGUMENT, 404 NOT_FOUND, 413
RESOURCE_EXHAUSTED, 500 INTERNAL, 503 UNAVAILABLE, with the same message as the HTTP error body.
"""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np

from deploykit import __version__
from deploykit.serve.inference import accounted, run_request
from deploykit.serve.model_config import config_to_dict
from deploykit.serve.protocol import (DATATYPES, InferRequest, ProtocolError, RequestedOutput, check_tensor_header,
                                     datatype_of, tensor_from_raw, tensor_from_values)

SERVER_NAME = "deploykit"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "statistics", "model_repository"]

# KServe datatype -> the typed-contents field that carries it (FP16 has none: raw only, as in Triton).
CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
                  "FP32": "fp32_contents", "FP64": "fp64_contents"}


def _modules():
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    return service_pb2, service_pb2_grpc


def status_code(status: int):
    import grpc

    return {400: grpc.StatusCode.INVALID_ARGUMENT, 404: grpc.StatusCode.NOT_FOUND,
            413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
            503: grpc.StatusCode.UNAVAILABLE}.get(status, grpc.StatusCode.INTERNAL)


RAW_INPUT_FIELD = 7    # ModelInferRequest.raw_input_contents in grpc_service.proto


class InferCall:
    """A received ModelInferRequest: the message without its raw tensors, and the tensors as views into
    the received bytes (`parse_infer_call`)."""

    __slots__ = ("message", "raw")

    def __init__(self, message, raw: list[memoryview]):
        self.message = message
        self.raw = raw


def parse_infer_call(data: bytes) -> InferCall:
    """Deserialize a ModelInferRequest, leaving raw_input_contents in the received buffer.

    protobuf would copy each raw tensor twice (into the parsed message, then out as bytes); here the
    top-level fields are walked by their wire format, field 7 is kept as views, and the rest (a few
    hundred bytes) is parsed by protobuf. Malformed bytes raise, which gRPC answers as a failed call.
    """
    pb, _pb_grpc = _modules()
    view, pos, rest, raw = memoryview(data), 0, [], []
    while pos < len(view):
        start = pos
        key, pos = _read_varint(view, pos)
        field, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _read_varint(view, pos)
            end = pos + length
        elif wire == 0:
            _, end = _read_varint(view, pos)
        elif wire in (1, 5):
            end = pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if end > len(view):
            raise ValueError("truncated ModelInferRequest")
        if field == RAW_INPUT_FIELD and wire == 2:
            raw.append(view[pos:end])
        else:
            rest.append(view[start:end])
        pos = end
    return InferCall(pb.ModelInferRequest.FromString(b"".join(rest)), raw)


def _read_varint(view: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(view) or shift > 63:
            raise ValueError("malformed varint in ModelInferRequest")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_request(request, raw=None) -> InferRequest:
    """A ModelInferRequest as the protocol-neutral InferRequest, checked like an HTTP body.

    Raises:
        ProtocolError: unknown datatype, bad shape, contents that do not match the shape or the type.
    """
    if not request.inputs:
        raise ProtocolError("the request needs a non-empty 'inputs' list")
    raw = request.raw_input_contents if raw is None else raw
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; give raw "
                            "contents for every input or for none")
    inputs, seen = [], set()
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise ProtocolError(f"inputs[{index}] needs a 'name'")
        if name in seen:
            raise ProtocolError(f"input '{name}' is given twice")
        seen.add(name)
        if "shared_memory_region" in tensor.parameters:
            raise ProtocolError("shared-memory tensors are not supported by this server; send the data in the request")
        _dtype, dims = check_tensor_header(name, tensor.datatype, list(tensor.shape))
        if raw:
            if tensor.HasField("contents"):
                raise ProtocolError(f"input '{name}' has both typed contents and raw_input_contents")
            inputs.append(tensor_from_raw(name, tensor.datatype, dims, memoryview(raw[index]).cast("B")))
            continue
        field = CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise ProtocolError(f"input '{name}' is {tensor.datatype}, which has no typed contents field; send it in "
                                "raw_input_contents")
        used = [f.name for f, _ in tensor.contents.ListFields()]
        if any(f != field for f in used):
            raise ProtocolError(f"input '{name}' is {tensor.datatype}, so its values go in contents.{field}, not "
                                f"{', '.join(f for f in used if f != field)}")
        inputs.append(tensor_from_values(name, tensor.datatype, dims, list(getattr(tensor.contents, field))))
    outputs, seen = [], set()
    for item in request.outputs:
        if item.name in seen:
            raise ProtocolError(f"output '{item.name}' is requested twice")
        seen.add(item.name)
        if "classification" in item.parameters:
            raise ProtocolError("the classification extension is not supported by this server")
        if "shared_memory_region" in item.parameters:
            raise ProtocolError("shared-memory tensors are not supported by this server")
        outputs.append(RequestedOutput(item.name))
    return InferRequest(inputs=inputs, outputs=outputs or None, id=request.id or None)


RAW_OUTPUT_FIELD = 6   # ModelInferResponse.raw_output_contents in grpc_service.proto
STREAM_RESPONSE_FIELD = 2   # ModelStreamInferResponse.infer_response


class RawResponse:
    """A ModelInferResponse whose raw output tensors are kept as arrays until the wire.

    Building the message would copy each tensor three times (tobytes, into the message, out when it is
    serialized); `serialize` writes the message without them and appends each as the length-delimited
    field 6 that protobuf would write, copying it once. Protobuf merges repeated fields wherever they
    appear, so the bytes parse as the same message (the tests parse them with Triton's client).
    """

    def __init__(self, message, arrays: list[np.ndarray]):
        self.message = message
        self.arrays = arrays

    def _parts(self) -> list:
        parts = [self.message.SerializeToString()]
        for array in self.arrays:
            parts += [_varint(RAW_OUTPUT_FIELD << 3 | 2), _varint(array.nbytes), memoryview(array).cast("B")]
        return parts

    def serialize(self) -> bytes:
        return b"".join(self._parts())

    def serialize_streamed(self) -> bytes:
        """The ModelStreamInferResponse that carries this response (field 2), with one copy of each tensor."""
        parts = self._parts()
        size = sum(len(p) for p in parts)
        return b"".join([_varint(STREAM_RESPONSE_FIELD << 3 | 2), _varint(size), *parts])


def serialize_stream_response(response) -> bytes:
    """ModelStreamInfer's serializer: a RawResponse (an answer) or a ModelStreamInferResponse (an error)."""
    if isinstance(response, RawResponse):
        return response.serialize_streamed()
    return response.SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def encode_response(pb, model_name: str, version: str, request_id: str, results: dict[str, np.ndarray]
                    ) -> RawResponse:
    """Outputs as Triton sends them over gRPC: metadata in `outputs`, bytes in `raw_output_contents`."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=version, id=request_id)
    arrays = []
    for name, array in results.items():
        datatype = datatype_of(array.dtype)
        response.outputs.add(name=name, datatype=datatype, shape=[int(d) for d in array.shape])
        arrays.append(np.ascontiguousarray(array, dtype=DATATYPES[datatype]))
    return RawResponse(response, arrays)


def make_servicer(repository, state: dict):
    """The servicer over a loaded repository; `state["ready"]` is the server's readiness (shared with HTTP)."""
    pb, pb_grpc = _modules()
    from google.protobuf import json_format

    async def abort(context, exc: ProtocolError):
        await context.abort(status_code(exc.status), exc.message)

    class Service(pb_grpc.GRPCInferenceServiceServicer):
        async def ServerLive(self, request, context):
            return pb.ServerLiveResponse(live=True)

        async def ServerReady(self, request, context):
            return pb.ServerReadyResponse(ready=bool(state["ready"]))

        async def ModelReady(self, request, context):
            try:
                repository.get(request.name, request.version or None)
            except ProtocolError as exc:
                if exc.status == 400:
                    await abort(context, exc)
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=bool(state["ready"]))

        async def ServerMetadata(self, request, context):
            return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

        async def ModelMetadata(self, request, context):
            try:
                mv = repository.get(request.name, request.version or None)
            except ProtocolError as exc:
                await abort(context, exc)
            meta = mv.model.metadata()
            if request.version:
                meta["versions"] = [str(mv.version)]
            return json_format.ParseDict(meta, pb.ModelMetadataResponse())

        async def ModelConfig(self, request, context):
            try:
                mv = repository.get(request.name, request.version or None)
            except ProtocolError as exc:
                await abort(context, exc)
            # Through the JSON form (what HTTP returns): the config was parsed with the schema module loaded
            # from its file, a different Python class from service_pb2's for the same message.
            response = pb.ModelConfigResponse()
            json_format.ParseDict(config_to_dict(mv.model.config) | {"name": mv.model.name}, response.config)
            return response

        async def ModelStatistics(self, request, context):
            try:
                if not request.name:
                    entries = [mv.stats.as_dict(mv.model.name, str(mv.version)) for mv in repository.versions()]
                elif request.version:
                    mv = repository.get(request.name, request.version)
                    entries = [mv.stats.as_dict(request.name, str(mv.version))]
                else:
                    repository.get(request.name)
                    model = repository.models[request.name]
                    entries = [mv.stats.as_dict(request.name, str(v)) for v, mv in sorted(model.versions.items())]
            except ProtocolError as exc:
                await abort(context, exc)
            return json_format.ParseDict({"model_stats": entries}, pb.ModelStatisticsResponse())

        async def RepositoryIndex(self, request, context):
            rows = repository.index()
            if request.ready:
                rows = [r for r in rows if r["state"] == "READY"]
            return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**r) for r in rows])

        async def ModelInfer(self, request, context):
            try:
                return await self._infer(request)
            except ProtocolError as exc:
                await abort(context, exc)

        async def ModelStreamInfer(self, request_iterator, context):
            # Requests of one stream run concurrently (the scheduler may batch them); each response goes
            # out when ready, carrying its request's id, as Triton's stream does.
            responses: asyncio.Queue = asyncio.Queue()
            running: set[asyncio.Task] = set()

            async def one(call):
                request = call.message
                try:
                    answer = await self._infer(call)   # a RawResponse, written by serialize_stream_response
                except Exception as exc:  # noqa: BLE001 - every request on the stream gets an answer
                    message = exc.message if isinstance(exc, ProtocolError) else \
                        f"internal error: {type(exc).__name__}: {str(exc)[:300]}"
                    answer = pb.ModelStreamInferResponse(
                        error_message=message,
                        infer_response=pb.ModelInferResponse(model_name=request.model_name, id=request.id))
                await responses.put(answer)

            async def read():
                async for request in request_iterator:
                    task = asyncio.get_running_loop().create_task(one(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.gather(*running, return_exceptions=True)
                await responses.put(None)

            reader = asyncio.get_running_loop().create_task(read())
            try:
                while (answer := await responses.get()) is not None:
                    yield answer
                await reader
            finally:
                if not reader.done():
                    reader.cancel()
                for task in list(running):
                    task.cancel()

        async def _infer(self, call: InferCall):
            request = call.message
            mv = repository.get(request.model_name, request.model_version or None)
            with accounted(mv) as outcome:
                parsed = decode_request(request, call.raw)
                results = await run_request(mv, parsed, outcome)
                return encode_response(pb, mv.model.name, str(mv.version), request.id, results)

    return Service()


UNARY = {  # method -> (request, response) message names in grpc_service.proto
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelConfig": ("ModelConfigRequest", "ModelConfigResponse"),
    "ModelStatistics": ("ModelStatisticsRequest", "ModelStatisticsResponse"),
    "RepositoryIndex": ("RepositoryIndexRequest", "RepositoryIndexResponse"),
}


def _handlers(servicer):
    """The service's method handlers, as service_pb2_grpc registers them, except that the inference
    requests (unary and streamed) are read by parse_infer_call and their responses written from
    RawResponse (one copy of each tensor each way, as on the HTTP path). Methods left out (shared
    memory, load/unload, trace, log settings) answer UNIMPLEMENTED."""
    import grpc

    pb, _pb_grpc = _modules()
    handlers = {name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name),
                                                          request_deserializer=getattr(pb, req).FromString,
                                                          response_serializer=getattr(pb, resp).SerializeToString)
                for name, (req, resp) in UNARY.items()}
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer, request_deserializer=parse_infer_call, response_serializer=RawResponse.serialize)
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer, request_deserializer=parse_infer_call,
        response_serializer=serialize_stream_response)
    return grpc.method_handlers_generic_handler("inference.GRPCInferenceService", handlers)


def create_grpc_server(repository, state: dict, host: str, port: int, max_message_bytes: int):
    """A grpc.aio server with the service added and bound to host:port (call inside the event loop).

    Returns:
        (server, bound port).

    Raises:
        UserInputError: the address cannot be bound (in use, or not an address of this machine).
    """
    import grpc

    from deploykit.errors import UserInputError

    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),   # a second server on the same port must fail, not share it silently
    ])
    server.add_generic_rpc_handlers((_handlers(make_servicer(repository, state)),))
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(target)
    except RuntimeError:
        bound = 0
    if not bound:
        raise UserInputError(f"gRPC cannot listen on {target}: the port is in use or the address is not one of this machine",
                             hint="stop the other server or pass another --grpc-port (0 picks a free one, "
                                  "--no-grpc turns gRPC off)")
    return server, bound


@contextlib.asynccontextmanager
async def running(server, grace_s: float):
    """Serve until the block exits, then stop with `grace_s` for calls in flight."""
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace_s)
