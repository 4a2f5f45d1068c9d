"""HA-CNN: Harmonious Attention CNN for person re-identification (soft + hard attention).

Paper: Li, Zhu, Gong, "Harmonious Attention Network for Person Re-Identification", CVPR 2018,
https://arxiv.org/abs/1802.08122. Official PyTorch code: KaiyangZhou/deep-person-reid,
`torchreid/models/hacnn.py` (`HACNN`).

Layout, as the authors' network (160 x 64 input only; the official forward asserts it):
- `conv` = ConvBlock(3, 32, 3, stride 2); three global stages `inceptionK` = Sequential(InceptionA, InceptionB)
  widths 128, 256, 384, each followed by `haK` = HarmAttn: `soft_attn` (deploykit block `hacnn`, the map the
  stage output is multiplied by) and `hard_attn` (`fc` Linear(C, 8) on the pooled features, tanh: four
  translations, one per horizontal stripe);
- a local branch: for each of the four regions, a spatial transformer samples the previous stage's input
  (stage 1: the `conv` output) with theta = [[1, 0, tx], [0, 0.25, ty]] (a quarter-height stripe at the
  predicted offset, `affine_grid` + `grid_sample`), resizes it bilinearly (align_corners=True) to 24x28, 12x14,
  6x7, adds the previous local feature and runs the shared `local_convK` (InceptionB);
- `fc_global` / `fc_local` = Linear -> BatchNorm1d -> ReLU (512 each); `classifier_global` / `classifier_local`
  are used in training only. In eval mode the output is the L2-normalised global and local features
  concatenated, (B, 1024): the re-identification embedding.

Reference (`HACNN`): the authors' computation. `affine_grid` / `grid_sample` are called with
align_corners=False, which is what the authors' calls (no argument) mean on every PyTorch since 1.3.

Export-safe twin (`HACNNSafe`, same constructor and keys): the soft attention is the `hacnn` safe twin; pooling
is a ReduceMean instead of `avg_pool2d` with a kernel read from `x.size()`; the hard attention keeps its (B, 8)
output (no `view(-1, 4, 2)`); the transformer's sampling grid is built without `affine_grid`: the scale part of
theta is constant, so the grid is a constant buffer (the base grid of each stage's fixed size times the scale)
plus the predicted translation broadcast over H x W, and `grid_sample` exports as one GridSample (opset 16+);
the bilinear resize of each crop to its fixed size (align_corners=True) is a product with two constant
interpolation matrices (rows, then columns), since a Resize to fixed sizes exports with the batch and channel
counts read from the tensor. No reshape and no size read from the tensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deploykit import blocks
from deploykit.blocks.hacnn import ConvBlock

INPUT_SIZE = (160, 64)
# Output sizes of the transformer crops per stage, as the authors' forward.
LOCAL_SIZES = ((24, 28), (12, 14), (6, 7))
# (s_w, s_h) scale of every region: full width, a quarter of the height.
REGION_SCALE = ((1.0, 0.0), (0.0, 0.25))
REGIONS = 4


class InceptionA(nn.Module):
    """Four streams (1x1 -> 3x3, 1x1 -> 3x3, 1x1 -> 3x3, avgpool -> 1x1), out_channels / 4 each, concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 4
        self.stream1 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, p=1))
        self.stream2 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, p=1))
        self.stream3 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, p=1))
        self.stream4 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), ConvBlock(in_channels, mid, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.stream1(x), self.stream2(x), self.stream3(x), self.stream4(x)], dim=1)


class InceptionB(nn.Module):
    """Stride-2 reduction: 1x1 -> 3x3/2, 1x1 -> 3x3 -> 3x3/2, maxpool/2 -> 1x1 (x2 width), concatenated."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        mid = out_channels // 4
        self.stream1 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, s=2, p=1))
        self.stream2 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, p=1),
                                     ConvBlock(mid, mid, 3, s=2, p=1))
        self.stream3 = nn.Sequential(nn.MaxPool2d(3, stride=2, padding=1), ConvBlock(in_channels, mid * 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.stream1(x), self.stream2(x), self.stream3(x)], dim=1)


class HardAttn(nn.Module):
    """Hard attention: four (tx, ty) translations from the pooled features; key `fc.*` as the authors'.

    Args:
        in_channels: channels C of the features.
    """

    def __init__(self, in_channels: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, REGIONS * 2)
        # The authors' initialisation: no dependence on x, stripes centred at -0.75, -0.25, 0.25, 0.75.
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.bias.copy_(torch.tensor([0, -0.75, 0, -0.25, 0, 0.25, 0, 0.75], dtype=torch.float))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 4, 2), as the official module."""
        pooled = F.avg_pool2d(x, x.size()[2:]).view(x.size(0), x.size(1))
        return torch.tanh(self.fc(pooled)).view(-1, REGIONS, 2)

    def forward_flat(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 8): region r's translation is columns 2r, 2r + 1. No pooling kernel, no view."""
        return torch.tanh(self.fc(x.mean(dim=(2, 3))))


