"""SMT scale-aware modulation (SAM), and SMT's multi-head self-attention option.

Paper: Lin, Wu, Fan, Li, Wang, "Scale-Aware Modulation Meet Transformer", ICCV 2023,
https://arxiv.org/abs/2307.08579. Official code: AFeng-x/SMT, `models/smt.py`, class `Attention`.

The reference keeps the official constructor and state_dict keys (`v`, `s`, `local_conv_{i}`, `proj0`, `bn`,
`proj1`, `proj` for scale-aware modulation; `q`, `kv`, `local_conv`, `proj` for self-attention) and the official
token interface `forward_tokens(x, H, W)` with x of shape (B, H*W, C). As a deploy unit it is wrapped to take
and return NCHW. Minimal fixes: the modulator is not stored as an attribute inside forward.

Scale-aware modulation (ca_attention=1): s = Linear(x); head i (channels [i*C/h, (i+1)*C/h)) goes through a
depthwise conv of kernel 3+2i; head i's channel j lands at channel j*h + i (interleaved, not head-major);
then proj0 (1x1, groups C/h, expand 2) -> BN -> GELU -> proj1 gives the modulator, x = proj(modulator * v(x)).

Export-safe twin: computes natively in NCHW. The token Linears become 1x1 convolutions with the same weights;
the heads are static channel slices; the interleave is one Gather with constant indices (a non-persistent
buffer, so the keys do not change) instead of 5-D reshapes that need H and W; no getattr loop, no attribute
write, no sizes read from the tensor. The self-attention option keeps the tokens on their H x W grid: per
head (a static channel slice), the logits are one Einsum (B, H, W, H, W), the softmax runs over the last two
axes jointly (ReduceMax, Exp, ReduceSum), and a second Einsum applies it; nothing is flattened to N = H * W,
so no size is read even with dynamic H and W or under the TorchScript exporter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from deploykit.blocks.common import linear_as_conv1x1


class ScaleAwareModulation(nn.Module):
    """Reference: SMT `Attention` with the official constructor and keys, wrapped to NCHW.

    Args:
        dim: channels C.
        ca_num_heads: heads of scale-aware modulation (kernel sizes 3, 5, 7, ...).
        sa_num_heads: heads of the self-attention option.
        qkv_bias: bias on v/s (and q/kv); every released SMT config sets it.
        qk_scale: self-attention scale; head_dim ** -0.5 when None.
        attn_drop: dropout on attention probabilities (identity in eval).
        proj_drop: dropout after the output projection (identity in eval).
        ca_attention: 1 for scale-aware modulation, 0 for multi-head self-attention.
        expand_ratio: channel expansion of proj0.
    """

    def __init__(self, dim: int, ca_num_heads: int = 4, sa_num_heads: int = 8, qkv_bias: bool = False,
                 qk_scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 ca_attention: int = 1, expand_ratio: int = 2):
        super().__init__()
        if dim % ca_num_heads or dim % sa_num_heads:
            raise ValueError(f"dim {dim} must be divisible by ca_num_heads {ca_num_heads} and sa_num_heads {sa_num_heads}")
        self.dim = dim
        self.ca_attention = ca_attention
        self.ca_num_heads = ca_num_heads
        self.sa_num_heads = sa_num_heads
        self.split_groups = dim // ca_num_heads
        self.act = nn.GELU()
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if ca_attention == 1:
            head_dim = dim // ca_num_heads
            self.v = nn.Linear(dim, dim, bias=qkv_bias)
            self.s = nn.Linear(dim, dim, bias=qkv_bias)
            for i in range(ca_num_heads):
                conv = nn.Conv2d(head_dim, head_dim, kernel_size=3 + 2 * i, padding=1 + i, groups=head_dim)
                self.add_module(f"local_conv_{i + 1}", conv)
            self.proj0 = nn.Conv2d(dim, dim * expand_ratio, kernel_size=1, groups=self.split_groups)
            self.bn = nn.BatchNorm2d(dim * expand_ratio)
            self.proj1 = nn.Conv2d(dim * expand_ratio, dim, kernel_size=1)
        else:
            head_dim = dim // sa_num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.local_conv = nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        out = self.forward_tokens(tokens, h, w)
        return out.transpose(1, 2).reshape(b, c, h, w)

    def forward_tokens(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """The official interface: x of shape (B, N=H*W, C) -> (B, N, C)."""
        B, N, C = x.shape
        if self.ca_attention == 1:
            heads = self.ca_num_heads
            v = self.v(x)
            # (heads, B, C/heads, H, W): head i is the contiguous channel slice i.
            s = self.s(x).reshape(B, H, W, heads, C // heads).permute(3, 0, 4, 1, 2)
            per_head = []
            for i in range(heads):
                conv = getattr(self, f"local_conv_{i + 1}")
                per_head.append(conv(s[i]).reshape(B, self.split_groups, -1, H, W))
            # cat on dim 2 then flatten: head i's channel j -> channel j * heads + i.
            s_out = torch.cat(per_head, dim=2).reshape(B, C, H, W)
            modulator = self.proj1(self.act(self.bn(self.proj0(s_out))))
            x = modulator.reshape(B, C, N).permute(0, 2, 1) * v
        else:
            heads = self.sa_num_heads
            q = self.q(x).reshape(B, N, heads, C // heads).permute(0, 2, 1, 3)
            kv = self.kv(x).reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
            attn = self.attn_drop(((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1))
            local = self.local_conv(v.transpose(1, 2).reshape(B, N, C).transpose(1, 2).reshape(B, C, H, W))
            x = (attn @ v).transpose(1, 2).reshape(B, N, C) + local.reshape(B, C, N).transpose(1, 2)
        return self.proj_drop(self.proj(x))


class ScaleAwareModulationSafe(ScaleAwareModulation):
    """Export-safe SAM: NCHW throughout, static slices and a constant-index Gather, no reshapes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.ca_attention == 1:
            heads, head_dim = self.ca_num_heads, self.split_groups
            # Output channel j*heads + i reads head-major channel i*head_dim + j.
            order = torch.arange(self.dim).reshape(heads, head_dim).t().reshape(-1)
            self.register_buffer("interleave_index", order, persistent=False)
            self.head_convs = [getattr(self, f"local_conv_{i + 1}") for i in range(heads)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ca_attention == 1:
            return self._modulate(x)
        return self._self_attention(x)

    def _modulate(self, x: torch.Tensor) -> torch.Tensor:
        v = linear_as_conv1x1(x, self.v)
        s = linear_as_conv1x1(x, self.s)
        d = self.split_groups
        heads = [conv(s[:, i * d:(i + 1) * d]) for i, conv in enumerate(self.head_convs)]
        s_out = torch.cat(heads, dim=1).index_select(1, self.interleave_index)
        modulator = self.proj1(F.gelu(self.bn(self.proj0(s_out))))
        return self.proj_drop(linear_as_conv1x1(modulator * v, self.proj))

    def _self_attention(self, x: torch.Tensor) -> torch.Tensor:
        heads, d = self.sa_num_heads, self.dim // self.sa_num_heads
        # q is scaled before the product (same math): fp16 logits stay sqrt(d) times further from overflow.
        q = linear_as_conv1x1(x, self.q) * self.scale         # (B, C, H, W), head-major channels
        kv = linear_as_conv1x1(x, self.kv)                    # (B, 2C, H, W)
        k, v = kv[:, : self.dim], kv[:, self.dim:]
        outs = []
        for i in range(heads):
            h = slice(i * d, (i + 1) * d)
            # Tokens stay on the (H, W) grid: query (i, j) against key (k, l), no flatten to N = H * W.
            logits = torch.einsum("bdij,bdkl->bijkl", q[:, h], k[:, h])
            attn = self.attn_drop(_softmax_over_last_two(logits))
            outs.append(torch.einsum("bdkl,bijkl->bdij", v[:, h], attn))
        out = torch.cat(outs, dim=1) + self.local_conv(v)
        return self.proj_drop(linear_as_conv1x1(out, self.proj))


def _softmax_over_last_two(t: torch.Tensor) -> torch.Tensor:
    """Softmax over the last two axes jointly (all H x W keys); max-subtracted, so exp never overflows."""
    e = (t - t.amax((-2, -1), keepdim=True)).exp()
    return e / e.sum((-2, -1), keepdim=True)
