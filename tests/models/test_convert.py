"""Merging off equals the reference: Hugging Face models written by `save_pretrained`."""

from __future__ import annotations

import pytest
import torch

from models import load_model
from tests.torch_helpers import write_hf

SIZES = [
    dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    dict(hidden_size=96, num_hidden_layers=3, num_attention_heads=3, intermediate_size=192, image_size=48),
]


@pytest.mark.parametrize("arch", ["videomae", "timesformer"])
@pytest.mark.parametrize("size", SIZES, ids=["small", "wider"])
@pytest.mark.parametrize("frames", [4, 8])
def test_unmerged_logits_equal_transformers(tmp_path, arch, size, frames):
    reference = write_hf(tmp_path, arch, num_frames=frames, **size)
    model = load_model(tmp_path)
    image = size.get("image_size", 32)
    video = torch.randn(2, 3, frames, image, image, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(pixel_values=video.transpose(1, 2)).logits  # HF takes (B, T, C, H, W)
        got = model(video)
    assert (got - expected).abs().max() <= 1e-4
    assert model.labels == tuple(reference.config.id2label[i] for i in range(5))


def test_videomae_preprocessing_comes_from_the_checkpoint(tmp_path):
    import json

    write_hf(tmp_path, "videomae")
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.2, 0.2, 0.2], "size": {"shortest_edge": 40}})
    )
    pre = load_model(tmp_path).preprocessing
    assert pre.mean == (0.5, 0.5, 0.5) and pre.std == (0.2, 0.2, 0.2) and pre.short_side == 40


def test_timesformer_defaults_to_its_own_normalisation(tmp_path):
    write_hf(tmp_path, "timesformer")
    assert load_model(tmp_path).preprocessing.mean == (0.45, 0.45, 0.45)


@pytest.mark.parametrize("arch", ["videomae", "timesformer"])
@pytest.mark.parametrize("merge", ["tome", "sttm"])
def test_training_free_merging_on_an_unmodified_checkpoint(tmp_path, arch, merge):
    reference = write_hf(tmp_path, arch, num_frames=8, image_size=64, num_hidden_layers=4)
    model = load_model(tmp_path, merge=merge, reduction=0.3)
    video = torch.randn(2, 3, 8, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(pixel_values=video.transpose(1, 2)).logits
        got = model(video)
    assert got.shape == expected.shape and bool(torch.isfinite(got).all())
    assert model.gflops() < 0.75 * model.gflops(merged=False)
