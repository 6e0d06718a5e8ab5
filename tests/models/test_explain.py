"""Recording what the mergers did: the merge index follows every patch to its final token,
agrees with the merged tokens' own statistics, and leaves the logits unchanged."""

from __future__ import annotations

import pytest
import torch

from models import PRESETS, MergeConfig, build_model
from models.explain import WithMergeIndex, image_path, recording
from models.merge import initial_stats
from tests.torch_helpers import randomize


def _video(cfg, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=gen)


@pytest.mark.parametrize("method", ["tome", "sttm"])
def test_vit_merge_index_matches_the_merged_tokens_sizes_and_positions(method):
    """Token k's size and summed patch positions (its additive stats) are exactly those of the
    patches whose index is k, per clip of a batch: the index is the merge, not a guess."""
    cfg = PRESETS["vit-tiny"]
    model = randomize(build_model(cfg, MergeConfig(method=method, reduction=0.38)))
    video = _video(cfg)
    with torch.no_grad():
        logits, index = WithMergeIndex(model)(video)
        assert torch.equal(logits, model(video))  # recording changes nothing
        _, stats = model.model.forward_features(video)  # (B, n_final, 9)
    assert index.dtype == torch.int32 and index.shape == (3, cfg.num_tokens)
    patches = initial_stats(*cfg.grid)  # (N, 9): each patch's own statistics
    for b in range(3):
        one_hot = torch.nn.functional.one_hot(index[b].long(), stats.shape[1]).int()  # (N, n_final)
        assert torch.equal(one_hot.T @ patches, stats[b])  # integer statistics: exactly
    assert not any(m.record is not None for m in model.modules() if hasattr(m, "record"))  # recording ended


@pytest.mark.parametrize("method", ["tome", "sttm"])
def test_timesformer_merge_index_tubes_and_frame_slices(method):
    cfg = PRESETS["timesformer-tiny"]
    model = randomize(build_model(cfg, MergeConfig(method=method, reduction=0.38)))
    with torch.no_grad():
        _, index = WithMergeIndex(model)(_video(cfg, batch=2))
        with recording(model) as assigns:
            model(_video(cfg, batch=2))
    t, h, w = cfg.grid
    ids = index.reshape(2, t, h * w)
    pairs = sum(a is None for a in assigns)
    tubes = next((a.shape[-2] for a in reversed(assigns) if a is not None), h * w)
    assert index.unique().numel() <= (t >> pairs) * tubes
    for b in range(2):  # one spatial decision per clip: every frame has the same grouping of tubes
        same_tube = ids[b, :, :, None] == ids[b, :, None, :]  # (t, P, P)
        assert (same_tube == same_tube[:1]).all()


@pytest.mark.parametrize("preset", ["vit-tiny", "timesformer-tiny"])
def test_the_merge_index_is_made_where_the_model_lives(preset):
    """Served on a GPU (`--backend torch`), the merge index is computed there: every tensor on
    the model's device (the meta device stands in for CUDA: a CPU tensor would mix devices)."""
    cfg = PRESETS[preset]
    model = build_model(cfg, MergeConfig("sttm", 0.38)).eval().to("meta")
    video = torch.empty(2, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device="meta")
    with torch.no_grad():
        logits, index = WithMergeIndex(model)(video)
    assert index.device.type == "meta" and index.shape == (2, cfg.grid[0] * cfg.grid[1] * cfg.grid[2])


def test_the_image_goes_into_a_folder_that_exists_or_is_written_as_one(tmp_path):
    """`-o out/` is a folder to make (it was written as `out.png`); a name keeps its suffix or gets `.png`."""
    assert image_path(tmp_path, "a/clip.mp4") == tmp_path / "clip.png"
    assert image_path(f"{tmp_path}/new/", "clip.mp4") == tmp_path / "new" / "clip.png"
    assert image_path(tmp_path / "m.svg", "clip.mp4") == tmp_path / "m.svg"
    assert image_path(tmp_path / "m", "clip.mp4") == tmp_path / "m.png"