class HarmAttn(nn.Module):
    """Soft attention map and hard attention translations of one stage."""

    def __init__(self, in_channels: int, variant: str = "reference"):
        super().__init__()
        self.soft_attn = blocks.create("hacnn", variant, in_channels=in_channels)
        self.hard_attn = HardAttn(in_channels)

    def forward(self, x: torch.Tensor):
        return self.soft_attn(x), self.hard_attn(x)


class HACNN(nn.Module):
    """Reference HA-CNN with the authors' keys and computation.

    Args:
        num_classes: identities of the training set (751 for Market-1501); only the training classifiers use it.
        nchannels: widths of the three stages after concatenation.
        feat_dim: width of each embedding stream.
        learn_region: build the local (hard attention) branch.
        variant: "reference" or "safe" soft attention (`HACNNSafe` is the export-safe network).
    """

    # Training-only heads: excluded when counting test-time parameters (deploykit.networks.count_parameters).
    TRAINING_ONLY_PREFIXES = ("classifier_global.", "classifier_local.")

    def __init__(self, num_classes: int = 751, nchannels: Sequence[int] = (128, 256, 384), feat_dim: int = 512,
                 learn_region: bool = True, variant: str = "reference"):
        super().__init__()
        self.learn_region = learn_region
        self.conv = ConvBlock(3, 32, 3, s=2, p=1)
        widths = (32, *nchannels)
        for k in range(3):
            self.add_module(f"inception{k + 1}", nn.Sequential(InceptionA(widths[k], widths[k + 1]),
                                                               InceptionB(widths[k + 1], widths[k + 1])))
            self.add_module(f"ha{k + 1}", HarmAttn(widths[k + 1], variant))
        self.fc_global = nn.Sequential(nn.Linear(nchannels[2], feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU())
        self.classifier_global = nn.Linear(feat_dim, num_classes)
        if learn_region:
            for k in range(3):
                self.add_module(f"local_conv{k + 1}", InceptionB(widths[k], widths[k + 1]))
            self.fc_local = nn.Sequential(nn.Linear(nchannels[2] * REGIONS, feat_dim), nn.BatchNorm1d(feat_dim),
                                          nn.ReLU())
            self.classifier_local = nn.Linear(feat_dim, num_classes)
        self.feat_dim = feat_dim * (2 if learn_region else 1)

    @staticmethod
    def _check_size(x: torch.Tensor) -> None:
        if tuple(x.shape[2:]) != INPUT_SIZE:
            raise ValueError(f"HA-CNN takes {INPUT_SIZE[0]}x{INPUT_SIZE[1]} inputs, got {tuple(x.shape[2:])}")

    @staticmethod
    def _theta(translation: torch.Tensor) -> torch.Tensor:
        """(B, 2) translations -> (B, 2, 3) affine matrices with the fixed region scale."""
        scale = torch.tensor(REGION_SCALE, dtype=translation.dtype, device=translation.device)
        return torch.cat([scale.expand(translation.size(0), 2, 2), translation.unsqueeze(2)], dim=2)

    def _stn(self, x: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self._theta(translation), list(x.size()), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor):
        self._check_size(x)
        x = self.conv(x)
        stage_in, local = x, [None] * REGIONS
        for k in range(3):
            feats = getattr(self, f"inception{k + 1}")(stage_in)
            attn, theta = getattr(self, f"ha{k + 1}")(feats)
            out = feats * attn
            if self.learn_region:
                for r in range(REGIONS):
                    crop = F.interpolate(self._stn(stage_in, theta[:, r, :]), LOCAL_SIZES[k], mode="bilinear",
                                         align_corners=True)
                    local[r] = getattr(self, f"local_conv{k + 1}")(crop if k == 0 else crop + local[r])
            stage_in = out
        return self._head(stage_in, local)

    def _head(self, x3_out: torch.Tensor, local: list):
        x_global = self.fc_global(F.avg_pool2d(x3_out, x3_out.size()[2:]).view(x3_out.size(0), x3_out.size(1)))
        x_local = None
        if self.learn_region:
            pooled = [F.avg_pool2d(f, f.size()[2:]).view(f.size(0), -1) for f in local]
            x_local = self.fc_local(torch.cat(pooled, 1))
        return self._outputs(x_global, x_local)

    def _outputs(self, x_global: torch.Tensor, x_local: torch.Tensor | None):
        if not self.training:
            # Re-identification embedding: each stream L2-normalised, then concatenated.
            x_global = x_global / x_global.norm(p=2, dim=1, keepdim=True)
            if x_local is None:
                return x_global
            return torch.cat([x_global, x_local / x_local.norm(p=2, dim=1, keepdim=True)], 1)
        logits_global = self.classifier_global(x_global)
        return logits_global if x_local is None else (logits_global, self.classifier_local(x_local))


class HACNNSafe(HACNN):
    """Export-safe HA-CNN: safe soft attention, constant-grid transformer, ReduceMean pooling, no reshapes."""

    def __init__(self, *args, **kwargs):
        kwargs["variant"] = "safe"
        super().__init__(*args, **kwargs)
        # The transformer samples maps of fixed size (the conv output and stage outputs for 160 x 64 input).
        h, w = INPUT_SIZE[0] // 2, INPUT_SIZE[1] // 2
        for k in range(3):
            out_h, out_w = LOCAL_SIZES[k]
            self.register_buffer(f"base_grid{k + 1}", self._scaled_base_grid(h >> k, w >> k), persistent=False)
            self.register_buffer(f"resize_rows{k + 1}", self._bilinear_matrix(h >> k, out_h), persistent=False)
            self.register_buffer(f"resize_cols{k + 1}", self._bilinear_matrix(w >> k, out_w).t().contiguous(),
                                 persistent=False)

    @staticmethod
    def _scaled_base_grid(h: int, w: int) -> torch.Tensor:
        """(1, h, w, 2): the align_corners=False sampling positions of an h x w map, times the region scale."""
        xs = (torch.arange(w, dtype=torch.float64) * 2 + 1) / w - 1
        ys = (torch.arange(h, dtype=torch.float64) * 2 + 1) / h - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        (a, b), (c, d) = REGION_SCALE
        return torch.stack([a * gx + b * gy, c * gx + d * gy], dim=-1).unsqueeze(0).float()

    @staticmethod
    def _bilinear_matrix(n_in: int, n_out: int) -> torch.Tensor:
        """(n_out, n_in) weights of a 1-D bilinear resize with align_corners=True (two taps per row)."""
        m = torch.zeros(n_out, n_in, dtype=torch.float64)
        step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        for i in range(n_out):
            src = i * step
            i0 = min(int(src), n_in - 1)
            frac = src - i0
            m[i, i0] += 1.0 - frac
            m[i, min(i0 + 1, n_in - 1)] += frac
        return m.float()

    def forward(self, x: torch.Tensor):
        self._check_size(x)
        x = self.conv(x)
        stage_in, local = x, [None] * REGIONS
        for k in range(3):
            ha = getattr(self, f"ha{k + 1}")
            feats = getattr(self, f"inception{k + 1}")(stage_in)
            out = feats * ha.soft_attn(feats)
            if self.learn_region:
                theta = ha.hard_attn.forward_flat(feats)                      # (B, 8)
                base = getattr(self, f"base_grid{k + 1}")                     # (1, h, w, 2)
                for r in range(REGIONS):
                    grid = base + theta[:, None, None, 2 * r:2 * r + 2]       # translation over every position
                    crop = F.grid_sample(stage_in, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
                    # The bilinear resize as two constant matrices: a Resize to fixed sizes would read the
                    # batch and channel counts from the tensor.
                    crop = getattr(self, f"resize_rows{k + 1}") @ crop @ getattr(self, f"resize_cols{k + 1}")
                    local[r] = getattr(self, f"local_conv{k + 1}")(crop if k == 0 else crop + local[r])
            stage_in = out
        x_global = self.fc_global(stage_in.mean(dim=(2, 3)))
        x_local = self.fc_local(torch.cat([f.mean(dim=(2, 3)) for f in local], 1)) if self.learn_region else None
        return self._outputs(x_global, x_local)


def hacnn(variant: str = "reference", **kwargs) -> HACNN:
    """HA-CNN for 160 x 64 person crops (num_classes 751: Market-1501)."""
    return HACNNSafe(**kwargs) if variant == "safe" else HACNN(variant=variant, **kwargs)
