"""TimeSformer with merging: the frame structure divided attention needs is kept."""

from __future__ import annotations

import pytest
import torch

from models import PRESETS, MergeConfig, build_model
from tests.torch_helpers import randomize

TINY = PRESETS["timesformer-tiny"]


@pytest.mark.parametrize("method", ["tome", "sttm"])
def test_merging_keeps_equal_tokens_per_frame(method):
    model = randomize(build_model(TINY, MergeConfig(method=method, reduction=0.38)))
    video = torch.randn(3, 3, TINY.num_frames, TINY.image_size, TINY.image_size)
    seen = []
    hooks = [
        b.register_forward_hook(lambda m, args, out: seen.append(tuple(args[1].shape))) for b in model.model.blocks
    ]
    with torch.no_grad():
        batched = model(video)
        singles = torch.cat([model(clip[None]) for clip in video])
    for hook in hooks:
        hook.remove()
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)
    layout = model.schedule.frames(TINY)  # (T, P) entering each block
    assert [s[1:3] for s in seen[: len(layout)]] == [(t, p) for t, p, _, _ in layout]  # (B, T, P, C) grid
    tokens = [n for n, _ in model.schedule.tokens(TINY)]
    assert tokens[-1] < tokens[0]
    if method == "sttm":  # spatial (tubes), temporal (frame pairs), spatial
        assert [s.kind for s in model.schedule.steps if s] == ["spatial", "temporal", "spatial"]
        assert layout[-1][0] == TINY.num_frames // 2


def test_sizes_sum_to_the_original_token_count():
    model = randomize(build_model(TINY, MergeConfig(method="sttm", reduction=0.38)))
    stats = []
    model.model.blocks[-1].register_forward_hook(lambda m, args, out: stats.append(out[2]))
    with torch.no_grad():
        model(torch.randn(2, 3, TINY.num_frames, TINY.image_size, TINY.image_size))
    assert stats[0][..., 0].sum((1, 2)).tolist() == [TINY.num_tokens] * 2


def test_frame_pair_fusion_is_size_weighted():
    from models.merge import fuse_frame_pairs, initial_stats

    x = torch.arange(4.0).reshape(1, 4, 1, 1)  # (B, T, P, C): frame t holds value t
    stats = initial_stats(4, 1, 1).reshape(1, 4, 1, 9).clone()
    stats[:, 1, :, 0] = 3  # frame 1 stands for 3 patches
    fused, merged = fuse_frame_pairs(x, stats)
    torch.testing.assert_close(fused.flatten(), torch.tensor([0.75, 2.5]))  # (0*1 + 1*3)/4, (2+3)/2
    assert merged[..., 0].flatten().tolist() == [4, 2]
