"""Triton's model configuration (config.pbtxt) read with Triton's own schema.

config.pbtxt is the protobuf text format of the `inference.ModelConfig` message defined in Triton's
`model_config.proto`. The `tritonclient` package ships that message compiled for Python
(`tritonclient/grpc/model_config_pb2.py`), so a file that parses here parses in Triton: unknown fields, a
misspelt enum value or a wrongly typed value fail with the line and column, as Triton would report them.

The compiled module sits inside `tritonclient.grpc`, whose package `__init__` imports grpcio. Serving over
HTTP needs no grpcio, so the module is loaded from its file directly; its descriptor lands in the default
protobuf pool under the same name either way, and loading it twice is harmless.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from deploykit.errors import MissingDependency, UserInputError

SCHEMA_HINT = "install it with: pip install 'deploykit[serve]'"


@lru_cache(maxsize=1)
def schema():
    """The compiled `model_config_pb2` module (Triton's model-config schema).

    Raises:
        MissingDependency: tritonclient is not installed.
    """
    spec = importlib.util.find_spec("tritonclient")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("tritonclient is not installed; it carries Triton's model-config schema, which "
                                "`deploykit serve` reads config.pbtxt with", hint=SCHEMA_HINT)
    for location in spec.submodule_search_locations:
        path = Path(location) / "grpc" / "model_config_pb2.py"
        if path.is_file():
            break
    else:
        raise MissingDependency("this tritonclient lacks Triton's model-config schema, grpc/model_config_pb2.py",
                                hint=SCHEMA_HINT)
    module_spec = importlib.util.spec_from_file_location("deploykit.serve._triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parse_config_text(text: str, source: str = "config.pbtxt"):
    """Parse config.pbtxt text into an `inference.ModelConfig` message.

    Args:
        text: the file's content.
        source: where it came from, for the error message.

    Raises:
        UserInputError: the text does not follow Triton's schema (the message names line and column).
    """
    from google.protobuf import text_format

    message = schema().ModelConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise UserInputError(f"{source} does not follow Triton's model-config schema: {exc}",
                             hint="fix the file, or re-create it with `deploykit export` / `deploykit build`") from None
    return message


def load_config(path: str | Path):
    """Read and parse one config.pbtxt file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"cannot read {path}: {exc}",
                             hint="check the file's permissions, or export the model again") from None
    return parse_config_text(text, str(path))


def data_type_name(value: int) -> str:
    """`TYPE_FP32` for the enum number of inference.DataType."""
    return schema().DataType.Name(value)


def config_to_dict(message) -> dict:
    """The message as plain JSON values, field names as in config.pbtxt (Triton's `/config` response).

    protobuf's own JSON mapping writes 64-bit integers as strings; Triton's HTTP endpoint writes numbers,
    so the walk is done here.
    """
    from google.protobuf.descriptor import FieldDescriptor

    def value_of(field, value):
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            return config_to_dict(value)
        if field.type == FieldDescriptor.TYPE_ENUM:
            return field.enum_type.values_by_number[value].name if value in field.enum_type.values_by_number else value
        return value

    out = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            out[field.name] = {k: value_of(value_field, v) for k, v in value.items()}
        elif _is_repeated(field):
            out[field.name] = [value_of(field, v) for v in value]
        else:
            out[field.name] = value_of(field, value)
    return out


def _is_repeated(field) -> bool:
    # protobuf 7 removed FieldDescriptor.label in favour of is_repeated; older releases only have label.
    if hasattr(field, "is_repeated"):
        return bool(field.is_repeated)
    return field.label == field.LABEL_REPEATED
