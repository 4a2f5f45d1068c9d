"""Every zoo model through `deploykit validate --json`: the exit code and the exact set of findings.

A case lists every check that must fail (name, severity) and nothing else may fail, so a finding that
appears or disappears breaks the test. Details that carry facts (node names, versions, the rule broken) are
asserted in the targeted tests below.
"""

from __future__ import annotations

import pytest
from onnx import TensorProto as T

from tests.validate import model_zoo as zoo
from tests.validate.helpers import checks_named, failed

W, E = "warning", "error"

CASES = [
    # id, builder, flags, exit code, failed checks
    ("clean_static", lambda: zoo.conv_relu(), (), 0, []),
    ("dynamic_batch_no_profile", lambda: zoo.conv_relu(batch="N"), (), 0, [("trt_dynamic_profile", W)]),
    ("two_inputs", zoo.two_inputs, (), 0, [("trt_dynamic_profile", W)]),
    ("det_unsupported", zoo.det_unsupported, (), 1, [("trt_unsupported_op", E)]),
    ("swish_10x_only", zoo.swish_opset24, (), 1, [("trt_unlisted_op", E)]),
    ("swish_trt11", zoo.swish_opset24, ("--trt", "11"), 0, []),
    ("custom_domain", zoo.custom_domain, (), 1, [("trt_custom_domain_op", E)]),
    ("local_function", zoo.local_function_with_det, (), 1, [("trt_unsupported_op", E)]),
    ("if_subgraph", zoo.if_with_det, ("--no-run",), 1, [("trt_unsupported_op", E)]),
    ("resize_cubic", lambda: zoo.resize("cubic"), (), 1, [("trt_restriction", E)]),
    ("resize_linear", lambda: zoo.resize("linear"), (), 0, []),
    ("maxpool_dilated", zoo.maxpool_dilated, (), 1, [("trt_restriction", E)]),
    ("maxpool_indices", zoo.maxpool_indices, (), 1, [("trt_restriction", E)]),
    ("avgpool_1d", zoo.avgpool_1d, (), 1, [("trt_restriction", E)]),
    ("topk_unsorted", zoo.topk_unsorted, (), 1, [("trt_restriction", E)]),
    ("reduce_axes_input", zoo.reduce_axes_input, ("--no-run",), 1, [("trt_restriction", E)]),
    ("qdq_zero_point", zoo.qdq_nonzero_zero_point, (), 1, [("trt_restriction", E), ("trt_restriction", E)]),
    ("float64", zoo.float64_add, (), 0, [("trt_dtype", W)]),
    ("string", lambda: zoo.identity_of(T.STRING), ("--no-run",), 1, [("trt_dtype", E)]),
    ("complex64", lambda: zoo.identity_of(T.COMPLEX64), ("--no-run",), 1, [("trt_dtype", E)]),
    ("uint16", lambda: zoo.identity_of(T.UINT16), ("--no-run",), 1, [("trt_dtype", E)]),
    ("uint8_inside", zoo.uint8_inside, (), 0, [("trt_dtype", W)]),
    ("int64_io", zoo.int64_io, (), 0, []),
    ("matmul_int32", zoo.matmul_int32, (), 0, [("trt_op_dtype", W)]),
    ("shape_computation", zoo.shape_computation, (), 0, [("trt_dynamic_profile", W), ("trt_shape_computation", W)]),
    ("shape_computation_profiled", zoo.shape_computation, ("--profile", "x:1x4x8x8:2x4x8x8:3x4x8x8"), 0,
     [("trt_shape_computation", W)]),
    ("nan_weights", zoo.nan_weights, (), 1, [("fp16_range", W), ("initializers", E), ("onnxruntime_run", E)]),
    ("inf_weights", zoo.inf_weights, (), 1, [("fp16_range", W), ("initializers", E), ("onnxruntime_run", E)]),
    ("initializer_as_input", zoo.initializer_as_input, (), 0, [("initializer_inputs", W)]),
    ("nan_outputs", zoo.log_of_input, (), 1, [("fp16_range", W), ("onnxruntime_run", E)]),
    ("fp16_overflow", zoo.fp16_overflow, (), 0, [("fp16_range", W)]),
    ("fp16_underflow", zoo.fp16_underflow, (), 0, [("fp16_range", W)]),
    ("fp16_skipped", zoo.fp16_overflow, ("--no-fp16",), 0, []),
    ("opset8_too_old", lambda: zoo.relu([1, 4], opset=8), (), 1, [("trt_opset", E), ("trt_opset", E)]),
    ("opset25_10x_only", lambda: zoo.relu([1, 4], opset=25), (), 1, [("trt_opset", E)]),
    ("opset25_trt11", lambda: zoo.relu([1, 4], opset=25), ("--trt", "11"), 0, []),
    ("audit_off", zoo.det_unsupported, ("--trt", "none"), 0, []),
]


