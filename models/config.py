"""Model configuration as data: frozen dataclasses and a dict of named factories.

Every config carries the preprocessing its weights expect (mean/std, frames, input
size, frame sampling), so it travels with the checkpoint and later into the exported
file's metadata.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

Arch = Literal["vit", "timesformer"]
MergeMethod = Literal["none", "tome", "sttm"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What a clip must look like before it reaches the model."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    short_side: int = 224  # resize the short side to this, then centre-crop `crop_size`
    sampling: Literal["dense", "uniform"] = "dense"  # MMAction2 vocabulary
    frame_interval: int = 4  # dense sampling: stride between sampled frames


@dataclass(frozen=True)
class ModelConfig:
    """One video transformer. `num_frames`/`image_size` are the input clip's."""

    arch: Arch = "vit"
    num_frames: int = 16
    image_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2  # ViT only: frames per token (TimeSformer embeds frame by frame)
    dim: int = 768
    depth: int = 12
    heads: int = 12
    mlp_dim: int = 3072
    qkv_bias: Literal["qv", "qkv", "none"] = "qv"  # VideoMAE biases q and v only
    norm_eps: float = 1e-6
    head_norm_eps: float = 1e-5  # VideoMAE's fc_norm is a default nn.LayerNorm in HF
    pool: Literal["mean", "cls"] = "mean"  # ViT: mean-pool + fc_norm, or CLS + final norm
    # ViT: the patch embedding sees each frame and its deviation from the clip's mean frame
    # (6 channels), so a static background vanishes from one half and what moves remains.
    # Off for foreign checkpoints. In a probe it took the tiny demo ViT from chance to 49%
    # val in 600 steps on the motion clips; see `vit.TemporalCentering` for why raw stays.
    input_motion: bool = False
    num_classes: int = 400
    labels: tuple[str, ...] = ()
    preprocessing: Preprocessing = field(default_factory=Preprocessing)

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.arch == "vit" and self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames {self.num_frames} is not divisible by tubelet_size {self.tubelet_size}")
        if self.labels and len(self.labels) != self.num_classes:
            raise ValueError(f"{len(self.labels)} labels for {self.num_classes} classes")
        if self.arch == "timesformer" and self.pool != "cls":
            raise ValueError("TimeSformer classifies its CLS token: pool must be 'cls'")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid (T', H', W'): slices, rows, columns of patch tokens."""
        side = self.image_size // self.patch_size
        t = self.num_frames // self.tubelet_size if self.arch == "vit" else self.num_frames
        return t, side, side

    @property
    def in_channels(self) -> int:
        """Channels the patch embedding sees: RGB, and RGB minus the clip mean with input_motion."""
        return 6 if self.input_motion else 3

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.labels or tuple(f"class_{i}" for i in range(self.num_classes))

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        data = dict(data)
        pre = Preprocessing(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in data.pop("preprocessing", {}).items()}
        )
        data["labels"] = tuple(data.get("labels", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**data, preprocessing=pre)


@dataclass(frozen=True)
class MergeConfig:
    """Which token merger runs, how hard, and its open choices (see shared sttm.md)."""

    method: MergeMethod = "none"
    reduction: float = 0.0  # fraction of the unmerged GFLOPs to save
    proportional_attention: bool = True  # softmax(QK^T/sqrt(d) + log s)
    meta_ratio: float = 0.25  # STTM: meta tokens per group, as a fraction of the group
    knn: int = 5  # STTM: neighbours for the DPC-kNN density
    merge_layers: tuple[int, ...] | None = None  # STTM: blocks that merge (None: depth/4 steps)

    def __post_init__(self) -> None:
        if self.method not in ("none", "tome", "sttm"):
            raise ValueError(f"unknown merge method {self.method!r}: use none, tome or sttm")
        if not 0.0 <= self.reduction < 1.0:
            raise ValueError(f"reduction must be in [0, 1), got {self.reduction}")
        if self.method == "none" and self.reduction > 0:
            raise ValueError("reduction > 0 needs a merge method (tome or sttm)")


TIMESFORMER_PRE = Preprocessing(mean=(0.45, 0.45, 0.45), std=(0.225, 0.225, 0.225), frame_interval=32)
# MMAction2's own configs, when no --config says otherwise: VideoMAE ViT 16x4x1 with ImageNet
# normalisation; TimeSformer 8x32x1 with mean = std = 127.5 (of 255); both short side 224.
MMACTION_VIT_PRE = Preprocessing(frame_interval=4)
MMACTION_TIMESFORMER_PRE = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), frame_interval=32)

# Named factories. Sizes follow VideoMAE (S/B/L) and TimeSformer-B; tiny ones are for tests.
PRESETS: dict[str, ModelConfig] = {
    "videomae-s": ModelConfig(dim=384, depth=12, heads=6, mlp_dim=1536),
    "videomae-b": ModelConfig(),
    "videomae-l": ModelConfig(dim=1024, depth=24, heads=16, mlp_dim=4096),
    "timesformer-b": ModelConfig(
        arch="timesformer", num_frames=8, qkv_bias="qkv", pool="cls", preprocessing=TIMESFORMER_PRE
    ),
    # The demo model's architecture: trains on 2 CPU cores on the generated motion clips.
    "vit-demo": ModelConfig(
        num_frames=8,
        image_size=96,
        dim=128,
        depth=6,
        heads=4,
        mlp_dim=512,
        num_classes=12,
        input_motion=True,
        preprocessing=Preprocessing(short_side=96, sampling="uniform"),
    ),
    "vit-tiny": ModelConfig(
        num_frames=8,
        image_size=64,
        dim=64,
        depth=4,
        heads=2,
        mlp_dim=128,
        num_classes=10,
        preprocessing=Preprocessing(short_side=64, sampling="uniform"),
    ),
    "timesformer-tiny": ModelConfig(
        arch="timesformer",
        num_frames=4,
        image_size=64,
        dim=64,
        depth=4,
        heads=2,
        mlp_dim=128,
        qkv_bias="qkv",
        pool="cls",
        num_classes=10,
        preprocessing=TIMESFORMER_PRE,
    ),
}
