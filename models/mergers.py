"""Thin nn.Modules around the merge math in `models.merge`.

Mergers take tokens laid out as `[B', F, n, C]`: `F` frames share one merge decision
(TimeSformer's spatial tubes; F = 1 for ViT groups), decided from the metric averaged
over those frames. They return the merged tokens and their statistics.

Recording (`models.explain.recording`): while a merger's `record` is a list, it appends
the assignment it applied (`[B', 1, n', n]`; `None` for a frame-pair fusion), so a caller
can follow every patch to its final token — in eager PyTorch and inside an exported graph.
"""

from __future__ import annotations

import torch
from torch import nn

from models.config import MergeConfig
from models.merge import (
    NUM_STATS,
    fuse_frame_pairs,
    merge_tokens,
    motion_features,
    sttm_assignment,
    tome_assignment,
)
from models.schedule import MergeStep


class Recorder(nn.Module):
    """A merger that can record its assignments (off unless `record` is a list)."""

    record: list | None = None

    def _recorded(self, assign: torch.Tensor | None) -> None:
        if self.record is not None:  # a Python-level switch: no branch in the traced graph
            self.record.append(assign)


class NoMerge(nn.Module):
    def forward(self, x: torch.Tensor, stats: torch.Tensor, metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, stats


class MotionEmbedding(nn.Module):
    """`x += W_m f(stats)` with W_m zero-initialised: an exact no-op until trained."""

    def __init__(self, dim: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.register_buffer("cells", torch.tensor(grid, dtype=torch.int32), persistent=False)  # (T, H, W)
        self.proj = nn.Linear(NUM_STATS, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        return self.proj(motion_features(stats, self.cells).to(self.proj.weight.dtype))


class ToMeMerge(Recorder):
    def __init__(self, step: MergeStep) -> None:
        super().__init__()
        self.r = step.r

    def forward(self, x: torch.Tensor, stats: torch.Tensor, metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assign = tome_assignment(metric.mean(1), self.r).unsqueeze(1)  # matrix (B', 1, n', n)
        self._recorded(assign.matrix)
        return merge_tokens(assign, x, stats)


class STTMMerge(Recorder):
    def __init__(self, step: MergeStep, dim: int, knn: int, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.meta, self.r, self.knn = step.meta, step.r, knn
        self.motion = MotionEmbedding(dim, grid)

    def forward(self, x: torch.Tensor, stats: torch.Tensor, metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assign = sttm_assignment(metric.mean(1), self.meta, self.r, self.knn).unsqueeze(1)  # matrix (B', 1, n', n)
        self._recorded(assign.matrix)
        x, stats = merge_tokens(assign, x, stats)  # (B', F, n', C), (B', F, n', 9)
        return x + self.motion(stats), stats


class FramePairMerge(Recorder):
    """TimeSformer's temporal step: frame pairs fuse tube by tube (T -> T/2)."""

    def __init__(self, dim: int, motion: bool, grid: tuple[int, int, int]) -> None:
        super().__init__()
        self.motion = MotionEmbedding(dim, grid) if motion else None

    def forward(self, x: torch.Tensor, stats: torch.Tensor, metric: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._recorded(None)  # frame 2i+1 into 2i, every tube
        x, stats = fuse_frame_pairs(x, stats)  # (B, T/2, P, C), (B, T/2, P, 9)
        if self.motion is not None:
            x = x + self.motion(stats)
        return x, stats


def make_merger(
    step: MergeStep | None, merge: MergeConfig, dim: int, grid: tuple[int, int, int], arch: str = "vit"
) -> nn.Module:
    """The merger of one block; `grid` (t, h, w) is the token grid the statistics count cells of."""
    if step is None:
        return NoMerge()
    if arch == "timesformer" and step.kind == "temporal":
        return FramePairMerge(dim, merge.method == "sttm", grid)
    if merge.method == "sttm":
        return STTMMerge(step, dim, merge.knn, grid)
    return ToMeMerge(step)
