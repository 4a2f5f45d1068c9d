"""The TensorRT support data names its source and version, and no audit finding may contradict it.

The expectations here are computed straight from the JSON file with a walk of the graph written in this
test, not with deploykit's audit code, so a finding the data does not back (or a rejection it misses) fails.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from deploykit.validate.audit import audit, tables_for
from deploykit.validate.graphinfo import inspect_model
from deploykit.validate.support import SUPPORT_FILE
from tests.validate import model_zoo as zoo

RAW = json.loads(SUPPORT_FILE.read_text(encoding="utf-8"))
KNOWN_TYPES = {"FP32", "FP16", "BF16", "FP8", "FP4", "INT4", "INT8", "INT32", "INT64", "UINT8", "BOOL"}


def test_data_names_source_and_versions():
    assert RAW["source"]["repository"] == "https://github.com/onnx/onnx-tensorrt"
    assert RAW["source"]["file"] == "docs/operators.md"
    v10, v11 = RAW["versions"]["10.x"], RAW["versions"]["11.x"]
    assert v10["tensorrt"].startswith("10.") and v11["tensorrt"].startswith("11.")
    # The 10.x table says which release's matrix it was read from, quoting that matrix's own header.
    assert f"TensorRT {v10['tensorrt']} supports operators in the inclusive range of opset {v10['opset_min']} " \
           f"to opset {v10['opset_max']}" in v10["read_from"]
    assert v11["based_on"] == "10.x" and "maximum opset 25" in v11["read_from"] and v11["opset_max"] == 25
    for entry in (v10, v11):
        assert entry["applies_to"], "each version says which releases it covers and what is missing"


def test_operator_rows_are_well_formed():
    ops = RAW["versions"]["10.x"]["operators"]
    assert len(ops) > 150
    for name, row in {**ops, **RAW["versions"]["11.x"]["operators_added"]}.items():
        assert set(row) <= {"supported", "types", "restrictions"}, name
        assert set(row["types"]) <= KNOWN_TYPES, name
        assert row["supported"] or not row["types"], f"{name}: an unsupported op lists no types"


def test_every_rule_targets_a_supported_op_and_a_known_check():
    from deploykit.validate.audit import _violation

    ops = RAW["versions"]["10.x"]["operators"]
    info = inspect_model(zoo.relu([1, 4]))
    for rule in RAW["rules"]:
        assert ops[rule["op"]]["supported"], rule
        assert rule["severity"] in ("error", "warning", "info")
        assert rule["text"] and ops[rule["op"]].get("restrictions"), f"{rule}: rules encode a documented restriction"
        # A bare node of the op with no attributes must be judgeable (an unknown check kind raises).
        _violation(rule, helper.make_node(rule["op"], ["x"], ["y"]), info)


# --------------------------------------------------------------------- independent expectation from JSON
def _tables():
    ten = RAW["versions"]["10.x"]["operators"]
    eleven = {**ten, **RAW["versions"]["11.x"]["operators_added"]}
    return {"10.x": ten, "11.x": eleven}


def _default_domain_nodes(model):
    functions = {(f.domain, f.name): f for f in model.functions}
    stack, out = [model.graph], []
    while stack:
        graph = stack.pop()
        for node in graph.node:
            if (node.domain, node.op_type) in functions:
                stack.append(functions[(node.domain, node.op_type)])
                continue
            if node.domain in ("", "ai.onnx"):
                out.append(node.op_type)
            for attr in node.attribute:
                if attr.type == attr.GRAPH:
                    stack.append(attr.g)
                stack.extend(attr.graphs)
    return out


def _expected_rejections(model) -> set[tuple[str, str]]:
    out = set()
    for key, table in _tables().items():
        for op in _default_domain_nodes(model):
            if op not in table or not table[op]["supported"]:
                out.add((op, key))
    return out


def _reported_rejections(checks) -> set[tuple[str, str]]:
    return {(c.data["op"], v) for c in checks if c.name in ("trt_unsupported_op", "trt_unlisted_op")
            for v in c.data["versions"]}


ZOO_MODELS = {name: getattr(zoo, name) for name in (
    "det_unsupported", "swish_opset24", "local_function_with_det", "if_with_det", "maxpool_dilated",
    "maxpool_indices", "avgpool_1d", "topk_unsorted", "reduce_axes_input", "qdq_nonzero_zero_point", "float64_add",
    "uint8_inside", "int64_io", "matmul_int32", "shape_computation", "fp16_overflow", "two_inputs", "log_of_input")}
ZOO_MODELS.update({"conv_relu": zoo.conv_relu, "resize_cubic": lambda: zoo.resize("cubic"),
                   "resize_linear": lambda: zoo.resize("linear")})


@pytest.mark.parametrize("name", sorted(ZOO_MODELS))
def test_op_findings_match_the_data_file(name):
    model = ZOO_MODELS[name]()
    checks = audit(inspect_model(model), tables_for("both"))
    assert _reported_rejections(checks) == _expected_rejections(model)
    for c in checks:
        if c.name == "trt_unsupported_op":  # "unsupported" means the matrix has an N row, "unlisted" no row
            assert all(c.data["op"] in _tables()[v] for v in c.data["versions"])
        if c.name == "trt_unlisted_op":
            assert all(c.data["op"] not in _tables()[v] for v in c.data["versions"])


def test_every_supported_op_of_the_matrix_passes_and_every_unsupported_one_fails():
    """One node per matrix row: the audit's op verdict equals the row, for both versions."""
    tables = _tables()
    for key in ("10.x", "11.x"):
        for op, row in tables[key].items():
            node = helper.make_node(op, ["x"], ["y"], name="n")
            graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                      [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
            checks = audit(inspect_model(model), tables_for(key[:2]))
            rejected = {c.data["op"] for c in checks if c.name in ("trt_unsupported_op", "trt_unlisted_op")}
            assert (op in rejected) is (not row["supported"]), (key, op)


@pytest.mark.parametrize("builder", [lambda: zoo.resize("cubic"), zoo.maxpool_dilated, zoo.topk_unsorted,
                                     zoo.maxpool_indices, zoo.avgpool_1d, zoo.qdq_nonzero_zero_point])
def test_restriction_findings_are_backed_by_a_rule(builder):
    model = builder()
    checks = [c for c in audit(inspect_model(model), tables_for("both")) if c.name == "trt_restriction"]
    assert checks
    nodes = {n.name: n for n in model.graph.node}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for c in checks:
        rules = [r for r in RAW["rules"] if r["op"] == c.data["op"] and r["text"] == c.data["rule"]]
        assert len(rules) == 1, c.data
        rule = rules[0]
        for node_name in c.data["nodes"]:
            node = nodes[node_name]
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if rule["check"] == "attr_in":
                value = attrs.get(rule["attr"], rule.get("default"))
                value = value.decode() if isinstance(value, bytes) else value
                assert value not in rule["values"]
            elif rule["check"] == "attr_all_ones":
                assert any(v != 1 for v in attrs[rule["attr"]])
            elif rule["check"] == "attr_len_in":
                assert len(attrs[rule["attr"]]) not in rule["values"]
            elif rule["check"] == "output_absent":
                assert len(node.output) > rule["index"] and node.output[rule["index"]]
            elif rule["check"] == "input_zero":
                assert np.any(inits[node.input[rule["index"]]] != 0)
            else:  # pragma: no cover - extend this test with the rule kind
                pytest.fail(f"no independent check for rule kind {rule['check']}")


@pytest.mark.parametrize("opset", [8, 9, 18, 24, 25])
def test_opset_findings_match_the_data_file(opset):
    checks = audit(inspect_model(zoo.relu([1, 4], opset=opset)), tables_for("both"))
    flagged = {v for c in checks if c.name == "trt_opset" for v in c.data["versions"]}
    expected = {k for k, v in RAW["versions"].items() if not v["opset_min"] <= opset <= v["opset_max"]}
    assert flagged == expected
