"""GSoP: the official Bottleneck keys, MPNCOV's covariance, Bottleneck checkpoints, fp16 at realistic scale."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx.reference import ReferenceEvaluator

from deploykit import blocks
from deploykit.backends.ort import OrtRunner
from deploykit.blocks.gsop import GSoP, GSoPSafe
from deploykit.blocks.init import randomize_for_verification
from deploykit.errors import UserInputError
from deploykit.export.exporters import export_onnx
from deploykit.export.fp16 import convert_to_fp16
from tests.blocks.helpers import identity_bn_state

FP16_MAX = 65504.0

# The attention modules of the official Bottleneck (attention='1'), in registration order.
OFFICIAL_KEYS = [
    "conv_for_DR.weight", "conv_for_DR.bias",
    "bn_for_DR.weight", "bn_for_DR.bias", "bn_for_DR.running_mean", "bn_for_DR.running_var",
    "bn_for_DR.num_batches_tracked",
    "row_bn.weight", "row_bn.bias", "row_bn.running_mean", "row_bn.running_var", "row_bn.num_batches_tracked",
    "row_conv_group.weight", "row_conv_group.bias",
    "fc_adapt_channels.weight", "fc_adapt_channels.bias",
]


def mpncov_covariance(y: torch.Tensor) -> torch.Tensor:
    """MPNCOV CovpoolLayer as written there: X I_hat X^T with I_hat = (1/M) I - (1/M^2) 1 1^T, M = H*W."""
    b, d, h, w = y.shape
    m = h * w
    x = y.reshape(b, d, m)
    i_hat = (1.0 / m) * torch.eye(m, dtype=y.dtype) - (1.0 / m / m) * torch.ones(m, m, dtype=y.dtype)
    return x @ i_hat @ x.transpose(1, 2)


def official_chan_att_forward(module: GSoP, pre_att: torch.Tensor) -> torch.Tensor:
    """The official Bottleneck's `chan_att` and `pre_att * att`, written with functional ops (eval mode)."""

    def bn(t, layer):
        return F.batch_norm(t, layer.running_mean, layer.running_var, layer.weight, layer.bias, False, 0.0, layer.eps)

    out = F.relu(pre_att)
    out = F.conv2d(out, module.conv_for_DR.weight, module.conv_for_DR.bias, stride=module.dr_stride)
    out = F.relu(bn(out, module.bn_for_DR))
    cov = mpncov_covariance(out)
    cov = cov.reshape(cov.shape[0], cov.shape[1], cov.shape[2], 1)
    cov = bn(cov, module.row_bn)
    d = module.ch_dim
    rows = F.conv2d(cov, module.row_conv_group.weight, module.row_conv_group.bias, groups=d)
    att = torch.sigmoid(F.conv2d(rows, module.fc_adapt_channels.weight, module.fc_adapt_channels.bias))
    return pre_att * att


def test_keys_and_shapes_are_the_official_bottleneck_attention():
    c, d = 256, 128
    state = blocks.create("gsop").state_dict()
    assert list(state) == OFFICIAL_KEYS
    assert state["conv_for_DR.weight"].shape == (d, c, 1, 1)
    assert state["row_conv_group.weight"].shape == (4 * d, 1, d, 1)   # kernel (d, 1), groups d
    assert state["fc_adapt_channels.weight"].shape == (c, 4 * d, 1, 1)


@pytest.mark.parametrize("channels,expected", [(256, 2), (512, 1), (1024, 1), (2048, 1)])
def test_dr_stride_follows_the_official_planes_rule(channels, expected):
    # Official: DR_stride = 2 if planes <= 64 else 1, planes = channels / 4 (Bottleneck expansion).
    assert GSoP(channels).conv_for_DR.stride == (expected, expected)
    assert GSoPSafe(channels, dr_stride=1).conv_for_DR.stride == (1, 1)


@pytest.mark.parametrize("variant", ["reference", "safe"])
@pytest.mark.parametrize("config,size", [({}, (28, 28)), ({}, (41, 17)), ({"channels": 512, "att_dim": 64}, (9, 13))])
def test_matches_the_official_formulation_in_float64(variant, config, size):
    module = randomize_for_verification(blocks.create("gsop", variant, **config), seed=3).eval().double()
    x = blocks.example_input("gsop", 2, height=size[0], width=size[1], seed=5, **config).double()
    with torch.no_grad():
        expected = official_chan_att_forward(module, x)
        actual = module(x)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [(7, 7), (41, 17), (1, 5)])
