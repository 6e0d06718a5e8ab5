"""Merge schedules and the analytic compute count.

One knob, `reduction` (fraction of the unmerged GFLOPs to save), becomes per-block merge
steps for STTM and ToMe alike, so both can be compared at equal compute. Compute is
counted in multiply-adds (fvcore's convention, which is what VideoMAE's "180 GFLOPs"
means); only matmuls and convolutions count, as in `torch.utils.flop_counter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.config import MergeConfig, ModelConfig
from models.merge import NUM_STATS


@dataclass(frozen=True)
class MergeStep:
    """One merge inside a block, between attention and MLP.

    Tokens are merged within `groups` independent groups of `size` tokens each
    (ViT: a slice for the spatial step, two adjacent slices/segments for the temporal
    step, the whole clip for ToMe; TimeSformer: one group of spatial tubes shared by
    every frame, so divided attention keeps its frame structure).
    """

    kind: Literal["spatial", "temporal", "tome"]
    groups: int
    size: int
    r: int  # tokens merged away per group
    meta: int = 0  # STTM meta tokens per group

    @property
    def out(self) -> int:
        return self.size - self.r


@dataclass(frozen=True)
class Schedule:
    """One entry per block: the merge step it runs, or None."""

    steps: tuple[MergeStep | None, ...]

    def tokens(self, cfg: ModelConfig) -> list[tuple[int, int]]:
        """Patch tokens per clip (entering, leaving) each block."""
        t, h, w = cfg.grid
        frames = t if cfg.arch == "timesformer" else 1  # tubes: one decision for all frames
        count = t * h * w
        out = []
        for step in self.steps:
            after = count if step is None else frames * step.groups * step.out
            out.append((count, after))
            count = after
        return out

    @property
    def merges(self) -> bool:
        return any(s is not None for s in self.steps)


def default_merge_layers(depth: int) -> tuple[int, ...]:
    """STTM merges at the end of each quarter of the network (blocks 3, 6, 9 of 12)."""
    return tuple(sorted({max(0, int(k * depth / 4 + 0.5) - 1) for k in (1, 2, 3)}))


# ----------------------------------------------------------------------------- compute


def _merge_macs(step: MergeStep, frames: int, dim: int, head_dim: int, method: str) -> float:
    n, o = step.size, step.out
    if method == "sttm":
        match = n * n * head_dim + n * step.meta * head_dim  # DPC distances + similarity to metas
        motion = frames * o * NUM_STATS * dim
    else:
        match = ((n + 1) // 2) * (n // 2) * head_dim  # A x B similarities
        motion = 0
    apply = frames * o * n * (dim + NUM_STATS)  # one-hot matmuls on features and statistics
    return step.groups * (match + apply + motion)


def gmacs(cfg: ModelConfig, schedule: Schedule, method: str = "none") -> float:
    """Analytic multiply-adds per clip (GMACs) of `cfg` under `schedule`."""
    C, M, p = cfg.dim, cfg.mlp_dim, cfg.patch_size
    hd = C // cfg.heads
    t, h, w = cfg.grid
    total = t * h * w * C * 3 * p * p * (cfg.tubelet_size if cfg.arch == "vit" else 1)  # patch embed
    for (n_in, n_out), step in zip(schedule.tokens(cfg), schedule.steps):
        if cfg.arch == "vit":
            a, b = n_in + (cfg.pool == "cls"), n_out + (cfg.pool == "cls")
            total += 4 * a * C * C + 2 * a * a * C + 2 * b * C * M
            frames = 1
        else:
            frames = t
            per_frame = n_in // t
            total += 5 * n_in * C * C + 2 * per_frame * t * t * C  # temporal attn + temporal_fc
            a = per_frame + 1  # spatial attention sees the CLS token in every frame
            total += t * (4 * a * C * C + 2 * a * a * C) + 2 * (1 + n_out) * C * M
        if step is not None:
            total += _merge_macs(step, frames, C, hd, method)
    total += C * cfg.num_classes  # head
    return total / 1e9


# ------------------------------------------------------------------------- schedules


def _sttm_steps(cfg: ModelConfig, merge: MergeConfig, keep: float) -> Schedule:
    t, h, w = cfg.grid
    groups, n = (t, h * w) if cfg.arch == "vit" else (1, h * w)
    layers = merge.merge_layers if merge.merge_layers is not None else default_merge_layers(cfg.depth)
    steps: list[MergeStep | None] = [None] * cfg.depth
    for j, layer in enumerate(layers):
        temporal = cfg.arch == "vit" and j % 2 == 1 and groups % 2 == 0
        g, size = (groups // 2, 2 * n) if temporal else (groups, n)
        out = max(1, min(size, round(keep * size)))
        if out == size:
            continue
        meta = min(max(1, round(merge.meta_ratio * size)), out)
        steps[layer] = MergeStep("temporal" if temporal else "spatial", g, size, size - out, meta)
        groups, n = g, out
    return Schedule(tuple(steps))


def _tome_steps(cfg: ModelConfig, r: int) -> Schedule:
    t, h, w = cfg.grid
    n = t * h * w if cfg.arch == "vit" else h * w
    steps: list[MergeStep | None] = []
    for _ in range(cfg.depth):
        rr = min(r, (n + 1) // 2, n - 1)
        steps.append(MergeStep("tome", 1, n, rr) if rr > 0 else None)
        n -= rr
    return Schedule(tuple(steps))


def make_schedule(cfg: ModelConfig, merge: MergeConfig) -> Schedule:
    """Turn `merge.reduction` into per-block steps saving at least that fraction of GMACs
    (as little more as the integer token counts allow)."""
    if merge.merge_layers is not None and any(not 0 <= i < cfg.depth for i in merge.merge_layers):
        raise ValueError(f"merge_layers {merge.merge_layers} outside 0..{cfg.depth - 1}")
    none = Schedule((None,) * cfg.depth)
    if merge.method == "none" or merge.reduction == 0:
        return none
    base = gmacs(cfg, none)

    def saved(schedule: Schedule) -> float:
        return 1.0 - gmacs(cfg, schedule, merge.method) / base

    if merge.method == "tome":
        t, h, w = cfg.grid
        lo, hi = 1, (t * h * w if cfg.arch == "vit" else h * w) // 2 + 1
        if saved(_tome_steps(cfg, hi)) < merge.reduction:
            raise ValueError(_unreachable(merge, saved(_tome_steps(cfg, hi))))
        while lo < hi:  # smallest r that saves enough
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if saved(_tome_steps(cfg, mid)) >= merge.reduction else (mid + 1, hi)
        return _tome_steps(cfg, lo)

    if saved(_sttm_steps(cfg, merge, 0.0)) < merge.reduction:
        raise ValueError(_unreachable(merge, saved(_sttm_steps(cfg, merge, 0.0))))
    lo, hi = 0.0, 1.0  # largest keep fraction that saves enough
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if saved(_sttm_steps(cfg, merge, mid)) >= merge.reduction else (lo, mid)
    return _sttm_steps(cfg, merge, lo)


def _unreachable(merge: MergeConfig, best: float) -> str:
    return (
        f"{merge.method} cannot save {merge.reduction:.0%} of the compute of this model; "
        f"at most {best:.1%} with this schedule"
    )
