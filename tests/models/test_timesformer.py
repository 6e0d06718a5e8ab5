"""TimeSformer with merging: the frame structure divided attention needs is kept."""

from __future__ import annotations

import pytest
import torch

from models import PRESETS, MergeConfig, build_model
from tests.conftest import randomize

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
    tokens = [n for n, _ in model.schedule.tokens(TINY)]
    assert [s[1] * s[2] for s in seen[:4]] == tokens  # (B, T, P, C): T frames x P tubes
    assert all(s[1] == TINY.num_frames for s in seen)
    assert tokens[-1] < tokens[0]


def test_sizes_sum_to_the_original_token_count():
    model = randomize(build_model(TINY, MergeConfig(method="sttm", reduction=0.38)))
    stats = []
    model.model.blocks[-1].register_forward_hook(lambda m, args, out: stats.append(out[2]))
    with torch.no_grad():
        model(torch.randn(2, 3, TINY.num_frames, TINY.image_size, TINY.image_size))
    torch.testing.assert_close(stats[0][..., 0].sum((1, 2)), torch.full((2,), float(TINY.num_tokens)))
