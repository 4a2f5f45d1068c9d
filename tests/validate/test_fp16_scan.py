"""The fp16 range scan runs the graph in segments: no run returns more than a segment's intermediates (ONNX Runtime
keeps a run's outputs alive to its end), and the verdicts, in any segmentation, equal the rules applied with numpy
to the intermediates themselves, fetched one at a time from the plain graph."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tests.validate import model_zoo as zoo

SHAPE = [4, 64]


def crafted(opset: int, elem: int = T.FLOAT):
    """x -> tensors that overflow fp16, are mostly subnormal, hold NaN, +Inf, -Inf, or fit; y sums them."""
    dtype = nh.helper.tensor_dtype_to_np_dtype(elem)
    consts = [nh.from_array(np.array(v, dtype), n) for n, v in
              (("big", 1e6), ("small", 1e-7), ("zero", 0.0), ("one", 1.0))]
    nodes = [h.make_node("Mul", ["x", "big"], ["overflow"], name="scale_up"),
             h.make_node("Mul", ["x", "small"], ["subnormal"], name="scale_down"),
             h.make_node("Sqrt", ["x"], ["nan"], name="sqrt"),                   # NaN where x < 0
             h.make_node("Relu", ["x"], ["relu"], name="relu"),
             h.make_node("Reciprocal", ["relu"], ["pos_inf"], name="reciprocal"),  # +Inf where x <= 0
             h.make_node("Log", ["relu"], ["neg_inf"], name="log"),               # -Inf where x <= 0
             h.make_node("Add", ["x", "one"], ["fits"], name="shift"),
             h.make_node("Mul", ["x", "zero"], ["zeros"], name="zero_out"),        # all zeros: fits
             h.make_node("Sum", ["overflow", "subnormal", "fits", "zeros"], ["y"], name="sum")]
    return zoo.model(nodes, [zoo.vi("x", elem, SHAPE)], [zoo.vi("y", elem, SHAPE)], consts, opset=opset)


def feed_x(dtype=np.float32) -> np.ndarray:
    x = np.random.default_rng(7).standard_normal(SHAPE).astype(dtype)
    x[0, :3] = 0.0
    return x


def rules(values: np.ndarray):
    """The module docstring's rules, written out: (kind, max finite |x|, NaN/Inf count, share of nonzero |x|
    below 2**-14, share below 2**-24)."""
    a = np.abs(values.astype(np.float64)).ravel()
    finite = np.isfinite(a)
    top = float(a[finite].max()) if finite.any() else 0.0
    if not finite.all():
        return "non_finite", top, int((~finite).sum()), 0.0, 0.0
    nonzero = a[a > 0]
    tiny = float((nonzero < 2.0 ** -14).mean()) if nonzero.size else 0.0
    zero = float((nonzero < 2.0 ** -24).mean()) if nonzero.size else 0.0
    kind = "overflow" if top > 65504 else "underflow" if tiny > 0.5 else None
    return kind, top, 0, tiny, zero


def fetch(model, name: str, x: np.ndarray) -> np.ndarray:
    """One intermediate of the plain graph, exposed alone."""
    m = type(model)()
    m.CopyFrom(model)
    m.graph.output.append(h.make_tensor_value_info(name, m.graph.output[0].type.tensor_type.elem_type, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run([name], {"x": x})[0]


@pytest.mark.parametrize("per_segment", [1, 2, 3, 48])
@pytest.mark.parametrize("opset,elem", [(13, T.FLOAT), (18, T.FLOAT), (18, T.DOUBLE)])
def test_scan_verdicts_match_numpy_on_each_intermediate(tmp_path, monkeypatch, opset, elem, per_segment):
    from deploykit.backends.ort import OrtRunner
    from deploykit.validate import fp16
    from deploykit.validate.graphinfo import inspect_model
    from deploykit.validate.inputs import Feed

    model = crafted(opset, elem)
    path = zoo.write(model, tmp_path / "m")
    x = feed_x(nh.helper.tensor_dtype_to_np_dtype(elem))
    fetched: list[dict] = []
    infer = OrtRunner.infer_impl
    monkeypatch.setattr(OrtRunner, "infer_impl", lambda self, feed: fetched.append(infer(self, feed)) or fetched[-1])
    monkeypatch.setattr(fp16, "SEGMENT_TENSORS", per_segment)
    found, checked = fp16.scan(path, inspect_model(model), [Feed("4x64", {"x": x})])

    by_name = {t.tensor: t for t in found}
    names = ["overflow", "subnormal", "nan", "relu", "pos_inf", "neg_inf", "fits", "zeros", "y"]
    assert checked == len(names) + 4   # and the four weights
    for name in names:
        kind, top, bad, tiny, zero = rules(fetch(model, name, x))
        got = by_name.get(name)
        assert (got.kind if got else None) == kind, name
        if got:
            assert (got.max_abs, got.non_finite, got.size) == (pytest.approx(top), bad, 256), name
            assert (got.tiny_fraction, got.zero_fraction) == (pytest.approx(tiny), pytest.approx(zero)), name
    assert {t.tensor: t.kind for t in found} == {"nan": "non_finite", "pos_inf": "non_finite",
                                                 "neg_inf": "non_finite", "overflow": "overflow",
                                                 "subnormal": "underflow", "y": "overflow",
                                                 "big": "overflow", "small": "underflow"}   # the weights
    assert fp16.keep_list(found) == ["sum", "scale_up", "scale_down"]
    # each run returns at most its segment's scanned tensors (plus what later segments read, and y)
    assert len(fetched) == -(-9 // per_segment) if per_segment < 9 else len(fetched) == 1
    carried = {"x", "relu", "overflow", "subnormal", "fits", "zeros", "y"}
    assert all(len(set(out) - carried) <= per_segment for out in fetched)


def test_fp16_readiness_on_a_long_chain_returns_one_segment_at_a_time(tmp_path, monkeypatch):
    """A chain of large activations: no run returns more than its segment's."""
    from deploykit.backends.ort import OrtRunner
    from deploykit.validate import fp16
    from deploykit.validate.graphinfo import inspect_model
    from deploykit.validate.inputs import Feed

    nodes, prev = [], "x"
    for i in range(6):
        nodes.append(h.make_node("Relu" if i % 2 else "Neg", [prev], [f"t{i}"], name=f"n{i}"))
        prev = f"t{i}"
    nodes.append(h.make_node("ReduceSum", [prev], ["y"], name="total", keepdims=0))
    model = zoo.model(nodes, [zoo.vi("x", T.FLOAT, [256, 256])], [zoo.vi("y", T.FLOAT, [])])
    path = zoo.write(model, tmp_path / "m")
    sizes: list[int] = []
    infer = OrtRunner.infer_impl

    def record(self, feed):
        out = infer(self, feed)
        sizes.append(sum(np.asarray(v).size for v in out.values()))
        return out

    monkeypatch.setattr(OrtRunner, "infer_impl", record)
    monkeypatch.setattr(fp16, "SEGMENT_TENSORS", 2)
    check = fp16.readiness(path, inspect_model(model), Feed("256x256", {"x": np.ones((256, 256), np.float32)}))
    assert check.passed and check.data["checked"] == 7
    assert sizes == [2 * 256 * 256] * 3 + [1]   # two activations a run, then y alone


