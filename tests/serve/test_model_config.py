"""Every config.pbtxt deploykit writes parses against Triton's model-config schema (its protobuf definition).

The schema is `inference.ModelConfig` from Triton's model_config.proto, as compiled into the tritonclient
package. protobuf's text_format parser is strict: an unknown field, a misspelt enum value or a list where a
scalar belongs fails, exactly as Triton's loader would refuse the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.serve.helpers import needs_serve_extra

needs_serve_extra()

from deploykit.errors import UserInputError  # noqa: E402
from deploykit.repository import TRITON_DTYPES, TensorSpec, config_pbtxt  # noqa: E402
from deploykit.serve.model_config import config_to_dict, load_config, parse_config_text, schema  # noqa: E402


def test_the_schema_is_tritons_model_config():
    descriptor = schema().ModelConfig.DESCRIPTOR
    assert descriptor.full_name == "inference.ModelConfig"
    assert descriptor.file.name == "model_config.proto"
    for name in ("name", "platform", "backend", "max_batch_size", "input", "output", "dynamic_batching",
                 "instance_group", "version_policy", "cc_model_filenames", "default_model_filename"):
        assert name in descriptor.fields_by_name, name
    # every data type deploykit writes is a member of Triton's DataType enum
    for type_name in TRITON_DTYPES.values():
        schema().DataType.Value(type_name)


def exported_configs(repo: Path) -> list[Path]:
    return sorted(repo.glob("*/config.pbtxt"))


def test_every_exported_config_parses_and_agrees_with_its_manifest(model_repo):
    paths = exported_configs(model_repo)
    assert {p.parent.name for p in paths} == {"se", "se_fp16", "sam", "se_static"}
    for path in paths:
        config = load_config(path)
        manifest = json.loads((path.parent / "1" / "deploykit.json").read_text())
        batch = manifest["config"]["input"]["batch"]
        assert config.name == path.parent.name == manifest["model"]
        assert config.platform == "onnxruntime_onnx"
        dynamic_batch = batch["min"] != batch["max"]
        assert config.max_batch_size == (batch["max"] if dynamic_batch else 0)
        for entries, tensors in ((config.input, manifest["inputs"]), (config.output, manifest["outputs"])):
            assert [e.name for e in entries] == [t["name"] for t in tensors]
            for entry, tensor in zip(entries, tensors):
                assert schema().DataType.Name(entry.data_type) == TRITON_DTYPES[tensor["dtype"]]
                expected = tensor["shape"][1:] if config.max_batch_size > 0 else tensor["shape"]
                assert list(entry.dims) == expected
    sam = load_config(model_repo / "sam" / "config.pbtxt")
    assert list(sam.input[0].dims) == [64, -1, -1]  # dynamic H and W stay -1 for Triton


ONE = [TensorSpec("input", "float32", (-1, 64, 56, 56))]
OUT = [TensorSpec("output", "float32", (-1, 64, 56, 56))]
HALF = [TensorSpec("input", "float16", (-1, 64, -1, -1))]


@pytest.mark.parametrize("kwargs", [
    dict(platform="onnxruntime_onnx", max_batch_size=32),
    dict(platform="onnxruntime_onnx", max_batch_size=0),
    dict(platform="tensorrt_plan", max_batch_size=8),
    dict(platform="tensorrt_plan", max_batch_size=8, inputs=HALF, outputs=HALF),
    dict(platform="onnxruntime_onnx", max_batch_size=16, dynamic_batching={"max_queue_delay_microseconds": 500}),
    dict(platform="onnxruntime_onnx", max_batch_size=16, dynamic_batching={}),
    dict(platform="tensorrt_plan", max_batch_size=4, instance_count=2, kind="KIND_GPU"),
    dict(platform="onnxruntime_onnx", max_batch_size=4, instance_count=1, kind="KIND_CPU",
         dynamic_batching={"max_queue_delay_microseconds": 100, "preferred_batch_size": "[ 2, 4 ]"}),
])
def test_every_generator_option_parses(kwargs):
    """The options of repository.config_pbtxt the export and build pipelines (and users) can reach."""
    args = {"inputs": ONE, "outputs": OUT, **kwargs}
    text = config_pbtxt("m", args.pop("platform"), args.pop("inputs"), args.pop("outputs"), args.pop("max_batch_size"),
                        **args)
    config = parse_config_text(text)
    parsed = config_to_dict(config)
    assert parsed["name"] == "m"
    assert parsed["platform"] == kwargs["platform"]
    assert parsed.get("max_batch_size", 0) == kwargs["max_batch_size"]
    if kwargs["max_batch_size"] > 0:
        assert parsed["input"][0]["dims"] == list(args_dims(kwargs))
    if "dynamic_batching" in kwargs:
        assert config.HasField("dynamic_batching")
        delay = kwargs["dynamic_batching"].get("max_queue_delay_microseconds", 0)
        assert config.dynamic_batching.max_queue_delay_microseconds == delay
    if "instance_count" in kwargs:
        group = config.instance_group[0]
        assert group.count == kwargs["instance_count"] and schema().ModelInstanceGroup.Kind.Name(group.kind) == \
            kwargs["kind"]


def args_dims(kwargs) -> tuple[int, ...]:
    return tuple((kwargs.get("inputs") or ONE)[0].dims[1:])


@pytest.mark.parametrize("mutation,where", [
    (lambda t: t.replace("max_batch_size", "max_batch"), "max_batch"),
    (lambda t: t.replace("TYPE_FP32", "TYPE_FLOAT32", 1), "TYPE_FLOAT32"),
    (lambda t: t.replace('platform: "onnxruntime_onnx"', "platform: onnxruntime_onnx"), "platform"),
    (lambda t: t.replace("max_batch_size: 32", "max_batch_size: [32]"), "max_batch_size"),
    (lambda t: t + "dynamic_batching { max_delay: 3 }\n", "max_delay"),
])
def test_the_schema_catches_what_triton_would_refuse(mutation, where):
    text = config_pbtxt("m", "onnxruntime_onnx", ONE, OUT, 32)
    parse_config_text(text)  # the original is fine
    with pytest.raises(UserInputError) as err:
        parse_config_text(mutation(text), "m/config.pbtxt")
    message = err.value.one_line()
    assert "m/config.pbtxt" in message and "Triton's model-config schema" in message
    assert where in message
