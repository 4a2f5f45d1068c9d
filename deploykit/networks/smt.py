"""SMT: Scale-Aware Modulation Transformer (SMT-T, SMT-S, SMT-B).

Paper: Lin, Wu, Fan, Li, Wang, "Scale-Aware Modulation Meet Transformer", ICCV 2023,
https://arxiv.org/abs/2307.08579. Official code: AFeng-x/SMT, `models/smt.py` (`smt_t`, `smt_s`, `smt_b`) with the
configurations of `configs/smt/smt_{tiny,small,base}_224.yaml`.

Layout, as the authors' network (and so the released checkpoints' keys):
- stage 1 embeds with `patch_embed1` = `Head`: `conv` = Sequential(conv k x k stride 2 (k = 3, or 7 for SMT-B;
  no bias), BN, ReLU, conv 2x2 stride 2), then LayerNorm `norm` (eps 1e-5) over tokens; stages 2-4 embed with
  `OverlapPatchEmbed`: `proj` conv 3x3 stride 2, `norm` LayerNorm (eps 1e-5);
- `blockN` = ModuleList of `Block`: `norm1` (LayerNorm eps 1e-6) -> `attn` -> residual; `norm2` -> `mlp` ->
  residual. `attn` is SMT's Attention (deploykit block `sam`): scale-aware modulation in stages 1-3, multi-head
  self-attention in stage 4 and in the odd blocks of stage 3. `mlp` = `fc1` -> `act(x + dwconv(x))` (a 3x3
  depthwise conv on the token image, keys `mlp.dwconv.dwconv.*`) -> `fc2`;
- `normN` (LayerNorm eps 1e-6) closes each stage; the classifier `head` takes the mean over the last tokens.
Optional layer scale (`gamma_1`, `gamma_2`), off in every released configuration, is supported for completeness.

Reference (`SMT`): the authors' token computation, (B, N, C) tokens with H and W passed along, the attention
through the `sam` reference's token interface. Export-safe twin (`SMTSafe`, same constructor and keys): the
whole network stays NCHW. Token Linears become 1x1 convolutions with the same weights, LayerNorm over tokens
is a LayerNormalization over the channel axis (two transposes around it), the attention is the `sam` safe twin
(NCHW native), the MLP's depthwise conv runs on the NCHW map directly. No reshape reads H, W or the batch from
the tensor, so the graph has no shape computation with a dynamic batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from deploykit import blocks
from deploykit.blocks.common import linear_as_conv1x1

BLOCK_LN_EPS = 1e-6   # the authors' norm_layer for blocks and stage norms
EMBED_LN_EPS = 1e-5   # the patch embeddings use nn.LayerNorm's default


def channel_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW tensor (what the token LayerNorm computes per position)."""
    return F.layer_norm(x.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias,
                        norm.eps).permute(0, 3, 1, 2)


class DWConv(nn.Module):
    """3x3 depthwise conv of the token image; key `dwconv.*` as the authors' DWConv."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, bias=True, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(B, C, H, W))
        return x.flatten(2).transpose(1, 2)


class Mlp(nn.Module):
    """fc1 -> GELU(x + dwconv(x)) -> fc2 on tokens (dropout is identity at inference)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.fc1(x)
        x = self.drop(self.act(x + self.dwconv(x, H, W)))
        return self.drop(self.fc2(x))

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        x = linear_as_conv1x1(x, self.fc1)
        x = F.gelu(x + self.dwconv.dwconv(x))
        return linear_as_conv1x1(x, self.fc2)


