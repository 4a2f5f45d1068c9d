"""SE: the timm/Cadene key layout, the Linear `fc.0/fc.2` layout, and the paper's formula."""

from __future__ import annotations

import pytest
import torch

from deploykit import blocks
from deploykit.errors import UserInputError


def se_formula(x, w1, b1, w2, b2):
    """Hu et al. eq. 2-3: s = sigmoid(W2 relu(W1 z)), z the channel means; output x * s."""
    z = x.mean(dim=(2, 3))
    s = torch.sigmoid(torch.relu(z @ w1.t() + b1) @ w2.t() + b2)
    return x * s[:, :, None, None]


def test_keys_are_timm_senet_semodule():
    assert sorted(blocks.create("se").state_dict()) == ["fc1.bias", "fc1.weight", "fc2.bias", "fc2.weight"]


@pytest.mark.parametrize("variant", ["reference", "safe"])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_layout_checkpoint_loads_and_matches_the_formula(variant, with_bias, tmp_path):
    c, r = 64, 16
    gen = torch.Generator().manual_seed(0)
    w1, w2 = torch.randn(c // r, c, generator=gen) * 0.3, torch.randn(c, c // r, generator=gen) * 0.3
    b1 = torch.randn(c // r, generator=gen) if with_bias else torch.zeros(c // r)
    b2 = torch.randn(c, generator=gen) if with_bias else torch.zeros(c)
    state = {"fc.0.weight": w1, "fc.2.weight": w2}
    if with_bias:
        state.update({"fc.0.bias": b1, "fc.2.bias": b2})
    # DataParallel prefix and a nested dict, as training scripts save them.
    path = tmp_path / "se.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    module = blocks.create("se", variant).eval()
    report = blocks.load_checkpoint(module, path)
    assert report.converted_by == ["convert_linear_fc_layout"] and report.stripped_prefix == "module."
    x = blocks.example_input("se", 2)
    with torch.no_grad():
        torch.testing.assert_close(module(x), se_formula(x, w1, b1, w2, b2), rtol=1e-5, atol=1e-6)


def test_mismatched_checkpoint_lists_keys():
    module = blocks.create("se")
    with pytest.raises(UserInputError, match=r"missing \[fc1.bias.*unexpected \[other.weight\]"):
        blocks.load_checkpoint(module, {"other.weight": torch.zeros(1)})


def test_wrong_channels_checkpoint_names_shapes():
    state = blocks.create("se", channels=128).state_dict()
    with pytest.raises(UserInputError, match="shapes do not match"):
        blocks.load_checkpoint(blocks.create("se"), state)
