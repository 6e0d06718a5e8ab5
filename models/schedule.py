"""Merge schedules and the analytic compute count.

One knob, `reduction` (fraction of the unmerged GFLOPs to save), becomes per-block merge
steps for STTM and ToMe alike, so both can be compared at equal compute. Compute is
counted in multiply-adds (fvcore's convention, which is what VideoMAE's "180 GFLOPs"
means); only matmuls and convolutions count, as in `torch.utils.flop_counter`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from models.config import MergeConfig, ModelConfig
from models.merge import NUM_STATS


@dataclass(frozen=True)
class MergeStep:
    """One merge inside a block, between attention and MLP.

    Tokens are merged within `groups` independent groups of `size` tokens each
    (ViT: a slice for the spatial step, two adjacent slices/segments for the temporal
    step, the whole clip for ToMe). TimeSformer keeps its frame structure for divided
    attention: a spatial step is one group of `size` tubes shared by every frame; a
    temporal step fuses frame pairs tube by tube (`groups` = pairs, size 2, r 1).
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
        if cfg.arch == "timesformer":
            return [(t_in * p_in, t_out * p_out) for t_in, p_in, t_out, p_out in self.frames(cfg)]
        t, h, w = cfg.grid
        count, out = t * h * w, []
        for step in self.steps:
            after = count if step is None else step.groups * step.out
            out.append((count, after))
            count = after
        return out

    def frames(self, cfg: ModelConfig) -> list[tuple[int, int, int, int]]:
        """TimeSformer layout per block: (frames, tokens per frame) entering and leaving.
        A spatial step merges tubes (P -> out); a temporal step fuses frame pairs (T -> T/2)."""
        t, h, w = cfg.grid
        p, out = h * w, []
        for step in self.steps:
            t_out, p_out = t, p
            if step is not None and step.kind == "temporal":
                t_out = step.groups
            elif step is not None:
                p_out = step.out
            out.append((t, p, t_out, p_out))
            t, p = t_out, p_out
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
    total = t * h * w * C * cfg.in_channels * p * p * (cfg.tubelet_size if cfg.arch == "vit" else 1)  # patch embed
    if cfg.arch == "vit":
        for (n_in, n_out), step in zip(schedule.tokens(cfg), schedule.steps):
            a, b = n_in + (cfg.pool == "cls"), n_out + (cfg.pool == "cls")
            total += 4 * a * C * C + 2 * a * a * C + 2 * b * C * M
            if step is not None:
                total += _merge_macs(step, 1, C, hd, method)
    else:
        for (t_in, p_in, t_out, p_out), step in zip(schedule.frames(cfg), schedule.steps):
            total += 5 * t_in * p_in * C * C + 2 * p_in * t_in * t_in * C  # temporal attn + temporal_fc
            a = p_in + 1  # spatial attention sees the CLS token in every frame
            total += t_in * (4 * a * C * C + 2 * a * a * C) + 2 * (1 + t_out * p_out) * C * M
            if step is not None and step.kind == "temporal":  # a size-weighted pair sum: no matmul
                total += t_out * p_out * NUM_STATS * C if method == "sttm" else 0
            elif step is not None:
                total += _merge_macs(step, t_in, C, hd, method)
    total += C * cfg.num_classes  # head
    return total / 1e9


# ------------------------------------------------------------------------- schedules


# Merged token counts are multiples of this many rows where the groups allow it: matrix units
# run whole tiles. Measured (OpenVINO bf16 on AMX, 2 threads, MLP of ViT-B): 640 tokens in
# 3.5 ms, 652 in 4.3 ms; 1152 in 6.4 ms, 1168 in 7.1 ms.
TILE_ROWS = 64


def aligned_count(out: int, groups: int, size: int) -> int:
    """`out` tokens per group rounded to the nearest count that makes `groups * out` a multiple
    of TILE_ROWS (at least one tile; below `size` — a step asked to merge still merges), when that unit is at most an
    eighth of a group's `size` (else `out` as it is: small models such as the demo keep their
    exact counts). Monotone in `out`, so the schedule's search over keep fractions still works."""
    unit = TILE_ROWS // math.gcd(TILE_ROWS, groups)
    if unit * 8 > size or out >= size:
        return out
    return min(max(unit, round(out / unit) * unit), (size - 1) // unit * unit)


def _sttm_steps(cfg: ModelConfig, merge: MergeConfig, keep: float, temporal: bool = True) -> Schedule:
    t, h, w = cfg.grid
    groups, n = (t, h * w) if cfg.arch == "vit" else (1, h * w)
    layers = merge.merge_layers if merge.merge_layers is not None else default_merge_layers(cfg.depth)
    steps: list[MergeStep | None] = [None] * cfg.depth
    frames = t
    for j, layer in enumerate(layers):
        if temporal and cfg.arch == "timesformer" and j % 2 == 1 and frames % 2 == 0:
            frames //= 2  # fuse frame pairs, tube by tube
            steps[layer] = MergeStep("temporal", frames, 2, 1, 1)
            continue
        pairs = cfg.arch == "vit" and j % 2 == 1 and groups % 2 == 0  # ViT temporal: adjacent slices
        g, size = (groups // 2, 2 * n) if pairs else (groups, n)
        out = aligned_count(max(1, min(size, round(keep * size))), g, size)
        if out == size:
            continue
        meta = min(max(1, round(merge.meta_ratio * size)), out)
        steps[layer] = MergeStep("temporal" if pairs else "spatial", g, size, size - out, meta)
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
    (as little more as the token counts allow: integers, STTM's aligned to `TILE_ROWS`)."""
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

    # TimeSformer's temporal step halves the frames at once: with it a small target may be
    # overshot. The design's spatial + temporal schedule is kept when it lands within 3
    # points of the target; otherwise the spatial-only one closest above the target wins.
    best = None
    for temporal in (True, False) if cfg.arch == "timesformer" else (True,):
        if saved(_sttm_steps(cfg, merge, 0.0, temporal)) < merge.reduction:
            continue
        lo, hi = 0.0, 1.0  # largest keep fraction that saves enough
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if saved(_sttm_steps(cfg, merge, mid, temporal)) >= merge.reduction else (lo, mid)
        candidate = _sttm_steps(cfg, merge, lo, temporal)
        if temporal and saved(candidate) <= merge.reduction + 0.03:
            return candidate
        if best is None or saved(candidate) < saved(best):
            best = candidate
    if best is None:
        raise ValueError(_unreachable(merge, saved(_sttm_steps(cfg, merge, 0.0))))
    return best


def _unreachable(merge: MergeConfig, best: float) -> str:
    return (
        f"{merge.method} cannot save {merge.reduction:.0%} of the compute of this model; "
        f"at most {best:.1%} with this schedule"
    )