class Block(nn.Module):
    """SMT block: pre-norm attention and MLP with residuals (keys as the authors' Block).

    Args:
        dim: channels.
        ca_num_heads: scale-aware modulation heads.
        sa_num_heads: self-attention heads.
        mlp_ratio: MLP hidden width / dim.
        qkv_bias: bias on the attention's token projections.
        ca_attention: 1 scale-aware modulation, 0 multi-head self-attention.
        expand_ratio: modulation expansion.
        use_layerscale: learnable per-channel residual scales gamma_1/gamma_2.
        layerscale_value: their initial value.
        variant: "reference" or "safe" attention block.
    """

    def __init__(self, dim: int, ca_num_heads: int, sa_num_heads: int, mlp_ratio: float, qkv_bias: bool,
                 ca_attention: int, expand_ratio: int, use_layerscale: bool = False,
                 layerscale_value: float = 1e-4, variant: str = "reference"):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.attn = blocks.create("sam", variant, dim=dim, ca_num_heads=ca_num_heads, sa_num_heads=sa_num_heads,
                                  qkv_bias=qkv_bias, ca_attention=ca_attention, expand_ratio=expand_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.use_layerscale = use_layerscale
        if use_layerscale:
            self.gamma_1 = nn.Parameter(layerscale_value * torch.ones(dim))
            self.gamma_2 = nn.Parameter(layerscale_value * torch.ones(dim))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        a = self.attn.forward_tokens(self.norm1(x), H, W)
        x = x + (self.gamma_1 * a if self.use_layerscale else a)
        m = self.mlp(self.norm2(x), H, W)
        return x + (self.gamma_2 * m if self.use_layerscale else m)

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(channel_layer_norm(x, self.norm1))
        x = x + (self.gamma_1[:, None, None] * a if self.use_layerscale else a)
        m = self.mlp.forward_nchw(channel_layer_norm(x, self.norm2))
        return x + (self.gamma_2[:, None, None] * m if self.use_layerscale else m)


class Head(nn.Module):
    """Stage-1 stem: conv (stride 2) -> BN -> ReLU -> conv 2x2 (stride 2), then a token LayerNorm."""

    def __init__(self, head_conv: int, dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(3, dim, head_conv, 2, padding=3 if head_conv == 7 else 1, bias=False),
            nn.BatchNorm2d(dim),
            nn.ReLU(True),
            nn.Conv2d(dim, dim, kernel_size=2, stride=2),
        )
        self.norm = nn.LayerNorm(dim, eps=EMBED_LN_EPS)

    def forward(self, x: torch.Tensor):
        x = self.conv(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(self.conv(x), self.norm)


class OverlapPatchEmbed(nn.Module):
    """Stages 2-4: conv 3x3 stride 2 (`proj`), then a token LayerNorm (`norm`)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 3, stride: int = 2):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim, eps=EMBED_LN_EPS)

    def forward(self, x: torch.Tensor):
        x = self.proj(x)
        _, _, H, W = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)), H, W

    def forward_nchw(self, x: torch.Tensor) -> torch.Tensor:
        return channel_layer_norm(self.proj(x), self.norm)


class SMT(nn.Module):
    """Reference SMT: the authors' token computation and keys.

    Args:
        embed_dims: channels per stage.
        ca_num_heads: modulation heads per stage (-1 where unused).
        sa_num_heads: self-attention heads per stage (-1 where unused).
        mlp_ratios: MLP widths per stage.
        qkv_bias: bias on the attention's token projections.
        depths: blocks per stage.
        ca_attentions: 1 (modulation) or 0 (self-attention) per stage; stage 3's odd blocks use 0.
        head_conv: kernel of the stem's first conv (3, or 7 for SMT-B).
        expand_ratio: modulation expansion.
        num_classes: classifier outputs.
        use_layerscale: residual layer scale (off in every released model).
        variant: "reference" or "safe" attention blocks (the `SMTSafe` class is the export-safe network).
    """

    def __init__(self, embed_dims: Sequence[int] = (64, 128, 256, 512), ca_num_heads: Sequence[int] = (4, 4, 4, -1),
                 sa_num_heads: Sequence[int] = (-1, -1, 8, 16), mlp_ratios: Sequence[float] = (4, 4, 4, 2),
                 qkv_bias: bool = True, depths: Sequence[int] = (2, 2, 8, 1),
                 ca_attentions: Sequence[int] = (1, 1, 1, 0), head_conv: int = 3, expand_ratio: int = 2,
                 num_classes: int = 1000, use_layerscale: bool = False, variant: str = "reference"):
        super().__init__()
        self.num_stages = len(depths)
        for i in range(self.num_stages):
            embed = Head(head_conv, embed_dims[i]) if i == 0 else OverlapPatchEmbed(embed_dims[i - 1], embed_dims[i])
            stage = nn.ModuleList([
                Block(embed_dims[i], ca_num_heads[i], sa_num_heads[i], mlp_ratios[i], qkv_bias,
                      # The authors alternate inside stage 3 (index 2): odd blocks use self-attention.
                      0 if i == 2 and j % 2 != 0 else ca_attentions[i], expand_ratio,
                      use_layerscale=use_layerscale, variant=variant)
                for j in range(depths[i])
            ])
            self.add_module(f"patch_embed{i + 1}", embed)
            self.add_module(f"block{i + 1}", stage)
            self.add_module(f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=BLOCK_LN_EPS))
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        for i in range(1, self.num_stages + 1):
            x, H, W = getattr(self, f"patch_embed{i}")(x)
            for blk in getattr(self, f"block{i}"):
                x = blk(x, H, W)
            x = getattr(self, f"norm{i}")(x)
            if i != self.num_stages:
                x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2)
        return x.mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


class SMTSafe(SMT):
    """Export-safe SMT: NCHW end to end, 1x1 convs for token Linears, no shape reads."""

    def __init__(self, *args, **kwargs):
        kwargs["variant"] = "safe"
        super().__init__(*args, **kwargs)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"patch_embed{i}").forward_nchw(x)
            for blk in getattr(self, f"block{i}"):
                x = blk.forward_nchw(x)
            x = channel_layer_norm(x, getattr(self, f"norm{i}"))
        return x.mean(dim=(2, 3))


_CONFIGS = {
    "smt_t": dict(mlp_ratios=(4, 4, 4, 2), depths=(2, 2, 8, 1), head_conv=3),
    "smt_s": dict(mlp_ratios=(4, 4, 4, 2), depths=(3, 4, 18, 2), head_conv=3),
    "smt_b": dict(mlp_ratios=(8, 6, 4, 2), depths=(4, 6, 28, 2), head_conv=7),
}


def _build(config: str, variant: str, **kwargs) -> SMT:
    args = {**_CONFIGS[config], **kwargs}
    return SMTSafe(**args) if variant == "safe" else SMT(variant=variant, **args)


def smt_t(variant: str = "reference", **kwargs) -> SMT:
    """SMT-T: dims (64, 128, 256, 512), depths (2, 2, 8, 1)."""
    return _build("smt_t", variant, **kwargs)


def smt_s(variant: str = "reference", **kwargs) -> SMT:
    """SMT-S: depths (3, 4, 18, 2)."""
    return _build("smt_s", variant, **kwargs)


def smt_b(variant: str = "reference", **kwargs) -> SMT:
    """SMT-B: depths (4, 6, 28, 2), MLP ratios (8, 6, 4, 2), 7x7 stem."""
    return _build("smt_b", variant, **kwargs)
