"""`VideoClassifier`: a backbone (VideoMAE-style ViT or TimeSformer, merging inside) plus what a
user needs around it — labels, the input spec, GFLOPs — and `Source`, where its weights came from.
`models.checkpoint` builds, loads and saves it."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from media import InputSpec
from models.checkpoint_formats import NAMES
from models.config import MergeConfig, ModelConfig
from models.schedule import gmacs, make_schedule
from models.timesformer import TimeSformer
from models.vit import VideoViT


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a model's weights came from: the detected layout and the stored precision."""

    layout: str = "builtin"
    dtype: str = "float32"

    @property
    def name(self) -> str:
        return NAMES[self.layout]


class VideoClassifier(nn.Module):
    """A backbone plus what a user needs around it: labels, preprocessing, GFLOPs."""

    def __init__(self, cfg: ModelConfig, merge: MergeConfig) -> None:
        super().__init__()
        schedule = make_schedule(cfg, merge)
        arch = {"vit": VideoViT, "timesformer": TimeSformer}[cfg.arch]
        self.model = arch(cfg, merge, schedule)
        self.config, self.merge_config, self.schedule = cfg, merge, schedule
        self.source = Source()  # what it was loaded from (`load_model` sets it)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.label_names

    @property
    def preprocessing(self):
        return self.config.preprocessing

    @property
    def input_spec(self) -> InputSpec:
        """What a clip must look like for this model (`media.load_clip` makes it)."""
        cfg, pre = self.config, self.config.preprocessing
        return InputSpec(
            frames=cfg.num_frames,
            size=cfg.image_size,
            mean=pre.mean,
            std=pre.std,
            short_side=pre.short_side,
            sampling=pre.sampling,
            frame_interval=pre.frame_interval,
        )

    def gflops(self, merged: bool = True) -> float:
        """Multiply-adds per clip, in G (fvcore's convention for "GFLOPs")."""
        if not merged:
            return gmacs(self.config, make_schedule(self.config, MergeConfig()))
        return gmacs(self.config, self.schedule, self.merge_config.method)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """`[B, 3, T, H, W]` float32, normalised -> logits `[B, num_classes]`."""
        return self.model(video)
