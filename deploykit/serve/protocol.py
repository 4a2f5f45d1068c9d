"""KServe v2 inference requests and responses: JSON tensors and Triton's binary tensor extension.

A request body is either one JSON object, or (binary extension) a JSON header of
`Inference-Header-Content-Length` bytes followed by the raw bytes of every input whose `parameters` carry
`binary_data_size`, in the order those inputs appear in the header. Responses mirror it: outputs asked for
in binary (`"parameters": {"binary_data": true}` per output, or `"binary_data_output": true` for the
request) are appended after the JSON header, whose length goes in the same response header.

Raw tensor bytes are little-endian and row-major, as Triton sends them. Nothing here knows the model:
`deploykit.serve.models` checks the decoded tensors against the model's inputs.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass, field

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
# numpy refuses more dims than this; a request with more is refused as a bad shape, not a server error.
MAX_RANK = 32

# KServe v2 datatype -> numpy dtype (little-endian, as the binary extension lays tensors out).
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_BY_KIND = {(dt.kind, dt.itemsize): name for name, dt in DATATYPES.items()}


class ProtocolError(Exception):
    """A request the server refuses; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def datatype_of(dtype: np.dtype) -> str:
    """The KServe datatype name of a numpy dtype ("FP32" for float32)."""
    dtype = np.dtype(dtype)
    name = _BY_KIND.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise ProtocolError(f"numpy type {dtype} has no KServe v2 datatype", status=500)
    return name


def triton_to_kserve(type_name: str) -> str:
    """`TYPE_FP32` (config.pbtxt) -> `FP32` (the wire); TYPE_STRING is BYTES."""
    bare = type_name.removeprefix("TYPE_")
    return "BYTES" if bare == "STRING" else bare


@dataclass
class InferInput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None   # None: follow the request's binary_data_output


@dataclass
class InferRequest:
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None   # None: every output of the model
    id: str | None = None
    binary_output: bool = False
    parameters: dict = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.inputs[0].shape[0]) if self.inputs and self.inputs[0].shape else 1


def _int(value, what: str, *, minimum: int = 0) -> int:
    # bool is an int in Python but never a valid size or dim on the wire.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ProtocolError(f"{what} must be an integer >= {minimum}, got {json.dumps(value)[:40]}")
    return value


