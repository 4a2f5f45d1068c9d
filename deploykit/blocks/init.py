"""Deterministic non-trivial weights for verifying a block that has no checkpoint.

Freshly constructed blocks often compute trivial functions (BatchNorm with zero mean and unit variance,
Shuffle Attention's zero weights, HA-CNN's zero hard-attention weights), so a parity check on them proves
little. `randomize_for_verification` perturbs every floating parameter and BatchNorm statistic with a seeded
generator, keeping magnitudes close to a trained network's. Values are overwritten, not perturbed, so the
result depends only on the module's structure and the seed (validate rebuilds the same weights from a manifest).
"""

from __future__ import annotations

import torch
from torch import nn

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm2d)


@torch.no_grad()
def randomize_for_verification(module: nn.Module, seed: int = 0) -> nn.Module:
    """Overwrite parameters and norm statistics in place with seeded values; returns the module."""
    gen = torch.Generator().manual_seed(seed)

    def noise(t: torch.Tensor, std: float) -> torch.Tensor:
        return torch.randn(t.shape, generator=gen, dtype=torch.float32).to(t.dtype) * std

    for sub in module.modules():
        if isinstance(sub, _NORMS):
            if getattr(sub, "running_mean", None) is not None:
                sub.running_mean.copy_(noise(sub.running_mean, 0.2))
                sub.running_var.copy_(torch.rand(sub.running_var.shape, generator=gen) * 1.5 + 0.5)
            if getattr(sub, "weight", None) is not None:
                sub.weight.copy_(1.0 + noise(sub.weight, 0.2))
                sub.bias.copy_(noise(sub.bias, 0.2))
    norm_params = {id(p) for m in module.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    for p in module.parameters():
        if not p.is_floating_point() or id(p) in norm_params:
            continue
        # Weights at the scale of PyTorch's default init (1/sqrt(fan_in)); vectors and scalars at 0.2.
        std = p[0].numel() ** -0.5 if p.dim() >= 2 and p.shape[0] > 1 else 0.2
        p.copy_(noise(p, std))
    return module
