"""PyTorch video transformers (VideoMAE-style ViT, TimeSformer) with STTM and ToMe merging."""

from models.checkpoint import VideoClassifier, build_model, load_model, save_model
from models.config import PRESETS, MergeConfig, ModelConfig, Preprocessing
from models.convert import CheckpointError
from models.schedule import MergeStep, Schedule, gmacs, make_schedule

__all__ = [
    "PRESETS",
    "CheckpointError",
    "MergeConfig",
    "MergeStep",
    "ModelConfig",
    "Preprocessing",
    "Schedule",
    "VideoClassifier",
    "build_model",
    "gmacs",
    "load_model",
    "make_schedule",
    "save_model",
]