def _dict(value, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return value


def _bool(params: dict, key: str, what: str) -> bool | None:
    value = params.get(key)
    if value is not None and not isinstance(value, bool):
        raise ProtocolError(f"{what} parameter '{key}' must be true or false")
    return value


def is_decimal(text: str) -> bool:
    """An ASCII decimal integer that fits int64. str.isdigit alone would take '²', which int() rejects."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def parse_header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from `Inference-Header-Content-Length`, checked against the body."""
    if value is None:
        return None
    text = value.strip()
    if not is_decimal(text):
        raise ProtocolError(f"{HEADER_LENGTH} must be a non-negative integer, got '{value[:40]}'")
    length = int(text)
    if length > body_size:
        raise ProtocolError(f"{HEADER_LENGTH} is {length} but the body has only {body_size} bytes")
    return length


def parse_infer_request(body: bytes, header_length: str | None = None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header + binary tensors).

    Args:
        body: the whole (decompressed) request body.
        header_length: the `Inference-Header-Content-Length` header, None when absent.

    Raises:
        ProtocolError: malformed JSON, unknown datatype, sizes that do not add up, unsupported features.
    """
    split = parse_header_length(header_length, len(body))
    view = memoryview(body)
    head, binary = (view, view[len(view):]) if split is None else (view[:split], view[split:])
    text, lifted = lift_numeric_data(head)
    constants = []
    try:
        doc = json.loads(text, parse_constant=lambda name: constants.append(name) or float(name))
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the request is not valid JSON: {str(exc)[:200]}") from None
    finally:
        del text
    context = _JsonContext(lifted, bool(constants))
    if not isinstance(doc, dict):
        raise ProtocolError("the request must be a JSON object with an 'inputs' list")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError("the request needs a non-empty 'inputs' list")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError("'id' must be a string")
    params = _dict(doc.get("parameters"), "the request's 'parameters'")
    binary_output = bool(_bool(params, "binary_data_output", "the request's"))

    inputs, offset, seen = [], 0, set()
    for index, raw in enumerate(raw_inputs):
        tensor, offset = _parse_input(raw, index, binary, offset, context)
        if tensor.name in seen:
            raise ProtocolError(f"input '{tensor.name}' is given twice")
        seen.add(tensor.name)
        inputs.append(tensor)
    if offset != len(binary):
        raise ProtocolError(f"the binary part of the body has {len(binary)} bytes but the inputs' binary_data_size "
                            f"add up to {offset}")
    return InferRequest(inputs=inputs, outputs=_parse_outputs(doc.get("outputs")), id=request_id,
                        binary_output=binary_output, parameters=params)


def check_tensor_header(name: str, datatype: str, shape) -> tuple[np.dtype, tuple[int, ...]]:
    """An input's datatype and shape checked the same way for every front-end: its numpy dtype and dims."""
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise ProtocolError(f"input '{name}' has datatype '{datatype[:20]}', which this server does not take "
                            f"(it takes {', '.join(DATATYPES)})")
    if len(shape) > MAX_RANK:
        raise ProtocolError(f"input '{name}' has {len(shape)} dims; this server takes at most {MAX_RANK}")
    dims = tuple(_int(d, f"input '{name}' shape entries") for d in shape)
    if any(d >= 1 << 62 for d in dims):  # numpy's own limit on a dim; no real tensor comes near it
        raise ProtocolError(f"input '{name}' has shape {list(dims)}, with a dim too large for any tensor")
    return dtype, dims


def tensor_from_raw(name: str, datatype: str, dims: tuple[int, ...], raw) -> InferInput:
    """An input from its raw little-endian bytes (binary extension, gRPC raw_input_contents)."""
    dtype = DATATYPES[datatype]
    need = math.prod(dims) * dtype.itemsize
    if len(raw) != need:
        raise ProtocolError(f"input '{name}' has {len(raw)} bytes of raw data, but shape {list(dims)} of {datatype} "
                            f"needs {need} bytes")
    return InferInput(name, datatype, dims, _aligned(np.frombuffer(raw, dtype=dtype)).reshape(dims))


def tensor_from_values(name: str, datatype: str, dims: tuple[int, ...], values: list) -> InferInput:
    """An input from a flat list of values (JSON `data`, gRPC typed contents), checked against its type."""
    array = _json_array(values, name, datatype, DATATYPES[datatype])
    count = math.prod(dims)
    if array.size != count:
        raise ProtocolError(f"input '{name}' has {array.size} values, but shape {list(dims)} needs {count}")
    return InferInput(name, datatype, dims, array.reshape(dims))


def _parse_input(raw, index: int, binary: memoryview, offset: int,
                 context: _JsonContext | None = None) -> tuple[InferInput, int]:
    if not isinstance(raw, dict):
        raise ProtocolError(f"inputs[{index}] must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"inputs[{index}] needs a 'name' string")
    datatype = raw.get("datatype")
    if not isinstance(datatype, str):
        raise ProtocolError(f"input '{name}' needs a 'datatype' string such as \"FP32\"")
    shape = raw.get("shape")
    if not isinstance(shape, list):
        raise ProtocolError(f"input '{name}' needs a 'shape' list")
    dtype, dims = check_tensor_header(name, datatype, shape)
    count = math.prod(dims)
    params = _dict(raw.get("parameters"), f"input '{name}' parameters")
    if "shared_memory_region" in params:
        raise ProtocolError("shared-memory tensors are not supported by this server; send the data in the body")
    size = params.get("binary_data_size")
    if size is not None:
        size = _int(size, f"input '{name}' binary_data_size")
        if "data" in raw:
            raise ProtocolError(f"input '{name}' has both 'data' and binary_data_size")
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input '{name}' has binary_data_size {size}, but shape {list(dims)} of {datatype} "
                                f"needs {count * dtype.itemsize} bytes")
        if offset + size > len(binary):
            raise ProtocolError(f"input '{name}' needs {size} bytes of binary data at offset {offset}, but the "
                                f"binary part of the body has only {len(binary)} bytes")
        return tensor_from_raw(name, datatype, dims, binary[offset:offset + size]), offset + size
    if "data" not in raw:
        raise ProtocolError(f"input '{name}' has neither 'data' nor a binary_data_size parameter")
    context = context or _JsonContext([], False)
    data = raw["data"]
    array = context.lifted_array(data, name, datatype, dtype)
    if array is None:
        if isinstance(data, str) and data.startswith(_SENTINEL):
            data = context.lifted_list(data)
        if not isinstance(data, list):
            data = [data]
        array = _json_array(data, name, datatype, dtype, context.saw_constants)
    if array.size != count:
        raise ProtocolError(f"input '{name}' has {array.size} values, but shape {list(dims)} needs {count}")
    return InferInput(name, datatype, dims, array.reshape(dims)), offset


def _aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """The array itself when its data is `alignment`-byte aligned, else an aligned copy.

    A tensor inside the body starts wherever the JSON header happens to end. ONNX Runtime's CPU kernels
    take other code paths for unaligned data and round differently (1 ulp on a pooled SE block), so the
    same tensor would give different bits depending on the header's length; one copy makes results
    independent of it and equal to a local session's.
    """
    if array.ctypes.data % alignment == 0:
        return array
    raw = np.empty(array.nbytes + alignment, dtype=np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + array.nbytes].view(array.dtype)
    out[...] = array
    return out


# ------------------------------------------------------------------------------ JSON tensor data
# Python's json makes a 24-byte float object (plus an 8-byte list slot) of every number: a 60 MiB body of
# short numbers became 1.2 GB. Numeric `"data": [...]` lists are therefore cut out of the JSON text before it
# is parsed and decoded a 1 MiB chunk at a time into the tensor's array (same rules, same values): the cost
# is the text plus the tensor.
_SENTINEL = f"\x00deploykit-data-{uuid.uuid4().hex}:"   # a JSON string no client sends (it needs \u0000)
_DATA_KEY = re.compile(rb'[{,]\s*"data"\s*:\s*\[')
_NUMERIC = re.compile(rb"[-+0-9.eE,\s\[\]]*")   # all a list of JSON numbers (no NaN/Infinity) can hold
_BRACKET = re.compile(rb"[\[\]]")
_MAX_BRACKETS = 1 << 16   # deeper or more ragged nesting is left to the JSON parser


def lift_numeric_data(head) -> tuple[bytes, list[bytes]]:
    """The JSON text with every `"data": [numbers]` list replaced by a sentinel string, and the lists' contents
    (between the outer brackets). Anything else (strings, booleans, NaN/Infinity) stays in the text.

    Args:
        head: the JSON part of the body (bytes or a memoryview: the body is not copied whole).
    """
    pieces, lifted, copied, search = [], [], 0, 0
    while True:
        found = _DATA_KEY.search(head, search)
        if found is None:
            break
        start = found.end()   # just after '['
        close = _closing_bracket(head, start, _NUMERIC.match(head, start).end())
        if close is None or close == start:
            search = start   # not a plain list of numbers: the JSON parser reads it
            continue
        pieces.append(bytes(head[copied:start - 1]))
        pieces.append(json.dumps(f"{_SENTINEL}{len(lifted)}").encode())
        lifted.append(bytes(head[start:close]))
        copied = search = close + 1
    if not lifted:
        return bytes(head), []
    pieces.append(bytes(head[copied:]))
    return b"".join(pieces), lifted


def _closing_bracket(text, start: int, end: int) -> int | None:
    """Index of the ']' closing the list opened just before `start`, looking no further than `end`."""
    depth, i = 1, start
    for _ in range(_MAX_BRACKETS):
        found = _BRACKET.search(text, i, end)
        if found is None:
            return None
        i = found.end()
        depth += 1 if found.group() == b"[" else -1
        if depth == 0:
            return found.start()
    return None


class _JsonContext:
    """What parsing the JSON text left for the tensors: the lifted lists and whether NaN/Infinity appeared."""

    def __init__(self, lifted: list[bytes], saw_constants: bool):
        self.lifted = lifted
        self.saw_constants = saw_constants

    def _raw(self, data) -> bytes | None:
        if not (isinstance(data, str) and data.startswith(_SENTINEL)):
            return None
        index = data[len(_SENTINEL):]
        return self.lifted[int(index)] if index.isdigit() and int(index) < len(self.lifted) else None

    def lifted_list(self, data: str):
        """A lifted list parsed by json (the slow, exact path: integers, or text numpy cannot take)."""
        raw = self._raw(data)
        if raw is None:
            return data
        try:
            return json.loads(b"[" + raw + b"]")
        except (ValueError, RecursionError) as exc:
            raise ProtocolError(f"the request is not valid JSON: {str(exc)[:200]}") from None

    def lifted_array(self, data, name: str, datatype: str, dtype: np.dtype) -> np.ndarray | None:
        """A lifted flat list decoded a chunk at a time into one preallocated array of `dtype`, so the Python
        objects alive at once are one chunk's; None when it is nested (json checks the nesting instead)."""
        raw = self._raw(data)
        if raw is None or b"[" in raw:
            return None
        out = np.empty(raw.count(b",") + 1, dtype=dtype)
        filled, start = 0, 0
        while start < len(raw):
            end = raw.find(b",", start + _CHUNK_BYTES)
            end = len(raw) if end < 0 else end
            try:
                values = _loads(b"[" + raw[start:end] + b"]", exact_integers=dtype.kind != "f")
            except ProtocolError as exc:
                if "infinity" in exc.message:   # orjson refuses 1e400 outright
                    _check_float_range(np.array([np.inf], dtype), np.zeros(0), name, datatype)
                raise
            chunk = _json_array(values, name, datatype, dtype, saw_constants=False)
            if filled + chunk.size > out.size:   # cannot happen for well-formed text; never write past the end
                raise ProtocolError(f"input '{name}' data is not a flat list of numbers")
            out[filled:filled + chunk.size] = chunk
            filled, start = filled + chunk.size, end + 1
        if filled != out.size:   # an empty element (",,") json would have refused as a whole
            raise ProtocolError(f"the request is not valid JSON: input '{name}' data has an empty element")
        return out


_CHUNK_BYTES = 1 << 20


def _loads(text: bytes, exact_integers: bool):
    """One chunk of a lifted list: orjson when installed (several times faster), else json; both strict.
    Integer tensors take json, which keeps integers past 64 bits exact (orjson reads them as floats) so the
    range check can name them."""
    try:
        import orjson
    except ImportError:  # the serve extra installs it; plain json gives the same values, slower
        orjson = None
    if exact_integers:
        orjson = None
    try:
        return orjson.loads(text) if orjson is not None else json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"the request is not valid JSON: {str(exc)[:200]}") from None


