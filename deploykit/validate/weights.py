"""Weights held once: where each embedded initializer's bytes lie in the model file, and stripping them from
the in-memory model once they have been checked.

A ViT-B/16 carries 346 MB of weights. Validation used to hold them several times over (the loaded model,
shape inference's copies, a second full load and a serialized copy for the fp16 scan), 1.8 GB in all. Now
the weights are read once for the weight checks, then dropped from the in-memory model (shape inference and
the audit only need dims and small constants), and the fp16 scan's augmented graph points at the bytes
inside the original file (external data by offset), so ONNX Runtime reads them from disk itself.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path

STRIP_BYTES = 64 << 10   # smaller tensors (shapes, scales, axes) stay: shape inference and the audit read them

# Field numbers of onnx.proto: ModelProto.graph, GraphProto.initializer, TensorProto.name / raw_data.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_NAME, _TENSOR_RAW_DATA = 7, 5, 8, 9


def _varint(buf, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, payload start, payload end) of each field in buf[start:end]."""
    i = start
    while i < end:
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, j = _varint(buf, i)
        elif wire == 1:
            j = i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            j = i + length
        elif wire == 5:
            j = i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if j > end:
            raise ValueError("truncated protobuf field")
        yield field, wire, i, j
        i = j


def raw_data_offsets(path: Path) -> dict[str, tuple[int, int]]:
    """Initializer name -> (offset, length) of its raw_data inside the model file (main graph only)."""
    out: dict[str, tuple[int, int]] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for field, wire, start, end in _fields(buf, 0, len(buf)):
            if field != _MODEL_GRAPH or wire != 2:
                continue
            for g_field, g_wire, g_start, g_end in _fields(buf, start, end):
                if g_field != _GRAPH_INITIALIZER or g_wire != 2:
                    continue
                name, raw = None, None
                for t_field, t_wire, t_start, t_end in _fields(buf, g_start, g_end):
                    if t_field == _TENSOR_NAME and t_wire == 2:
                        name = bytes(buf[t_start:t_end]).decode("utf-8", "replace")
                    elif t_field == _TENSOR_RAW_DATA and t_wire == 2:
                        raw = (t_start, t_end - t_start)
                if name is not None and raw is not None:
                    out[name] = raw
    return out


def strip(model):
    """(a copy of `model` without the bytes of its large embedded initializers, their names). The copy is a
    new message: clearing fields in place would not give the memory back (protobuf's arena keeps it until
    the whole message goes), so the caller drops `model` for it."""
    stripped = []
    for init in model.graph.initializer:
        if init.data_location != init.EXTERNAL and len(init.raw_data) > STRIP_BYTES:
            init.ClearField("raw_data")
            stripped.append(init.name)
    if not stripped:
        return model, stripped
    return type(model).FromString(model.SerializeToString()), stripped


def point_at_file(model, names: list[str], offsets: dict[str, tuple[int, int]], location: str) -> bool:
    """Make the stripped initializers external data at their offsets in `location` (the original file, beside
    the model); False when one of them cannot be found there."""
    if any(n not in offsets for n in names):
        return False
    wanted = set(names)
    for init in model.graph.initializer:
        if init.name not in wanted:
            continue
        offset, length = offsets[init.name]
        init.data_location = init.EXTERNAL
        del init.external_data[:]
        for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
    return True


@contextlib.contextmanager
def by_offset_copy(model_path: Path, skeleton, stripped: list[str]):
    """A temporary file beside the model holding `skeleton` with its stripped weights pointing at their bytes
    in the original file: what the ONNX checker and the fp16 scan's session open instead of loading every
    weight again. Yields None when it cannot be made (the file's layout is unexpected, a read-only folder)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(skeleton)
    try:
        offsets = raw_data_offsets(model_path) if stripped else {}
    except (OSError, ValueError):
        offsets = {}
    path = model_path.parent / f".deploykit-validate-{os.getpid()}-{id(copy)}.onnx"
    if not point_at_file(copy, stripped, offsets, model_path.name):
        yield None, copy
        return
    try:
        path.write_bytes(copy.SerializeToString())
    except OSError:
        path.unlink(missing_ok=True)
        yield None, copy
        return
    try:
        yield path, copy
    finally:
        path.unlink(missing_ok=True)


def release_freed_memory() -> None:
    """Hand memory freed by large protobufs and sessions back to the OS (glibc keeps it otherwise, and the
    next phase's peak would stack on top of it). A no-op where glibc is absent."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
