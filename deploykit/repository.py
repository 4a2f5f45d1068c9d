"""The model repository in Triton's layout, written atomically.

    models/<name>/config.pbtxt
    models/<name>/<version>/model.onnx | model.plan
    models/<name>/<version>/deploykit.json      (the sidecar manifest; Triton ignores unknown files)

Every file is written to a temporary file in the same directory, fsynced, and renamed into place (os.replace,
then an fsync of the directory), so a reader or a crash never sees half a file, and an existing good file
survives a failed write. Installing whole model entries is deploykit.repository_journal's job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploykit.errors import UserInputError

MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MANIFEST_NAME = "deploykit.json"

# ONNX/numpy element type names -> Triton data types.
TRITON_DTYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL",
}


def check_model_name(name: str) -> str:
    """Model names become directory names: refuse anything path-like."""
    if not MODEL_NAME_RE.fullmatch(name) or name in {".", ".."}:
        raise UserInputError(f"invalid model name '{name}'",
                             hint="use letters, digits, '_', '-' and '.', starting with a letter or digit")
    return name


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Temporary siblings written inside a repository a live run holds are named `.deploykit-tmp-<run>-...`, so
# that recovery (deploykit/repository_journal.py) deletes them once that run is dead, and never before.
TMP_PREFIX = ".deploykit-tmp-"
_run_of_repo: dict[str, str] = {}   # absolute repository path -> id of the run this process holds on it


def register_run(repo: Path, run_id: str | None) -> None:
    """Make this process's atomic writes under `repo` carry `run_id` (None: forget the repository)."""
    key = os.path.abspath(repo)
    if run_id is None:
        _run_of_repo.pop(key, None)
    else:
        _run_of_repo[key] = run_id


def _tmp_prefix(path: Path) -> str:
    if _run_of_repo:
        here = os.path.abspath(path.parent)
        while True:
            if here in _run_of_repo:
                return f"{TMP_PREFIX}{_run_of_repo[here]}-"
            up = os.path.dirname(here)
            if up == here:
                break
            here = up
    return f".{path.name}."


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` via a temporary sibling and os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); the artifact gets the permissions open() would give it, so a
        # server running as another user (Triton's container) can read it.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)   # the new name, not only the bytes, survives a power cut
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a created, renamed or deleted name) durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)   # the only way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, element type name (numpy style), dims with -1 for dynamic."""

    name: str
    dtype: str
    dims: tuple[int, ...]


def config_pbtxt(name: str, platform: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 max_batch_size: int, *, dynamic_batching: dict | None = None, instance_count: int | None = None,
                 kind: str | None = None) -> str:
    """Triton model configuration text.

    With max_batch_size > 0 the first dim of every tensor is the batch and is omitted from `dims`.
    """
    lines = [f'name: "{name}"', f'platform: "{platform}"', f"max_batch_size: {max_batch_size}"]
    for section, tensors in (("input", inputs), ("output", outputs)):
        entries = []
        for t in tensors:
            dims = t.dims[1:] if max_batch_size > 0 else t.dims
            dtype = TRITON_DTYPES.get(t.dtype)
            if dtype is None:
                raise UserInputError(f"tensor '{t.name}' has type {t.dtype}, which Triton cannot serve",
                                     hint="export the model with fp32, fp16, integer or bool inputs and outputs")
            entries.append(
                "  {\n"
                f'    name: "{t.name}"\n'
                f"    data_type: {dtype}\n"
                f"    dims: [ {', '.join(str(int(d)) for d in dims)} ]\n"
                "  }"
            )
        lines.append(f"{section} [\n" + ",\n".join(entries) + "\n]")
    if dynamic_batching is not None and max_batch_size > 0:
        body = "".join(f"\n  {k}: {v}" for k, v in dynamic_batching.items())
        lines.append("dynamic_batching {" + body + ("\n}" if body else "}"))
    if instance_count is not None or kind is not None:
        parts = []
        if instance_count is not None:
            parts.append(f"count: {instance_count}")
        if kind is not None:
            parts.append(f"kind: {kind}")
        lines.append("instance_group [\n  { " + " ".join(parts) + " }\n]")
    return "\n".join(lines) + "\n"


def version_dirs(model_dir: Path) -> list[int]:
    """Numeric version directories of a model, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0)
