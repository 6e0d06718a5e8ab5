"""Joint space-time ViT with STTM / ToMe: batching, determinism, schedule, invariants."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from models import PRESETS, MergeConfig, build_model
from tests.torch_helpers import randomize

TINY = PRESETS["vit-tiny"]


def _video(cfg, batch=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=gen)


def _block_inputs(model, video):
    """Token counts entering each block, recorded by forward hooks."""
    seen = []
    hooks = [b.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1])) for b in model.model.blocks]
    with torch.no_grad():
        model(video)
    for hook in hooks:
        hook.remove()
    return seen


@pytest.mark.parametrize("method", ["tome", "sttm"])
@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_tiny_batch_equals_single_clips_and_is_deterministic(method, pool):
    cfg = TINY.replace(pool=pool)
    model = randomize(build_model(cfg, MergeConfig(method=method, reduction=0.38)))
    video = _video(cfg, batch=4)
    with torch.no_grad():
        batched = model(video)
        singles = torch.cat([model(clip[None]) for clip in video])
        again = model(video)
    torch.testing.assert_close(batched, singles, atol=1e-5, rtol=1e-5)
    assert torch.equal(batched, again)
    prefix = int(pool == "cls")
    assert _block_inputs(model, video) == [n + prefix for n, _ in model.schedule.tokens(cfg)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["tome", "sttm"])
def test_videomae_b_at_38_percent(method):
    cfg = PRESETS["videomae-b"].replace(num_classes=10)
    model = build_model(cfg, MergeConfig(method=method, reduction=0.38))
    assert model.gflops() <= 0.63 * model.gflops(merged=False)
    video = _video(cfg, batch=2)  # full size: each forward costs ~2 s here
    with torch.no_grad():
        batched = model(video)
        singles = torch.cat([model(clip[None]) for clip in video])
    torch.testing.assert_close(batched, singles, atol=1e-4, rtol=1e-4)
    assert _block_inputs(model, video[:1]) == [n for n, _ in model.schedule.tokens(cfg)]
    assert torch.equal(model(video[:1]), singles[:1])  # deterministic


@settings(max_examples=8, deadline=None)
@given(method=st.sampled_from(["tome", "sttm"]), colour=st.floats(-2, 2), seed=st.integers(0, 99))
def test_identical_tokens_merge_without_changing_the_output(method, colour, seed):
    """A constant clip with no position signal is all-identical tokens: proportional
    attention and the size-weighted pool make merging exact."""
    unmerged = randomize(build_model(TINY), seed)
    merged = build_model(TINY, MergeConfig(method=method, reduction=0.38, proportional_attention=True))
    missing, _ = merged.load_state_dict(unmerged.state_dict(), strict=False)
    assert all(".merge." in key for key in missing)  # only the (zero) motion branch
    for model in (merged, unmerged):
        model.model.pos_embed.zero_()
    video = torch.full((1, 3, TINY.num_frames, TINY.image_size, TINY.image_size), colour)
    with torch.no_grad():
        torch.testing.assert_close(merged(video), unmerged(video), atol=1e-4, rtol=1e-4)


def test_sizes_sum_to_the_original_token_count():
    model = randomize(build_model(TINY, MergeConfig(method="sttm", reduction=0.5)))
    with torch.no_grad():
        _, stats = model.model.forward_features(_video(TINY))
    assert stats.dtype == torch.int32 and stats[..., 0].sum(1).tolist() == [TINY.num_tokens] * 2


def test_merging_off_is_bit_exact_with_merge_config_default():
    a = randomize(build_model(TINY))
    b = build_model(TINY, MergeConfig(method="sttm", reduction=0.0))
    b.load_state_dict(a.state_dict(), strict=False)
    video = _video(TINY)
    with torch.no_grad():
        assert torch.equal(a(video), b(video))


def test_any_frames_and_resolution_divisible_by_tubelet_and_patch():
    cfg = TINY.replace(num_frames=6, image_size=48)
    model = build_model(cfg, MergeConfig(method="sttm", reduction=0.3))
    assert model(_video(cfg)).shape == (2, cfg.num_classes)
    with pytest.raises(ValueError, match="divisible"):
        TINY.replace(num_frames=5)


def test_input_motion_sees_frames_and_their_deviation_from_the_clip_mean():
    cfg = TINY.replace(input_motion=True)
    model = randomize(build_model(cfg, MergeConfig(method="sttm", reduction=0.3)))
    video = _video(cfg)
    background = torch.randn(2, 3, 1, cfg.image_size, cfg.image_size).expand_as(video)
    stem = model.model.stem(video + background)  # (B, 6, T, H, W)
    torch.testing.assert_close(stem[:, :3], model.model.stem.raw_scale * (video + background))
    torch.testing.assert_close(stem[:, 3:], model.model.stem(video)[:, 3:], atol=1e-5, rtol=1e-5)  # static: gone
    fresh = build_model(cfg).model.patch_embed.proj.weight  # (C, 6, t, p, p)
    assert not fresh[:, :3].any() and fresh[:, 3:].any()  # starts as the deviation-only model
    # a clip whose deviation is the negated deviation of another (the colour-flipped time
    # reversal of appearing vs disappearing) still differs through the raw half
    flipped = video.mean(2, keepdim=True) * 2 - video
    assert not torch.allclose(stem[:, :3], model.model.stem(flipped + background)[:, :3])
    with torch.no_grad():
        assert model(video).shape == (2, cfg.num_classes)


def test_a_folded_key_bias_is_the_masked_attention():
    """`[q, 1] . [k, b / scale]` scaled is `scale q . k + b`: SDPA without a mask gives what the
    explicit masked softmax gives, the padding channels stay zero, the head size is a multiple of 8."""
    import torch.nn.functional as F

    from models.layers import fold_key_bias

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 64, generator=gen) for _ in range(3))
    bias = torch.rand(2, 1, 1, 50, generator=gen).mul(3).log1p()  # log s >= 0
    scale = 64**-0.5
    expected = ((q @ k.transpose(-1, -2)) * scale + bias).softmax(-1) @ v
    folded = fold_key_bias(q, k, v, bias, scale)
    assert [t.shape[-1] for t in folded] == [72, 72, 72]
    out = F.scaled_dot_product_attention(*folded, scale=scale)
    torch.testing.assert_close(out[..., :64], expected, atol=2e-6, rtol=1e-5)
    assert torch.equal(out[..., 64:], torch.zeros_like(out[..., 64:]))


@pytest.mark.parametrize("method", ["tome", "sttm"])
def test_folding_the_bias_keeps_every_merge_decision_in_fp32(method):
    """The folded bias (FlashAttention-eligible on GPUs) against SDPA's mask: logits within fp32
    rounding, and the same token in every patch's final position (docs/gpu.md)."""
    from models.explain import WithMergeIndex
    from models.layers import fold_biases
    from runtime.agreement import moving_squares

    model = randomize(build_model(TINY, MergeConfig(method=method, reduction=0.38))).eval()
    videos = torch.from_numpy(moving_squares(model.input_spec, 6))
    with torch.no_grad():
        logits, index = WithMergeIndex(model)(videos)
        folded_logits, folded_index = WithMergeIndex(fold_biases(model))(videos)
    fold_biases(model, on=False)
    torch.testing.assert_close(folded_logits, logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(folded_index, index)
