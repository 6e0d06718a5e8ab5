"""PyTorch video transformers (VideoMAE-style ViT, TimeSformer) with STTM and ToMe merging.

Names are resolved lazily (PEP 562): importing a torch-free leaf (`models.config`,
`models.synth`) runs this file first, and an eager import of `models.checkpoint` here would
load torch (seconds; absent from the serving image) for `sttm synth` or a config lookup.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Sidecars": "models.checkpoint",
    "VideoClassifier": "models.checkpoint",
    "build_model": "models.checkpoint",
    "load_model": "models.checkpoint",
    "save_model": "models.checkpoint",
    "PRESETS": "models.config",
    "MergeConfig": "models.config",
    "ModelConfig": "models.config",
    "Preprocessing": "models.config",
    "CheckpointError": "models.errors",
    "MergeStep": "models.schedule",
    "Schedule": "models.schedule",
    "gmacs": "models.schedule",
    "make_schedule": "models.schedule",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
