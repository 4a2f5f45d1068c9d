"""In PyTorch: every export-safe network computes its reference, and the network-level rewrites (HA-CNN's
transformer grid and resize, SMT's channel LayerNorm) equal the operations they replace."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from deploykit import networks
from deploykit.blocks.init import randomize_for_verification
from deploykit.networks.hacnn import HACNNSafe
from deploykit.networks.smt import channel_layer_norm
from tests.networks.small import SMALL_ARGS, small_size


def pair(name: str, seed: int = 0):
    ref = randomize_for_verification(networks.create(name, "reference", **SMALL_ARGS[name]), seed=seed).eval()
    safe = networks.create(name, "safe", **SMALL_ARGS[name]).eval()
    safe.load_state_dict(ref.state_dict(), strict=True)
    return ref, safe


@pytest.mark.parametrize("name", networks.names())
def test_safe_network_equals_reference(name):
    ref, safe = pair(name)
    h, w = small_size(name)
    x = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, actual = ref(x), safe(x)
    assert expected.shape == actual.shape and expected.shape[0] == 3
    scale = expected.abs().max().item()
    assert scale > 1e-3  # a live output, not a dead network
    err = (expected - actual).abs().max().item()
    assert err <= 1e-5 * max(1.0, scale), f"{name}: max abs {err:.3g} (output scale {scale:.3g})"


@pytest.mark.parametrize("name", ["resnet50_cbam", "smt_t"])
def test_non_square_and_odd_sizes(name):
    """The ResNet/SMT networks pool globally, so any size works, as the authors' AvgPool2d(7) does not."""
    ref, safe = pair(name)
    x = torch.randn(2, 3, 72, 40)
    with torch.no_grad():
        assert torch.allclose(ref(x), safe(x), atol=1e-5, rtol=1e-5)


def test_hacnn_grid_is_affine_grid():
    """The safe transformer grid (constant base + translation) equals affine_grid of the authors' theta."""
    g = torch.Generator().manual_seed(0)
    translation = torch.rand(5, 2, generator=g) * 2 - 1
    for k, (h, w) in enumerate([(80, 32), (40, 16), (20, 8)]):
        theta = torch.zeros(5, 2, 3)
        theta[:, 0, 0], theta[:, 1, 1] = 1.0, 0.25       # the authors' scale_factors [[1, 0], [0, 0.25]]
        theta[:, :, 2] = translation
        expected = F.affine_grid(theta, [5, 1, h, w], align_corners=False)
        actual = HACNNSafe._scaled_base_grid(h, w) + translation[:, None, None, :]
        assert torch.allclose(expected, actual, atol=1e-6), k


def test_hacnn_resize_matrices_are_bilinear_align_corners():
    x = torch.randn(2, 5, 80, 32)
    rows, cols = HACNNSafe._bilinear_matrix(80, 24), HACNNSafe._bilinear_matrix(32, 28)
    expected = F.interpolate(x, (24, 28), mode="bilinear", align_corners=True)
    # PyTorch computes the source positions in float32 (i * 79/23); the matrices hold them rounded once.
    assert torch.allclose(rows @ x @ cols.t(), expected, atol=5e-5)
    assert torch.allclose(rows.sum(1), torch.ones(24)) and (rows > 0).sum(1).max() <= 2


def test_hacnn_rejects_other_sizes_like_the_authors():
    for variant in ("reference", "safe"):
        model = networks.create("ha_cnn", variant).eval()
        with pytest.raises(ValueError, match="160x64"):
            model(torch.zeros(1, 3, 128, 64))


def test_hacnn_training_outputs_are_the_logits():
    model = networks.create("ha_cnn", "reference", num_classes=7).train()
    logits_global, logits_local = model(torch.randn(2, 3, 160, 64))
    assert logits_global.shape == logits_local.shape == (2, 7)
    embedding = model.eval()(torch.randn(2, 3, 160, 64))
    assert embedding.shape == (2, 1024)
    assert torch.allclose(embedding[:, :512].norm(dim=1), torch.ones(2), atol=1e-5)


def test_channel_layer_norm_is_the_token_layer_norm():
    norm = torch.nn.LayerNorm(24, eps=1e-6)
    randomize_for_verification(norm, seed=3)
    x = torch.randn(2, 24, 5, 7)
    tokens = x.flatten(2).transpose(1, 2)
    expected = norm(tokens).transpose(1, 2).reshape(2, 24, 5, 7)
    assert torch.allclose(channel_layer_norm(x, norm), expected, atol=1e-6)
