"""Transformer building blocks shared by both architectures (timm-style names)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

HEAD_MULTIPLE = 8  # fused attention kernels (FlashAttention) take head sizes in multiples of 8


def fold_key_bias(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, scale: float, multiple: int = HEAD_MULTIPLE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """An additive per-key bias folded into one more channel of q and k, so that attention
    needs no mask: `scale * [q, 1] . [k, b / scale] = scale * q . k + b`. The head size is
    padded with zeros to a multiple of `multiple` (v too: FlashAttention wants q, k, v of one
    head size); the output's extra channels are zero and are cut by the caller.

    Args:
        q, k, v: `[B, h, N, d]`; bias: `[B, 1, 1, N]` (proportional attention's `log s`).
        scale: the attention's own (`d ** -0.5`): pass it to SDPA, which would use the padded size's.
    Returns:
        q, k, v `[B, h, N, d']`, `d' = ceil((d + 1) / multiple) * multiple`.
    """
    B, h, N, d = q.shape
    pad = -(-(d + 1) // multiple) * multiple - d - 1  # zero channels after the bias channel
    column = (bias / scale).transpose(-1, -2).expand(B, h, N, 1)  # (B, h, N, 1): b_j / scale per key
    zeros = q.new_zeros(B, h, N, pad)
    q = torch.cat([q, torch.ones_like(q[..., :1]), zeros], -1)  # (B, h, N, d')
    k = torch.cat([k, column.to(k.dtype), zeros], -1)  # (B, h, N, d')
    v = torch.cat([v, torch.zeros_like(v[..., :1]), zeros], -1)  # (B, h, N, d')
    return q, k, v


class Attention(nn.Module):
    """Multi-head self-attention with an optional additive key bias (proportional attention).

    `qkv_bias`: "qkv" (one bias, TimeSformer), "qv" (q and v biases, k none: VideoMAE),
    or "none". Returns the output and the keys averaged over heads, the merge metric.
    `fold_bias` (off by default; `models.layers.fold_biases(model)`): the bias as an extra q/k
    channel (`fold_key_bias`) instead of SDPA's `attn_mask`, which keeps FlashAttention from
    running merged blocks on GPUs; the same numbers up to rounding (docs/gpu.md measures it).
    """

    fold_bias = False

    def __init__(self, dim: int, heads: int, qkv_bias: str = "qkv") -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.explicit = False  # True: write attention out (FLOP counting); else fused SDPA
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias == "qkv")
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "q_bias"):
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
            return F.linear(x, self.qkv.weight, bias)
        return self.qkv(x)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """`x [B, N, C]`, `bias [B, 1, 1, N]` or None -> (`[B, N, C]`, keys `[B, N, C/heads]`)."""
        B, N, C = x.shape
        qkv = self._qkv(x).reshape(B, N, 3, self.heads, C // self.heads)  # (B, N, 3, h, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        if bias is not None:
            bias = bias.to(q.dtype)  # the sizes' log is fp32; SDPA wants the mask in q's dtype (fp16 on GPUs)
        if self.explicit:
            attn = (q @ k.transpose(-2, -1)) * self.scale  # (B, h, N, N)
            if bias is not None:
                attn = attn + bias
            out = attn.softmax(-1) @ v  # (B, h, N, d)
        elif bias is not None and self.fold_bias:
            folded = fold_key_bias(q, k, v, bias, self.scale)  # 3 x (B, h, N, d')
            out = F.scaled_dot_product_attention(*folded, scale=self.scale)[..., : C // self.heads]  # (B, h, N, d)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, h, N, d)
        out = out.transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj(out), k.mean(1)


def fold_biases(model: nn.Module, on: bool = True) -> nn.Module:
    """Switch every attention of `model` to the folded bias (`Attention.fold_bias`), or back."""
    for module in model.modules():
        if isinstance(module, Attention):
            module.fold_bias = on
    return model


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    """Tubelet (Conv3d) or per-frame (Conv2d) patch embedding; `.proj` as in the original repos.

    The convolution's kernel equals its stride, so it is computed as what it is — patches cut
    out by a reshape, then one matmul with the flattened kernel (the same numbers): exporters
    write MatMul, which every runtime runs in low precision correctly. (OpenVINO 2026.4's CPU
    plugin computes a strided 3-D Convolution wrongly in bf16 when it has other than 3 input
    channels: relative error ~1 for 6 or 8, which put the 6-channel demo at chance.)"""

    def __init__(self, dim: int, patch: int, tubelet: int | None, channels: int = 3) -> None:
        super().__init__()
        if tubelet is None:
            self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)
        else:
            self.proj = nn.Conv3d(channels, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, channels, (T,) H, W] -> [B, tokens, C]` in (t, h, w) order."""
        weight = self.proj.weight  # (C, channels, *kernel)
        kernel, n = weight.shape[2:], weight.dim() - 2
        B, channels, *size = x.shape
        grid = [s // k for s, k in zip(size, kernel)]
        x = x.reshape(B, channels, *[v for g, k in zip(grid, kernel) for v in (g, k)])  # (B, ch, g0, k0, g1, k1, ..)
        x = x.permute(0, *range(2, 2 + 2 * n, 2), 1, *range(3, 3 + 2 * n, 2))  # (B, g0, g1, .., ch, k0, k1, ..)
        x = x.reshape(B, math.prod(grid), -1)  # (B, tokens, ch * prod(kernel))
        return F.linear(x, weight.flatten(1), self.proj.bias)  # (B, tokens, C)


def sinusoid_table(n: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed sin-cos position table `[1, n, dim]` (computed in float64)."""
    pos = torch.arange(n, dtype=torch.float64)[:, None]  # (n, 1)
    j = torch.arange(dim)
    angle = pos / torch.pow(10000.0, (2 * (j // 2)).double() / dim)  # (n, dim)
    table = torch.where(j % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]
