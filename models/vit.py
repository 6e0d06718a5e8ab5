"""Video ViT with joint space-time attention, VideoMAE-compatible, with pluggable merging."""

from __future__ import annotations

import torch
from torch import nn

from models.config import MergeConfig, ModelConfig
from models.layers import Attention, Mlp, PatchEmbed, sinusoid_table
from models.merge import NUM_STATS, initial_stats, size_bias, sizes
from models.mergers import NoMerge, make_merger
from models.schedule import MergeStep, Schedule


class GroupedMerge(nn.Module):
    """Runs a merger on the patch tokens of `[B, prefix + groups*n, C]`, group by group."""

    def __init__(self, merger: nn.Module, step: MergeStep, prefix: int) -> None:
        super().__init__()
        self.merger, self.groups, self.size, self.prefix = merger, step.groups, step.size, prefix

    def forward(self, x: torch.Tensor, stats: torch.Tensor, metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, C = x.shape
        g, n, p = self.groups, self.size, self.prefix
        patches = x[:, p:].reshape(B * g, 1, n, C)  # (B*g, 1, n, C)
        stats = stats.reshape(B * g, 1, n, NUM_STATS)  # (B*g, 1, n, 9)
        metric = metric[:, p:].reshape(B * g, 1, n, -1)  # (B*g, 1, n, d)
        patches, stats = self.merger(patches, stats, metric)  # (B*g, 1, n', C)
        patches = patches.reshape(B, -1, C)  # (B, g*n', C)
        return torch.cat((x[:, :p], patches), 1), stats.reshape(B, -1, NUM_STATS)


class TemporalCentering(nn.Module):
    """`[B, 3, T, H, W] -> [B, 6, T, H, W]`: each frame's deviation from the clip mean, and
    the frame itself scaled by `raw_scale`.

    The deviation makes motion visible to a linear patch embedding (a static background is
    zero there) and is what the tiny ViT learns from quickly. It alone loses a static image:
    a clip of an object appearing and one of a differently coloured object disappearing
    differ only by the object's colour left in place, so their deviations are identical.
    The raw frame carries it; scaled down (and its weights zero-initialised, see VideoViT),
    it starts as a no-op and is learned slowly: at full scale the textured backgrounds it
    brings kept the model at chance (measured: 7% val after 2 epochs vs 36% without it).
    """

    raw_scale = 0.1

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        deviation = video - video.mean(2, keepdim=True)  # (B, 3, T, H, W)
        return torch.cat([self.raw_scale * video, deviation], 1)  # (B, 6, T, H, W)


class Block(nn.Module):
    """Pre-norm block; the merge runs between attention and MLP (as ToMe)."""

    def __init__(self, cfg: ModelConfig, merge: nn.Module, proportional: bool) -> None:
        super().__init__()
        self.proportional = proportional  # static: sizes differ from 1 only after a merge
        self.prefix = int(cfg.pool == "cls")
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.qkv_bias)
        self.merge = merge
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.dim, cfg.mlp_dim)

    def forward(self, x: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bias = None
        if self.proportional:
            bias = size_bias(stats)  # (B, 1, 1, n)
            bias = nn.functional.pad(bias, (self.prefix, 0))  # CLS has size 1: log 1 = 0
        h, metric = self.attn(self.norm1(x), bias)
        x = x + h
        x, stats = self.merge(x, stats, metric)
        return x + self.mlp(self.norm2(x)), stats


class VideoViT(nn.Module):
    """ViT on tubelet tokens: input `[B, 3, T, H, W]` normalised -> logits `[B, classes]`."""

    def __init__(self, cfg: ModelConfig, merge: MergeConfig, schedule: Schedule) -> None:
        super().__init__()
        self.config, self.merge_config, self.schedule = cfg, merge, schedule
        self.stem = TemporalCentering() if cfg.input_motion else nn.Identity()
        self.patch_embed = PatchEmbed(cfg.dim, cfg.patch_size, cfg.tubelet_size, cfg.in_channels)
        if cfg.input_motion:  # start as a motion-only model (it trains fast); the raw half is learned in
            nn.init.zeros_(self.patch_embed.proj.weight[:, :3])  # weight (C, 6, t, p, p): raw half
        self.register_buffer("pos_embed", sinusoid_table(cfg.num_tokens, cfg.dim), persistent=False)
        self.register_buffer("pos_stats", initial_stats(*cfg.grid), persistent=False)  # (N, 9)
        if cfg.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        prefix = int(cfg.pool == "cls")
        blocks, merged = [], False
        for step in schedule.steps:
            merger = make_merger(step, merge, cfg.dim, cfg.grid)
            wrapped = NoMerge() if step is None else GroupedMerge(merger, step, prefix)
            blocks.append(Block(cfg, wrapped, proportional=merged and merge.proportional_attention))
            merged = merged or step is not None
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps) if cfg.pool == "cls" else nn.Identity()
        self.fc_norm = nn.LayerNorm(cfg.dim, eps=cfg.head_norm_eps) if cfg.pool == "mean" else nn.Identity()
        self.head = nn.Linear(cfg.dim, cfg.num_classes)

    def forward_features(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(self.stem(video)) + self.pos_embed  # (B, N, C)
        B = x.shape[0]
        if self.config.pool == "cls":
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), 1)  # (B, 1+N, C)
        stats = self.pos_stats.expand(B, -1, -1)  # (B, N, 9)
        for block in self.blocks:
            x, stats = block(x, stats)
        return x, stats

    def forward_head(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        if self.config.pool == "cls":
            x = self.norm(x)[:, 0]
        elif self.schedule.merges:  # size-weighted mean over the original tokens
            x = (x * sizes(stats, x)).sum(1) / self.config.num_tokens
        else:
            x = x.mean(1)
        return self.head(self.fc_norm(x))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        return self.forward_head(*self.forward_features(video))
