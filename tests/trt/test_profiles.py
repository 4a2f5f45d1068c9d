"""Optimization profiles from --profile flags, the export sidecar, or static graphs (no TensorRT needed)."""

from __future__ import annotations

import json

import pytest

from deploykit.errors import UserInputError
from deploykit.trt.onnx_info import GraphTensor, summarize
from deploykit.trt.profiles import ShapeRange, parse_profile_flags, parse_shape, read_sidecar, resolve
from tests.trt import onnx_zoo

IMAGE = GraphTensor("input", "float32", (-1, 3, -1, -1), ("batch", "", "height", "width"))
STATIC = GraphTensor("input", "float32", (1, 3, 8, 8), ("", "", "", ""))


def test_parse_shape():
    assert parse_shape("1x64x56x56") == (1, 64, 56, 56)
    assert parse_shape(" 2X3 ") == (2, 3)
    for bad in ("1x", "axb", "1x-2", ""):
        with pytest.raises(UserInputError):
            parse_shape(bad)


def test_flags_group_into_profiles_when_a_name_repeats():
    a = GraphTensor("a", "float32", (-1, 4), ("n", ""))
    b = GraphTensor("b:0", "float32", (-1, 4), ("n", ""))  # ':' in a tensor name survives rsplit
    flags = ["a:1x4:2x4:4x4", "b:0:1x4:2x4:4x4", "a:8x4:8x4:16x4", "b:0:8x4:8x4:16x4"]
    profiles = parse_profile_flags(flags, [a, b])
    assert profiles == [
        {"a": ShapeRange((1, 4), (2, 4), (4, 4)), "b:0": ShapeRange((1, 4), (2, 4), (4, 4))},
        {"a": ShapeRange((8, 4), (8, 4), (16, 4)), "b:0": ShapeRange((8, 4), (8, 4), (16, 4))},
    ]


def test_single_input_shorthand_and_bad_flags():
    assert parse_profile_flags(["1x3x8x8:2x3x8x8:4x3x8x8"], [IMAGE]) == [
        {"input": ShapeRange((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))}]
    with pytest.raises(UserInputError) as err:
        parse_profile_flags(["1x3x8x8:4x3x8x8"], [IMAGE])
    assert "NAME:MIN:OPT:MAX" in err.value.one_line()


@pytest.mark.parametrize("flag, message", [
    ("input:1x3x8:1x3x8:1x3x8", "rank"),
    ("input:1x4x8x8:1x4x8x8:1x4x8x8", "fixes it at 3"),
    ("input:4x3x8x8:2x3x8x8:8x3x8x8", "min <= opt <= max"),
    ("image:1x3x8x8:1x3x8x8:1x3x8x8", "does not have"),
])
def test_flags_that_disagree_with_the_graph_are_refused(flag, message):
    with pytest.raises(UserInputError, match=message):
        resolve([IMAGE], [flag])


def test_static_graph_needs_no_profile_and_dynamic_graph_gets_an_example_flag():
    profiles, source = resolve([STATIC])
    assert source == "static" and profiles == [{"input": ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (1, 3, 8, 8))}]
    with pytest.raises(UserInputError) as err:
        resolve([IMAGE])
    assert "--profile input:1x3x1x1:8x3x8x8:32x3x32x32" in err.value.hint


def test_static_inputs_are_filled_in_beside_flagged_ones():
    mask = GraphTensor("mask", "bool", (8, 8), ("", ""))
    profiles, _ = resolve([IMAGE, mask], ["input:1x3x8x8:2x3x8x8:4x3x8x8"])
    assert profiles[0]["mask"] == ShapeRange((8, 8), (8, 8), (8, 8))


def test_export_sidecar_profile_is_used(tmp_path):
    path = onnx_zoo.conv_relu(tmp_path)
    onnx_zoo.write_export_sidecar(path, batch=(1, 4, 16), height=(8, 12, 24), width=(6, 12, 24))
    sidecar, problem = read_sidecar(path)
    profiles, source = resolve(summarize(path).inputs, (), sidecar)
    assert problem is None and source == "sidecar"
    assert profiles == [{"input": ShapeRange((1, 3, 8, 6), (4, 3, 12, 12), (16, 3, 24, 24))}]


def test_export_config_ranges_are_used_without_a_profile_entry(tmp_path):
    path = onnx_zoo.conv_relu(tmp_path)
    onnx_zoo.write_export_sidecar(path, batch=(2, 4, 8), height=(8, 16, 32), width=(8, 16, 32), with_profile=False)
    sidecar, _ = read_sidecar(path)
    profiles, _ = resolve(summarize(path).inputs, (), sidecar)
    assert profiles == [{"input": ShapeRange((2, 3, 8, 8), (4, 3, 16, 16), (8, 3, 32, 32))}]


@pytest.mark.parametrize("config, expected", [
    # opt-only height/width (export's static spatial size) and a [min, opt, max] batch
    ({"batch": [1, 2, 4], "height": {"opt": 8}, "width": {"opt": 8}}, ((1, 3, 8, 8), (2, 3, 8, 8), (4, 3, 8, 8))),
    # [min, max] ranges default opt to max; "spatial" covers both H and W
    ({"batch": [1, 4], "spatial": [8, 16]}, ((1, 3, 8, 8), (4, 3, 16, 16), (4, 3, 16, 16))),
    # flat keys
    ({"batch_min": 1, "batch_max": 2, "min_spatial": 4, "max_spatial": 8},
     ((1, 3, 4, 4), (2, 3, 8, 8), (2, 3, 8, 8))),
])
def test_other_sidecar_spellings(config, expected):
    profiles, _ = resolve([IMAGE], (), {"config": config})
    assert profiles == [{"input": ShapeRange(*expected)}]


def test_several_profiles_in_the_sidecar():
    sidecar = {"profiles": [{"batch": [1, 1, 4], "height": 8, "width": 8},
                            {"input": {"min": [8, 3, 8, 8], "opt": [16, 3, 8, 8], "max": [32, 3, 8, 8]}}]}
    profiles, _ = resolve([IMAGE], (), sidecar)
    assert profiles == [{"input": ShapeRange((1, 3, 8, 8), (1, 3, 8, 8), (4, 3, 8, 8))},
                        {"input": ShapeRange((8, 3, 8, 8), (16, 3, 8, 8), (32, 3, 8, 8))}]


def test_flags_win_over_the_sidecar_and_sidecar_gaps_are_named():
    sidecar = {"config": {"batch": [1, 2, 4]}}  # no height/width
    with pytest.raises(UserInputError, match="no range for dim 2"):
        resolve([IMAGE], (), sidecar)
    profiles, source = resolve([IMAGE], ["input:1x3x8x8:1x3x8x8:1x3x8x8"], sidecar)
    assert source == "flags" and profiles[0]["input"].max == (1, 3, 8, 8)


def test_unreadable_sidecar_is_a_note_not_a_crash(tmp_path):
    path = onnx_zoo.conv_relu(tmp_path)
    (path.parent / "deploykit.json").write_text("{not json")
    sidecar, problem = read_sidecar(path)
    assert sidecar is None and "unreadable" in problem
    (path.parent / "deploykit.json").write_text(json.dumps([1, 2]))
    assert read_sidecar(path)[0] is None