def test_segments_feed_tensors_an_if_branch_reads_from_outer_scope(tmp_path, monkeypatch):
    """An If branch reads `big` and `tiny`, produced two segments earlier: each segmentation finds the same."""
    from deploykit.validate import fp16
    from deploykit.validate.graphinfo import inspect_model
    from deploykit.validate.inputs import Feed

    def branch(name, source):
        return h.make_graph([h.make_node("Mul", [source, "two"], [f"{name}_out"], name=f"{name}_mul")], name, [],
                            [zoo.vi(f"{name}_out", T.FLOAT, SHAPE)])

    nodes = [h.make_node("Mul", ["x", "k_big"], ["big"], name="up"),
             h.make_node("Mul", ["x", "k_tiny"], ["tiny"], name="down"),
             h.make_node("Relu", ["x"], ["relu"], name="relu"),
             h.make_node("If", ["c"], ["y"], name="branch", then_branch=branch("then", "big"),
                         else_branch=branch("else", "tiny"))]
    inits = [nh.from_array(np.array(v, np.float32), n) for n, v in (("k_big", 1e6), ("k_tiny", 1e-7), ("two", 2.0))]
    model = zoo.model(nodes, [zoo.vi("x", T.FLOAT, SHAPE), zoo.vi("c", T.BOOL, [])],
                      [zoo.vi("y", T.FLOAT, SHAPE)], inits)
    path = zoo.write(model, tmp_path / "m")
    info = inspect_model(model)
    for cond in (True, False):
        feed = Feed("4x64", {"x": feed_x(), "c": np.array(cond)})
        results = []
        for per_segment in (1, 48):
            monkeypatch.setattr(fp16, "SEGMENT_TENSORS", per_segment)
            found, checked = fp16.scan(path, info, [feed])
            results.append(([t.as_dict() for t in found], checked))
        assert results[0] == results[1]
        kinds = {t["tensor"]: t["kind"] for t in results[0][0]}
        assert kinds["y"] == ("overflow" if cond else "underflow") and kinds["big"] == "overflow"
