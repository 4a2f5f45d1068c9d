"""The source layer: every kind of source yields the same object; named inputs, verification points and output
names; the networks package no longer imports the export package (the old circle)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from deploykit.errors import UserInputError
from deploykit.export.config import parse_config
from deploykit.sources import build_source
from deploykit.sources.outputs import flat_outputs, flatten
from deploykit.sources.specs import (
    Dim, TensorInput, flags_to_config, make_feed, parse_dynamic_flag, parse_input_flag, verification_points,
)

TWO_INPUTS = textwrap.dedent("""
    import torch
    from torch import nn


    class SELayer(nn.Module):   # the common hand-written SE (Linear fc, as in many repositories)
        def __init__(self, channel, reduction=4):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Sequential(nn.Linear(channel, channel // reduction, bias=False), nn.ReLU(inplace=True),
                                    nn.Linear(channel // reduction, channel, bias=False), nn.Sigmoid())

        def forward(self, x):
            b, c, _, _ = x.size()
            y = self.avg_pool(x).view(b, c)
            return x * self.fc(y).view(b, c, 1, 1).expand_as(x)


    class ImageMaskIds(nn.Module):
        def __init__(self, width=8, classes=5):
            super().__init__()
            self.stem = nn.Conv2d(4, width, 3, padding=1)
            self.bn = nn.BatchNorm2d(width)
            self.se = SELayer(width)
            self.emb = nn.Embedding(classes, width)
            self.head = nn.Conv2d(width, 2, 1)

        def forward(self, image, mask, ids):
            x = self.bn(self.stem(torch.cat([image, mask], 1)))
            x = self.se(x) + self.emb(ids).mean(1)[:, :, None, None]
            return {"seg": self.head(x), "aux": (x.mean((2, 3)), ids.sum(1))}
""")


def _inputs(dyn=True):
    b = {"opt": 2, "min": 1, "max": 4} if dyn else 2
    hw = {"opt": 16, "min": 8, "max": 24} if dyn else 16
    return [{"name": "image", "shape": [b, 3, hw, hw]}, {"name": "mask", "shape": [b, 1, hw, hw]},
            {"name": "ids", "dtype": "int64", "shape": [b, 5], "high": 5}]


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "user_net.py"
    path.write_text(TWO_INPUTS)
    return path


def test_networks_no_longer_import_export():
    code = ("import sys, deploykit.networks, deploykit.blocks; "
            "print(sorted(m for m in sys.modules if m.startswith('deploykit.export')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_verification_points_move_every_dynamic_dim_together():
    image = TensorInput("image", "float32", (Dim(2, 1, 4), Dim.fixed(3), Dim(16, 8, 24), Dim(16, 8, 24)))
    mask = TensorInput("mask", "float32", (Dim(2, 1, 4), Dim.fixed(1), Dim(16, 8, 24), Dim(16, 8, 24)))
    points = verification_points([image, mask])
    assert points == [
        {"image": (2, 3, 16, 16), "mask": (2, 1, 16, 16)},   # opt
        {"image": (1, 3, 8, 8), "mask": (1, 1, 8, 8)},       # min
        {"image": (4, 3, 24, 24), "mask": (4, 1, 24, 24)},   # max
        {"image": (3, 3, 17, 17), "mask": (3, 1, 17, 17)},   # odd
    ]
    static = TensorInput("x", "float32", (Dim.fixed(1), Dim.fixed(3)))
    assert verification_points([static]) == [{"x": (1, 3)}]


def test_feeds_follow_each_inputs_dtype_and_value_range():
    ids = TensorInput("ids", "int64", (Dim.fixed(4), Dim.fixed(50)), low=3, high=7)
    flags = TensorInput("keep", "bool", (Dim.fixed(64),))
    half = TensorInput("x", "float16", (Dim.fixed(8),))
    feed = make_feed([ids, flags, half], {"ids": (4, 50), "keep": (64,), "x": (8,)}, seed=0)
    assert feed["ids"].dtype == np.int64 and feed["ids"].min() >= 3 and feed["ids"].max() < 7
    assert feed["keep"].dtype == np.bool_ and 0 < feed["keep"].sum() < 64
    assert feed["x"].dtype == np.float16


def test_output_names_are_stable_paths():
    t = torch.zeros(1)
    assert [n for n, _ in flatten(t)] == ["output"]
    assert [n for n, _ in flatten({"boxes": t, "aux": (t, [t, t])})] == ["boxes", "aux.0", "aux.1.0", "aux.1.1"]
    assert [n for n, _ in flatten((t, (t, t)))] == ["out.0", "out.1.0", "out.1.1"]
    from collections import namedtuple

    pair = namedtuple("Pair", "logits embedding")
    assert [n for n, _ in flatten(pair(t, t))] == ["logits", "embedding"]
    with pytest.raises(UserInputError, match="non-string keys"):
        flatten({0: t})
    with pytest.raises(UserInputError, match="returns a int at 'out.1'"):
        flatten((t, 3))


def test_flat_outputs_keeps_forward_arity_for_torch_export():
    class Two(torch.nn.Module):
        def forward(self, a, b):
            return {"s": a + b, "d": a - b}

    wrapped = flat_outputs(Two(), 2)
    a, b = torch.randn(2, 3), torch.randn(2, 3)
    s, d = wrapped(a, b)
    assert torch.equal(s, a + b) and torch.equal(d, a - b)
    dim = torch.export.Dim("n", min=1, max=8)
    program = torch.export.export(wrapped, (a, b), dynamic_shapes=({0: dim}, {0: dim}))
    assert len(program.graph_signature.user_inputs) == 2


@pytest.mark.parametrize("value, shape, dtype", [
    ("images:1x3x640x640", [1, 3, 640, 640], "float32"), ("ids:2x16:int64", [2, 16], "int64"),
    ("keep:8:bool", [8], "bool"), ("x.in:4x4:float16", [4, 4], "float16")])
def test_input_flags(value, shape, dtype):
    spec = parse_input_flag(value)
    assert (spec.shape, spec.dtype) == (shape, dtype)


def test_dynamic_flags_default_and_explicit_ranges():
    flags = {"images": parse_input_flag("images:2x3x64x48"), "ids": parse_input_flag("ids:2x16:int64:0..30")}
    parse_dynamic_flag("images:0,2=32:64:128,3", flags)
    (images, ids) = flags_to_config(list(flags.values()))
    assert images["shape"] == [{"min": 1, "opt": 2, "max": 4}, 3, {"min": 32, "opt": 64, "max": 128},
                               {"min": 24, "opt": 48, "max": 96}]
    assert (ids["low"], ids["high"]) == (0, 30)


@pytest.mark.parametrize("value, flags, message", [
    ("images:1x3xax4", None, "not NAME:DIMxDIM"), ("images:1x3:complex64", None, "unknown dtype"),
    ("images:0x3", None, "zero size"), ("x:2:float32:0..4", None, "integer input"),
    ("mask:0", {"images": "images:1x3"}, "which no --input declares"),
    ("images:5", {"images": "images:1x3"}, "outside input 'images' of rank 2"),
    ("images:1=4:2:8", {"images": "images:1x3"}, "MIN <= OPT <= MAX"),
])
def test_bad_flags_say_what_to_do(value, flags, message):
    with pytest.raises(UserInputError, match=message):
        if flags is None:
            parse_input_flag(value)
        else:
            parse_dynamic_flag(value, {k: parse_input_flag(v) for k, v in flags.items()})


def test_registry_block_source_keeps_its_shapes_and_names():
    from deploykit.export.verify import verification_shapes

    config = parse_config({"source": {"block": "se", "args": {"channels": 16}},
                           "input": {"channels": 16, "batch": {"min": 1, "opt": 2, "max": 4},
                                     "height": {"opt": 8, "min": 4, "max": 12}, "width": {"opt": 8}}})
    source = build_source(config)
    assert source.kind == "block" and source.channels == 16 and source.output_names == ["output"]
    assert [p["input"] for p in source.points] == verification_shapes(config, 16)
    assert source.weights_report["seeded_random"] and source.rebuild["block"] == "se"
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(source.exported(x), source.reference(x), atol=1e-5)


def test_user_module_source(model_file):
    config = parse_config({"source": {"module": f"{model_file}:ImageMaskIds", "args": {"width": 8}},
                           "inputs": _inputs()})
    source = build_source(config)
    assert source.kind == "module" and source.input_names == ["image", "mask", "ids"]
    assert source.output_names == ["seg", "aux.0", "aux.1"]
    assert len(source.points) == 4 and source.weights_report["seeded_random"]
    conv = source.conversion
    assert conv["used"] and [c["block"] for c in conv["replaced"]] == ["se"]
    assert source.exported is not source.reference
    feed = make_feed(source.inputs, source.points[2], seed=3)
    args = [torch.from_numpy(feed[n]) for n in source.input_names]
    with torch.no_grad():
        for a, b in zip(source.exported(*args), source.reference(*args)):
            assert torch.allclose(a.float(), b.float(), atol=1e-5)
    # --no-rewrite: the model as written
    config = parse_config({"source": {"module": f"{model_file}:ImageMaskIds"}, "inputs": _inputs(), "rewrite": False})
    assert build_source(config).conversion is None


def test_module_checkpoint_is_reported_by_path_and_hash(model_file, tmp_path):
    sys.path.insert(0, str(model_file.parent))
    try:
        import user_net
    finally:
        sys.path.remove(str(model_file.parent))
    trained = user_net.ImageMaskIds(width=8)
    torch.nn.init.constant_(trained.head.weight, 0.25)
    ckpt = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "ema": {f"module.{k}": v for k, v in trained.state_dict().items()}}, ckpt)
    config = parse_config({"source": {"module": f"{model_file}:ImageMaskIds", "weights": str(ckpt)},
                           "inputs": _inputs(dyn=False)})
    source = build_source(config)
    w = source.weights_report
    assert w["path"] == str(ckpt.resolve()) and not w["seeded_random"]
    assert w["nested_key"] == "ema" and w["stripped_prefix"] == "module."
    import hashlib

    assert w["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert source.rebuild["weights"] == {"path": str(ckpt.resolve()), "sha256": w["sha256"]}
    assert torch.equal(source.reference.module.head.weight, torch.full_like(trained.head.weight, 0.25))
