"""TimeSformer (divided space-time attention), compatible with Hugging Face weights.

Patch tokens are kept as `[B, T, P, C]` and the CLS token as `[B, 1, C]`. Merging keeps
that grid: a spatial step merges *tubes* (one decision per clip applied to every frame,
so temporal attention still sees aligned tokens), a temporal step fuses frame pairs.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import MergeConfig, ModelConfig
from models.layers import Attention, Mlp, PatchEmbed
from models.merge import NUM_STATS, initial_stats, size_bias
from models.mergers import make_merger
from models.schedule import Schedule


class DividedBlock(nn.Module):
    """Temporal attention, then spatial attention (with CLS), merge, then MLP."""

    def __init__(self, cfg: ModelConfig, merge: nn.Module, proportional: bool) -> None:
        super().__init__()
        self.proportional = proportional
        self.temporal_norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.temporal_attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias)
        self.temporal_fc = nn.Linear(cfg.dim, cfg.dim)
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias)
        self.merge = merge
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.dim, cfg.mlp_dim)

    def forward(
        self, cls: torch.Tensor, x: torch.Tensor, stats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, P, C = x.shape
        temporal_bias = spatial_bias = None
        if self.proportional:
            temporal_bias = size_bias(stats.transpose(1, 2).reshape(B * P, T, NUM_STATS))  # (B*P, 1, 1, T)
            spatial_bias = size_bias(stats.reshape(B * T, P, NUM_STATS))  # (B*T, 1, 1, P)
            spatial_bias = nn.functional.pad(spatial_bias, (1, 0))  # CLS: log 1 = 0
        tubes = x.transpose(1, 2).reshape(B * P, T, C)  # (B*P, T, C)
        h, _ = self.temporal_attn(self.temporal_norm(tubes), temporal_bias)
        h = self.temporal_fc(h).reshape(B, P, T, C).transpose(1, 2)  # (B, T, P, C)
        x = x + h
        frames = torch.cat((cls.expand(B, T, C).reshape(B * T, 1, C), x.reshape(B * T, P, C)), 1)  # (B*T, 1+P, C)
        h, metric = self.attn(self.norm1(frames), spatial_bias)
        cls = cls + h[:, 0].reshape(B, T, C).mean(1, keepdim=True)  # (B, 1, C): CLS averaged over frames
        x = x + h[:, 1:].reshape(B, T, P, C)
        x, stats = self.merge(x, stats, metric[:, 1:].reshape(B, T, P, -1))  # (B, T', P', C)
        T, P = x.shape[1], x.shape[2]
        y = torch.cat((cls, x.reshape(B, T * P, C)), 1)  # (B, 1+T'*P', C)
        y = y + self.mlp(self.norm2(y))
        return y[:, :1], y[:, 1:].reshape(B, T, P, C), stats


class TimeSformer(nn.Module):
    """Input `[B, 3, T, H, W]` normalised -> logits `[B, classes]` from the CLS token."""

    def __init__(self, cfg: ModelConfig, merge: MergeConfig, schedule: Schedule) -> None:
        super().__init__()
        self.config, self.merge_config, self.schedule = cfg, merge, schedule
        T, h, w = cfg.grid
        self.patch_embed = PatchEmbed(cfg.dim, cfg.patch_size, tubelet=None)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, h * w + 1, cfg.dim))
        self.time_embed = nn.Parameter(torch.zeros(1, T, cfg.dim))
        self.register_buffer("pos_stats", initial_stats(T, h, w).reshape(T, h * w, NUM_STATS), persistent=False)
        blocks, merged = [], False
        for step in schedule.steps:
            merger = make_merger(step, merge, cfg.dim, cfg.grid, cfg.arch)
            blocks.append(DividedBlock(cfg, merger, merged and merge.proportional_attention))
            merged = merged or step is not None
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.time_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward_features(self, video: torch.Tensor) -> torch.Tensor:
        B, _, T, H, W = video.shape
        frames = video.transpose(1, 2).reshape(B * T, 3, H, W)  # (B*T, 3, H, W)
        x = self.patch_embed(frames) + self.pos_embed[:, 1:]  # (B*T, P, C)
        x = x.reshape(B, T, -1, x.shape[-1]) + self.time_embed[:, :, None]  # (B, T, P, C)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(B, -1, -1)  # (B, 1, C)
        stats = self.pos_stats.expand(B, -1, -1, -1)  # (B, T, P, 9)
        for block in self.blocks:
            cls, x, stats = block(cls, x, stats)
        return self.norm(cls[:, 0])

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(video))