def _check_float_range(array: np.ndarray, source: np.ndarray, name: str, datatype: str) -> None:
    """Refuse finite JSON numbers the datatype cannot hold (1e39 as FP32 would silently become inf).

    Args:
        array: the values in the tensor's dtype.
        source: the values as parsed before the cast (empty when `array` was parsed directly).
    """
    if array.dtype.kind != "f":
        return
    inf = np.isinf(array)
    if not inf.any():
        return
    if source.size and np.count_nonzero(np.isinf(source)) == np.count_nonzero(inf):
        return   # every inf was an Infinity in the request itself
    limit = float(np.finfo(array.dtype).max)
    raise ProtocolError(f"input '{name}' has values outside the range of {datatype} (|x| <= {limit:.6g}); send "
                        "Infinity explicitly if that is what is meant")


def _json_array(data: list, name: str, datatype: str, dtype: np.dtype, saw_constants: bool = True) -> np.ndarray:
    """JSON values to an array of `dtype`, refusing what a cast would change silently.

    numpy would happily read "1.5" as a float, 2.7 as the integer 2 and 300 as the INT8 44; the wire
    contract says numbers of the declared type, so those are errors here.
    """
    try:
        parsed = np.asarray(data)
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(f"input '{name}' data is not a flat or regularly nested list of numbers: "
                            f"{str(exc)[:200]}") from None
    if parsed.size == 0:
        return parsed.astype(dtype)
    kind = parsed.dtype.kind
    if dtype.kind in "ui" and kind in "fO":
        # Integers past int64 next to small ones come out of numpy as float64 or objects: take them exactly.
        parsed, kind = _exact_integers(data, name, datatype), "i"
    allowed = {"b": "b", "u": "bui", "i": "bui", "f": "buif"}[dtype.kind]
    if kind not in allowed:
        expected = {"b": "true/false", "u": "integers", "i": "integers", "f": "numbers"}[dtype.kind]
        raise ProtocolError(f"input '{name}' is {datatype}, so its data must be {expected}")
    if dtype.kind in "ui" and kind != "b":
        info = np.iinfo(dtype)
        if int(parsed.min()) < info.min or int(parsed.max()) > info.max:
            raise ProtocolError(f"input '{name}' has values outside the range of {datatype}")
    with np.errstate(over="ignore"):   # an overflow is reported below, as a 400
        out = parsed.astype(dtype, copy=False)
    if dtype.kind == "f":
        # json reads 1e400 as inf: that is an overflow unless the request spelt Infinity somewhere.
        _check_float_range(out, parsed if saw_constants else np.zeros(0), name, datatype)
    return out


