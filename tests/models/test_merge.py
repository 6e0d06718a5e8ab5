"""The pure merge math: assignments are valid, merging conserves what it must."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models.merge import (
    Assignment,
    _assignment,
    add_assigned,
    initial_stats,
    merge_tokens,
    motion_features,
    sttm_assignment,
    tome_assignment,
)
from models.mergers import MotionEmbedding


def _check_assignment(assignment: Assignment, n: int, r: int) -> None:
    assign, kept, merged = assignment
    assert assign.shape[-2:] == (n - r, n) and kept.shape[-1] == n - r and merged.shape[-1] == r
    assert torch.equal(assign.gather(-1, kept[..., None]).squeeze(-1), torch.ones(kept.shape))  # slot o holds kept[o]
    assert torch.equal(
        torch.sort(torch.cat([kept, merged], -1), -1).values, torch.arange(n).expand(kept.shape[:-1] + (n,))
    )
    assert torch.equal(assign.sum(-2), torch.ones(assign.shape[:-2] + (n,)))  # every token goes once
    assert bool((assign.sum(-1) >= 1).all())  # every output slot holds at least itself


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), frac=st.floats(0, 1), meta_frac=st.floats(0.05, 1), seed=st.integers(0, 999))
def test_sttm_assignment_is_valid_and_keeps_meta_tokens(n, frac, meta_frac, seed):
    meta = max(1, round(meta_frac * n))
    r = round(frac * (n - meta))
    metric = torch.randn(3, n, 8, generator=torch.Generator().manual_seed(seed))
    _check_assignment(sttm_assignment(metric, meta, r), n, r)
    assign = sttm_assignment(metric, meta, r).matrix
    assert bool((assign.sum(-1) > 1).sum(-1).le(meta).all())  # only meta tokens absorb others


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), frac=st.floats(0, 1), seed=st.integers(0, 999))
def test_tome_assignment_merges_a_into_b(n, frac, seed):
    r = round(frac * min((n + 1) // 2, n - 1))
    metric = torch.randn(2, n, 8, generator=torch.Generator().manual_seed(seed))
    _check_assignment(tome_assignment(metric, r), n, r)
    assign = tome_assignment(metric, r).matrix
    # a slot holds at most one B (odd) token, and a slot with several members holds exactly one
    odd = assign[..., 1::2].sum(-1)  # (b, n')
    assert bool((odd <= 1).all())
    assert bool((odd[assign.sum(-1) > 1] == 1).all())


def test_output_slots_keep_original_order():
    dest = torch.tensor([[0, 0, 2, 3, 3, 5]])  # tokens 1 -> 0 and 4 -> 3 merge away
    is_src = torch.tensor([[0.0, 1.0, 0.0, 0.0, 1.0, 0.0]])
    assign, kept, merged = _assignment(dest, is_src, torch.tensor([[1, 4]]))
    assert kept.tolist() == [[0, 2, 3, 5]] and merged.tolist() == [[1, 4]]
    expected = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1.0]])
    assert torch.equal(assign[0], expected)


def test_zero_merges_is_identity():
    metric = torch.randn(2, 10, 4)
    for assign in (sttm_assignment(metric, 3, 0), tome_assignment(metric, 0)):
        assert torch.equal(assign.matrix, torch.eye(10).expand(2, 10, 10))


@settings(max_examples=30, deadline=None)
@given(
    grid=st.tuples(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5)),
    fracs=st.lists(st.floats(0, 0.9), min_size=1, max_size=3),
    seed=st.integers(0, 999),
)
def test_repeated_merges_conserve_size_and_positions(grid, fracs, seed):
    gen = torch.Generator().manual_seed(seed)
    n0 = grid[0] * grid[1] * grid[2]
    stats = initial_stats(*grid)[None]  # (1, n0, 9)
    x = torch.randn(1, n0, 6, generator=gen)
    for frac in fracs:
        n = x.shape[1]
        r = min(round(frac * n), n - 1)
        assign = sttm_assignment(torch.randn(1, n, 4, generator=gen), 1, r)
        x, stats = merge_tokens(assign, x, stats)
        # sizes always sum to the original token count
        assert stats.dtype == torch.int32 and int(stats[..., 0].sum()) == n0
        feats = motion_features(stats, torch.tensor(grid))
        mean = feats[..., :3]  # aggregated (t, h, w) stay inside the clip's grid
        assert bool(((mean > 0) & (mean < 1)).all())
        assert bool(torch.isfinite(feats).all())


@settings(max_examples=30, deadline=None)
@given(
    grid=st.tuples(st.integers(1, 8), st.integers(1, 14), st.integers(1, 14)),
    outputs=st.integers(1, 6),
    seed=st.integers(0, 999),
)
def test_motion_features_are_the_moments_of_the_merged_patches(grid, outputs, seed):
    """Features of merged integer statistics equal the mean / least-squares velocity / spread
    of the patches each token absorbed, computed directly in float64 from their positions."""
    gen = torch.Generator().manual_seed(seed)
    n0 = grid[0] * grid[1] * grid[2]
    dest = torch.randint(0, outputs, (n0,), generator=gen)
    assign = torch.nn.functional.one_hot(dest, outputs).T.int()  # (outputs, n0)
    stats = (assign.unsqueeze(-1) * initial_stats(*grid)).sum(-2, dtype=torch.int32)[None]  # (1, outputs, 9)
    feats = motion_features(stats, torch.tensor(grid))[0].double()
    t, h, w = (g.reshape(-1).double() for g in torch.meshgrid(*(torch.arange(n) for n in grid), indexing="ij"))
    t, h, w = (t + 0.5) / grid[0], (h + 0.5) / grid[1], (w + 0.5) / grid[2]
    for o in range(outputs):
        mask = dest == o
        if not mask.any():
            continue
        pt, ph, pw = t[mask], h[mask], w[mask]
        var_t = pt.var(unbiased=False)
        cov = torch.stack([((pt - pt.mean()) * (p - p.mean())).mean() for p in (ph, pw)])
        spread = torch.stack([var_t, ph.var(unbiased=False), pw.var(unbiased=False)]).add(1e-4).sqrt()
        expected = torch.cat([torch.stack([pt.mean(), ph.mean(), pw.mean()]), cov / (var_t + 1e-4), spread,
                              torch.tensor([float(mask.sum())]).log()])  # fmt: skip
        torch.testing.assert_close(feats[o], expected, rtol=1e-4, atol=1e-4)


def test_one_frame_token_has_exactly_zero_temporal_moments():
    """The cancellation happens in integers: a token within one frame has variance and
    velocity exactly 0 however many patches it holds (float sums would leave rounding there,
    which bf16 turns into an arbitrary velocity)."""
    grid = (8, 14, 14)
    stats = initial_stats(*grid).reshape(8, 196, 9)[5].sum(0, dtype=torch.int32)  # all of frame 5
    feats = motion_features(stats, torch.tensor(grid))
    assert feats[3].item() == 0.0 and feats[4].item() == 0.0  # velocity
    assert feats[5].item() == pytest.approx(0.01)  # sd_t = sqrt(0 + eps)


def test_merge_is_size_weighted_average():
    x = torch.tensor([[[1.0], [3.0], [10.0]]])
    stats = initial_stats(1, 1, 3)[None].clone()
    stats[..., 0] = torch.tensor([1, 3, 1])  # sizes
    assign = Assignment(torch.tensor([[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]]), torch.tensor([[0, 2]]), torch.tensor([[1]]))
    merged, merged_stats = merge_tokens(assign, x, stats)
    torch.testing.assert_close(merged, torch.tensor([[[2.5], [10.0]]]))  # (1*1 + 3*3) / 4
    assert torch.equal(merged_stats[..., 0], torch.tensor([[4, 1]], dtype=torch.int32))


def test_motion_features_recover_linear_motion():
    # a patch moving right by one column per slice, merged into one token: v_w = 1 column/slice
    t, h, w = 4, 1, 4
    stats = initial_stats(t, h, w).reshape(t, w, 9)  # (t, w, 9)
    diagonal = torch.stack([stats[i, i] for i in range(t)]).sum(0)  # (9,)
    feats = motion_features(diagonal, torch.tensor((t, h, w)))
    v_w = feats[4] * (1 / w) / (1 / t)  # normalised units -> columns per slice
    torch.testing.assert_close(v_w, torch.tensor(1.0), atol=0.01, rtol=0.01)
    torch.testing.assert_close(feats[3], torch.tensor(0.0))  # no vertical motion


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 999))
def test_motion_branch_starts_as_exact_noop(seed):
    gen = torch.Generator().manual_seed(seed)
    stats = initial_stats(2, 3, 3)[None].repeat(2, 1, 1) * torch.randint(
        1, 6, (2, 18, 1), generator=gen, dtype=torch.int32
    )
    x = torch.randn(2, 18, 16, generator=gen)
    motion = MotionEmbedding(16, (2, 3, 3))
    assert torch.equal(motion(stats), torch.zeros(2, 18, 16))
    assert torch.equal(x + motion(stats), x)


def test_decisions_are_deterministic_with_ties():
    metric = torch.ones(2, 12, 4)  # every token identical: only the tie-break decides
    assert torch.equal(sttm_assignment(metric, 3, 5).matrix, sttm_assignment(metric, 3, 5).matrix)
    assert torch.equal(sttm_assignment(metric, 3, 5).matrix[0], sttm_assignment(metric, 3, 5).matrix[1])
    assert torch.equal(tome_assignment(metric, 4).matrix, tome_assignment(metric, 4).matrix)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 40), frac=st.floats(0, 1), frames=st.integers(1, 3), seed=st.integers(0, 999))
def test_statistics_merge_exactly_as_the_full_product(n, frac, frames, seed):
    """The kept rows plus the merged-away rows equal `A stats` over every token, broadcast
    over frames that share a decision (TimeSformer's tubes)."""
    gen = torch.Generator().manual_seed(seed)
    metric = torch.randn(2, n, 8, generator=gen)
    tome_r = round(frac * min((n + 1) // 2, n - 1))
    for assign in (sttm_assignment(metric, 1, round(frac * (n - 1))), tome_assignment(metric, tome_r)):
        stats = torch.randint(0, 10**6, (2, frames, n, 9), generator=gen, dtype=torch.int32)
        full = (assign.matrix.long()[:, None, :, :, None] * stats.long()[:, :, None]).sum(-2)  # (2, F, n', 9)
        assert torch.equal(add_assigned(assign.unsqueeze(1), stats), full.int())


def _leaves(index) -> list:
    return [i for part in index for i in _leaves(part)] if isinstance(index, tuple) else [index]


class _HostData(torch.overrides.TorchFunctionMode):
    """Records every call that builds a tensor from host data (a Python list as an index
    too) or touches a CPU tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        listed = func is torch.Tensor.__getitem__ and any(isinstance(i, list) for i in _leaves(args[1]))
        if func in (torch.tensor, torch.as_tensor) or listed or any(t.device.type == "cpu" for t in tensors):
            self.calls.append(getattr(func, "__qualname__", str(func)))
        return out


@pytest.mark.parametrize("preset", ["vit-demo", "timesformer-tiny"])
@pytest.mark.parametrize("method", ["tome", "sttm"])
def test_merging_builds_nothing_on_the_host(preset, method):
    """On a GPU a tensor made on the host and copied over (`torch.tensor(..., device=)`, a CPU
    index `.to(device)`, a Python list as an index) waits for the stream to drain at every
    merge (`torch.cuda.set_sync_debug_mode("error")` caught them on an H100). Run on the meta
    device, every tensor of the forward pass must be made where the model lives."""
    from models import PRESETS, MergeConfig, build_model

    cfg = PRESETS[preset]
    model = build_model(cfg, MergeConfig(method=method, reduction=0.38)).eval().to("meta")
    video = torch.empty(2, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device="meta")
    with torch.inference_mode(), _HostData() as mode:
        model(video)
    assert mode.calls == []