@pytest.mark.parametrize("case_id,builder,flags,code,expected", CASES, ids=[c[0] for c in CASES])
def test_zoo_case(write_model, run_validate, case_id, builder, flags, code, expected):
    path = write_model(builder(), case_id)
    result, report = run_validate(path, *flags)
    assert result.exit_code == code, result.stdout[-3000:] + result.stderr
    assert "Traceback" not in result.stderr
    assert failed(report) == sorted(expected)
    assert report["passed"] is (code == 0)
    for check in report["checks"]:
        assert set(check) >= {"name", "passed", "detail", "severity", "category"}
        assert check["severity"] in ("error", "warning", "info")
        if not check["passed"] and check["severity"] != "info" and check["category"] == "tensorrt":
            assert check.get("fix"), f"{check['name']} has no suggested fix"


def test_unsupported_op_names_node_and_versions(write_model, run_validate):
    _, report = run_validate(write_model(zoo.det_unsupported()))
    (finding,) = checks_named(report, "trt_unsupported_op")
    assert finding["data"]["op"] == "Det" and finding["data"]["nodes"] == ["det0"]
    assert finding["data"]["versions"] == ["10.x", "11.x"]
    assert "register a TensorRT plugin named 'Det'" in finding["fix"]


def test_version_difference_is_reported_with_the_other_target(write_model, run_validate):
    _, report = run_validate(write_model(zoo.swish_opset24()))
    (finding,) = checks_named(report, "trt_unlisted_op")
    assert finding["data"]["versions"] == ["10.x"]
    assert "TensorRT 11.x" in finding["fix"]


def test_findings_inside_functions_and_subgraphs_say_where(write_model, run_validate):
    _, report = run_validate(write_model(zoo.local_function_with_det(), "fn"))
    assert checks_named(report, "trt_unsupported_op")[0]["data"]["nodes"] == ["det_in_fn (in function 'mylib.MyDet')"]
    _, report = run_validate(write_model(zoo.if_with_det(), "if"), "--no-run")
    assert checks_named(report, "trt_unsupported_op")[0]["data"]["nodes"] == ["det_then (in If 'branch' then_branch)"]


@pytest.mark.parametrize("builder,op,why", [
    (lambda: zoo.resize("cubic"), "Resize", "mode='cubic'"),
    (zoo.maxpool_dilated, "MaxPool", "dilations=[2, 2]"),
    (zoo.maxpool_indices, "MaxPool", "output 1 ('idx')"),
    (zoo.avgpool_1d, "AveragePool", "kernel_shape has 1 dims"),
    (zoo.topk_unsorted, "TopK", "sorted=0"),
])
def test_restriction_findings_say_what_is_wrong(write_model, run_validate, builder, op, why):
    _, report = run_validate(write_model(builder()))
    (finding,) = checks_named(report, "trt_restriction")
    assert finding["data"]["op"] == op
    assert why in finding["detail"] and why in finding["data"]["why"][0]


def test_shape_computation_lists_what_it_feeds_and_names_the_safe_twin(tmp_path, write_model, run_validate):
    path = write_model(zoo.shape_computation(), "sam")
    _, report = run_validate(path)
    (finding,) = checks_named(report, "trt_shape_computation")
    assert finding["data"]["count"] == 4
    assert finding["data"]["consumers"] == [{"op": "Reshape", "name": "flatten"}]
    assert "Reshape 'flatten'" in finding["detail"]
    # Beside a manifest naming a deploykit block's reference variant, the fix names the export-safe twin.
    (path.parent / "deploykit.json").write_text('{"source": {"block": "sam", "variant": "reference"}}')
    _, report = run_validate(path, "--profile", "x:1x4x8x8:2x4x8x8:3x4x8x8")
    (finding,) = checks_named(report, "trt_shape_computation")
    assert "deploykit export --block sam --variant safe" in finding["fix"]


def test_dtype_findings_name_tensors(write_model, run_validate):
    _, report = run_validate(write_model(zoo.uint8_inside()))
    (finding,) = checks_named(report, "trt_dtype")
    assert finding["data"] == {"dtype": "UINT8", "tensors": ["u8"]}
    _, report = run_validate(write_model(zoo.int64_io(), "i64"))
    note = checks_named(report, "trt_dtype")[0]
    assert note["severity"] == "info" and sorted(note["data"]["tensors"]) == ["x", "y"]


def test_dynamic_batch_runs_batch_one_and_two(write_model, run_validate):
    _, report = run_validate(write_model(zoo.conv_relu(batch="N")))
    assert report["summary"]["shapes_run"] == ["1x3x8x8", "2x3x8x8"]
    (finding,) = checks_named(report, "trt_dynamic_profile")
    assert "--profile x:" in finding["fix"]