def _exact_integers(data: list, name: str, datatype: str) -> np.ndarray:
    """JSON integers of any size as an object array of Python ints; anything else is refused."""
    values = np.asarray(data, dtype=object)
    if not all(type(v) is int for v in values.flat):  # bool is a subclass of int, and refused here
        raise ProtocolError(f"input '{name}' is {datatype}, so its data must be integers")
    return values


def _parse_outputs(raw) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise ProtocolError("'outputs' must be a list")
    outputs, seen = [], set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError(f"outputs[{index}] must be an object with a 'name' string")
        name = item["name"]
        if name in seen:
            raise ProtocolError(f"output '{name}' is requested twice")
        seen.add(name)
        params = _dict(item.get("parameters"), f"output '{name}' parameters")
        if params.get("classification"):
            raise ProtocolError("the classification extension is not supported by this server")
        if "shared_memory_region" in params:
            raise ProtocolError("shared-memory tensors are not supported by this server")
        outputs.append(RequestedOutput(name, _bool(params, "binary_data", f"output '{name}'")))
    return outputs


def sends_binary(request: InferRequest, output: str) -> bool:
    """Whether `output` travels as raw bytes: its own binary_data parameter, else the request's binary_data_output."""
    for requested in request.outputs or ():
        if requested.name == output and requested.binary is not None:
            return requested.binary
    return request.binary_output


def json_values(results: dict[str, np.ndarray], request: InferRequest) -> int:
    """How many values the response would write as JSON numbers (the slow part of encoding it)."""
    return sum(int(array.size) for name, array in results.items() if not sends_binary(request, name))


def encode_infer_response(model_name: str, model_version: str, results: dict[str, np.ndarray],
                          request: InferRequest) -> tuple[list[bytes], int | None]:
    """The response body as parts (JSON header first, then each binary output) and, when any output
    travels in binary, the JSON header's length. Sending the parts one after another saves joining them.

    Args:
        results: output name -> array, already restricted to what the request asked for, in order.
    """
    chunks: list[bytes] = []
    outputs = []
    for name, array in results.items():
        datatype = datatype_of(array.dtype)
        entry = {"name": name, "datatype": datatype, "shape": [int(d) for d in array.shape]}
        if sends_binary(request, name):
            raw = np.ascontiguousarray(array, dtype=DATATYPES[datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = array.reshape(-1).tolist()
        outputs.append(entry)
    doc = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    return [head, *chunks], (len(head) if chunks else None)
