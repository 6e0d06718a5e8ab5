"""Helpers for the tests that need torch (tests/models, tests/export): tiny checkpoints
written the way users get them. Imported only from there, never from tests/conftest.py,
so the service tests also run where torch is not installed (`.venv-serve`)."""

from __future__ import annotations

import torch

torch.set_num_threads(2)


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (HF inits biases and norms to constants, which hides bugs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return module


def write_hf(directory, arch: str, seed: int = 0, **overrides):
    """A Hugging Face checkpoint directory from `save_pretrained`, random weights."""
    import transformers

    base = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        image_size=32,
        num_frames=4,
        num_labels=5,
    )
    base.update(overrides)
    if arch == "videomae":
        config = transformers.VideoMAEConfig(**base)
        model = transformers.VideoMAEForVideoClassification(config)
    else:
        config = transformers.TimesformerConfig(**base)
        model = transformers.TimesformerForVideoClassification(config)
    model = randomize(model, seed).eval()
    model.save_pretrained(directory)
    return model
