"""Graph precision detection and the precision decision for the 10.x and 11.x APIs (no TensorRT needed).

The capabilities here are plain data shaped like what `capabilities.detect` returns for each version; the
API conformance tests check `detect` itself against the real bindings.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from deploykit.errors import UserInputError
from deploykit.trt.builder import decide_precision, parse_size, sibling_graph
from deploykit.trt.capabilities import TrtCapabilities
from deploykit.trt.onnx_info import summarize
from tests.trt import onnx_zoo

TRT10 = TrtCapabilities("10.16.1.11", fp16_flag=True, int8_flag=True, strongly_typed=True,
                        optimization_level=True, parser_error_node_name=True)
TRT11 = TrtCapabilities("11.4.0.106", fp16_flag=False, int8_flag=False, strongly_typed=True,
                        optimization_level=True, parser_error_node_name=True)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    fp32 = onnx_zoo.conv_relu(models)
    return {"fp32": fp32, "fp16": onnx_zoo.fp16_of(fp32), "int8": onnx_zoo.qdq_conv(models),
            "custom": onnx_zoo.unsupported_op(models)}


def test_graph_facts(zoo):
    fp32 = summarize(zoo["fp32"])
    assert fp32.precision == "fp32" and fp32.qdq_nodes == 0 and fp32.half_tensors == 0
    assert [t.name for t in fp32.inputs] == ["input"]  # initializers are not inputs
    assert fp32.inputs[0].dims == (-1, 3, -1, -1) and fp32.inputs[0].dim_names == ("batch", "", "height", "width")
    assert fp32.node_names == ["conv0", "relu0"] and fp32.node_ops == ["Conv", "Relu"]

    fp16 = summarize(zoo["fp16"])
    model = onnx.load(str(zoo["fp16"]))
    expected_half = sum(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert fp16.precision == "fp16" and expected_half > 0 and fp16.half_tensors >= expected_half
    assert fp16.inputs[0].dtype == "float32"  # export keeps fp32 I/O around the fp16 body

    int8 = summarize(zoo["int8"])
    assert int8.precision == "int8" and int8.qdq_nodes == 3


def test_unreadable_files_are_usage_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        summarize(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07not a model")
    with pytest.raises(UserInputError):
        summarize(junk)


@pytest.mark.parametrize("caps", [TRT10, TRT11], ids=["10.x", "11.x"])
@pytest.mark.parametrize("graph", ["fp32", "fp16", "int8"])
def test_the_graphs_own_precision_is_strongly_typed_without_flags(zoo, caps, graph):
    plan = decide_precision(summarize(zoo[graph]), None, caps)
    assert (plan.precision, plan.strongly_typed, plan.fp16_flag, plan.int8_flag) == (graph, True, False, False)
    assert decide_precision(summarize(zoo[graph]), graph, caps) == plan


def test_fp16_on_fp32_graph_takes_the_flag_on_10_and_is_refused_on_11(zoo):
    on10 = decide_precision(summarize(zoo["fp32"]), "fp16", TRT10)
    assert (on10.strongly_typed, on10.fp16_flag, on10.source) == (False, True, "builder flag")
    assert "TensorRT 11 has no such flag" in on10.note
    with pytest.raises(UserInputError) as err:
        decide_precision(summarize(zoo["fp32"]), "fp16", TRT11)
    assert "no FP16 builder flag" in err.value.message
    assert str(zoo["fp16"]) in err.value.hint  # the graph to build instead, where export put it


@pytest.mark.parametrize("graph, requested", [("fp16", "fp32"), ("int8", "fp32"), ("int8", "fp16"),
                                              ("fp32", "int8"), ("fp16", "int8")])
def test_requests_that_contradict_the_graph_are_refused(zoo, graph, requested):
    for caps in (TRT10, TRT11):
        with pytest.raises(UserInputError):
            decide_precision(summarize(zoo[graph]), requested, caps)


def test_without_strongly_typed_networks_the_flags_honour_the_graph(zoo):
    old = TrtCapabilities("9.x", fp16_flag=True, int8_flag=True, strongly_typed=False,
                          optimization_level=True, parser_error_node_name=False)
    assert decide_precision(summarize(zoo["fp16"]), None, old).fp16_flag
    assert decide_precision(summarize(zoo["int8"]), None, old).int8_flag
    assert not decide_precision(summarize(zoo["fp32"]), None, old).strongly_typed


def test_sibling_graph_paths():
    assert sibling_graph(Path("models/se/1/model.onnx"), fp16=True) == Path("models/se_fp16/1/model.onnx")
    assert sibling_graph(Path("models/se_fp16/3/model.onnx"), fp16=False) == Path("models/se/3/model.onnx")
    assert sibling_graph(Path("model.onnx"), fp16=True) is None


@pytest.mark.parametrize("text, expected", [("2GiB", 2 * 2**30), ("512MiB", 512 * 2**20), ("1GB", 10**9),
                                            ("1.5gib", int(1.5 * 2**30)), ("4096", 4096), ("64 KiB", 65536)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["2XB", "-1GiB", "0", "GiB", ""])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(UserInputError):
        parse_size(text)
