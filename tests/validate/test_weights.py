"""Weights read once: their byte offsets in the file, the stripped skeleton, and the fp16 scan and checker
working from by-offset references give the same answers as loading the whole model again."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from deploykit.validate import weights
from tests.validate import model_zoo as zoo


def big_conv(scale: float = 1.0):
    """A 3x3 conv with 64x64 channels (147 KB of weights: stripped) and a small bias (kept)."""
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((64, 64, 3, 3)) * 0.1).astype(np.float32)
    w[0, 0, 0, 0] = scale
    return zoo.model([h.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
                      h.make_node("Relu", ["c"], ["y"], name="relu")],
                     [zoo.vi("x", T.FLOAT, [1, 64, 8, 8])], [zoo.vi("y", T.FLOAT, [1, 64, 8, 8])],
                     [nh.from_array(w, "w"), nh.from_array(np.zeros(64, np.float32), "b")])


def test_raw_data_offsets_point_at_each_weights_bytes(tmp_path):
    path = zoo.write(big_conv(), tmp_path / "m")
    data = path.read_bytes()
    model = onnx.load(str(path))
    offsets = weights.raw_data_offsets(path)
    assert set(offsets) == {"w", "b"}
    for init in model.graph.initializer:
        offset, length = offsets[init.name]
        np.testing.assert_array_equal(np.frombuffer(data[offset:offset + length], np.float32).reshape(init.dims),
                                      nh.to_array(init))


def test_strip_keeps_small_tensors_and_frees_large_ones(tmp_path):
    model = big_conv()
    skeleton, stripped = weights.strip(model)
    assert stripped == ["w"]
    kept = {i.name: i for i in skeleton.graph.initializer}
    assert not kept["w"].raw_data and list(kept["w"].dims) == [64, 64, 3, 3]
    assert nh.to_array(kept["b"]).shape == (64,)
    assert skeleton.ByteSize() < 4096


def test_fp16_scan_from_the_skeleton_equals_the_full_load(tmp_path):
    from deploykit.validate import fp16
    from deploykit.validate.graphinfo import inspect_model
    from deploykit.validate.inputs import Feed

    path = zoo.write(big_conv(scale=1e6), tmp_path / "m")   # one weight and the conv output overflow fp16
    full = onnx.load(str(path))
    info = inspect_model(full)
    feed = Feed("1x64x8x8", {"x": np.random.default_rng(0).standard_normal((1, 64, 8, 8)).astype(np.float32)})
    expected = fp16.scan(path, info, [feed])
    weight_scan = fp16.scan_weights(full.graph)
    skeleton, stripped = weights.strip(full)
    got = fp16.scan(path, info, [feed], skeleton=skeleton, stripped=stripped, weight_scan=weight_scan)
    as_set = lambda result: ({(t.tensor, t.kind, t.max_abs) for t in result[0]}, result[1])  # noqa: E731
    assert as_set(got) == as_set(expected)
    assert {t.tensor for t in got[0]} >= {"w", "c"}
    assert [p.name for p in path.parent.iterdir()] == ["model.onnx"]   # the by-offset copy was removed


def test_validate_leaves_no_file_behind_and_falls_back_to_a_full_load(tmp_path, run_validate, monkeypatch):
    path = zoo.write(big_conv(scale=1e6), tmp_path / "m")
    result, report = run_validate(path)
    assert result.exit_code == 0 and sorted(os.listdir(path.parent)) == ["model.onnx"]
    fp16_check = [c for c in report["checks"] if c["name"] == "fp16_range"][0]
    assert {t["tensor"] for t in fp16_check["data"]["tensors"]} >= {"w", "c"}

    def unreadable(_path):
        raise ValueError("unexpected layout")

    monkeypatch.setattr(weights, "raw_data_offsets", unreadable)   # e.g. a file protobuf wrote differently
    result, fallback = run_validate(path)
    assert result.exit_code == 0
    assert [c for c in fallback["checks"] if c["name"] == "fp16_range"][0]["data"] == fp16_check["data"]
    assert [(c["name"], c["passed"]) for c in fallback["checks"]] == [(c["name"], c["passed"])
                                                                     for c in report["checks"]]