def test_twin_covariance_is_the_population_covariance(size):
    y = torch.rand(3, 16, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 40
    cov = GSoPSafe.covariance(y)
    assert cov.shape == (3, 16, 16, 1)
    for b in range(3):
        # torch.cov with correction=0 divides by M: an implementation independent of both formulations.
        torch.testing.assert_close(cov[b, :, :, 0], torch.cov(y[b].reshape(16, -1), correction=0))
    torch.testing.assert_close(cov[..., 0], mpncov_covariance(y))


def _bottleneck_state(gsop_state: dict, gen: torch.Generator) -> dict:
    """A state dict laid out as the official Bottleneck(256, 64, attention='1') with a downsample."""
    state = {}
    for name, shape in (("conv1", (64, 256, 1, 1)), ("conv2", (64, 64, 3, 3)), ("conv3", (256, 64, 1, 1)),
                        ("downsample.0", (256, 256, 1, 1))):
        state[f"{name}.weight"] = torch.randn(shape, generator=gen)
    for name, c in (("bn1", 64), ("bn2", 64), ("bn3", 256), ("downsample.1", 256)):
        state.update(identity_bn_state(name, c))
    state.update(gsop_state)
    return state


@pytest.mark.parametrize("variant", ["reference", "safe"])
def test_official_bottleneck_checkpoint_loads(variant, tmp_path):
    trained = randomize_for_verification(GSoP(256), seed=7).eval()
    state = _bottleneck_state(trained.state_dict(), torch.Generator().manual_seed(0))
    path = tmp_path / "gsop_net1.pth.tar"
    torch.save({"epoch": 90, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    module = blocks.create("gsop", variant).eval()
    report = blocks.load_checkpoint(module, path)
    assert report.converted_by == ["convert_bottleneck_layout"] and report.stripped_prefix == "module."
    x = blocks.example_input("gsop", 2, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(module(x), trained(x), rtol=1e-5, atol=1e-6)


def test_plain_state_dict_with_dataparallel_prefix_loads_without_conversion():
    trained = randomize_for_verification(GSoP(256), seed=1)
    module = blocks.create("gsop", "safe")
    report = blocks.load_checkpoint(module, {f"module.{k}": v for k, v in trained.state_dict().items()})
    assert report.converted_by == [] and report.stripped_prefix == "module."
    assert all(torch.equal(module.state_dict()[k], v) for k, v in trained.state_dict().items())


def test_bottleneck_with_spatial_attention_is_not_taken_for_channel_gsop():
    # attention='+' adds the position-attention modules: not this block, so the keys are reported.
    state = _bottleneck_state(GSoP(256).state_dict(), torch.Generator().manual_seed(0))
    state["conv_for_DR_spatial.weight"] = torch.zeros(128, 256, 1, 1)
    with pytest.raises(UserInputError, match="unexpected"):
        blocks.load_checkpoint(blocks.create("gsop"), state)


# ---- fp16 at realistic activation scale ------------------------------------------------------------------


class NaiveGSoP(GSoPSafe):
    """The textbook formulation: sum the M raw products, divide by M afterwards (static size, for the test)."""

    positions = 28 * 28

    @classmethod
    def covariance(cls, y: torch.Tensor) -> torch.Tensor:
        flat = y.flatten(2)
        flat = flat - flat.mean(dim=-1, keepdim=True)
        return ((flat @ flat.transpose(1, 2)) / cls.positions).unsqueeze(-1)


def _fp16_graph(module, x, path):
    export_onnx(module, (x,), path, exporter="torchscript", input_names=["input"], output_names=["output"],
                dynamic_axes={"input": {0: ("batch", 1, 8)}})
    return convert_to_fp16(onnx.load(str(path)))


def _run_ort(model, x: np.ndarray) -> np.ndarray:
    with OrtRunner(model.SerializeToString()) as runner:
        return runner.infer({"input": x})["output"]


def _run_typed(model, x: np.ndarray) -> np.ndarray:
    # ONNX's reference evaluator stores every tensor in the type the graph declares, as TensorRT does with a
    # strongly typed network; ORT CPU has no fp16 MatMul kernel and runs such nodes in fp32 islands.
    with np.errstate(all="ignore"):
        return ReferenceEvaluator(model).run(None, {"input": x})[0]


@pytest.mark.parametrize("size,dr_stride", [((56, 56), None), ((28, 28), 1)], ids=["56x56-stride2", "28x28-stride1"])
def test_fp16_graph_stays_finite_and_accurate_at_activation_scale_50(tmp_path, size, dr_stride):
    ref = randomize_for_verification(GSoP(256, dr_stride=dr_stride), seed=0).eval()
    x = (torch.rand(1, 256, *size, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 50
    with torch.no_grad():
        y = torch.relu(ref.bn_for_DR(ref.conv_for_DR(torch.relu(x))))
        cov = mpncov_covariance(y).unsqueeze(-1)
        # Statistics a network trained at this scale would hold, so the attention is not saturated.
        ref.row_bn.running_mean.copy_(cov.mean(dim=(0, 2, 3)))
        ref.row_bn.running_var.copy_(cov.var(dim=(0, 2, 3)))
        expected = ref(x).numpy()
        att = ref.channel_attention(x)
    m = y.shape[2] * y.shape[3]
    assert m == 784 and float(y.abs().max()) > 50
    assert float(att.min()) < 0.2 and float(att.max()) > 0.8   # a spread-out attention, not all 0 or 1
    raw_sum = float((cov * m).abs().max())
    assert raw_sum > FP16_MAX > float(cov.abs().max())             # the premise: sum-then-divide overflows

    safe = GSoPSafe(256, dr_stride=dr_stride).eval()
    safe.load_state_dict(ref.state_dict())
    naive = NaiveGSoP(256, dr_stride=dr_stride).eval()
    naive.load_state_dict(ref.state_dict())
    safe_fp16 = _fp16_graph(safe, x, tmp_path / "safe.onnx")
    naive_fp16 = _fp16_graph(naive, x, tmp_path / "naive.onnx")

    scale = float(np.abs(expected).max())
    for run in (_run_ort, _run_typed):
        out = run(safe_fp16, x.numpy())
        err = float(np.abs(out - expected).max())
        print(f"{size} {run.__name__}: twin fp16 max abs error {err:.4f} (output max {scale:.1f})")
        assert np.isfinite(out).all()
        assert err <= 5e-3 * scale
    naive_out = _run_typed(naive_fp16, x.numpy())
    assert not np.isfinite(naive_out).all()
