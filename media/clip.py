"""One path from a source to the model's input: `load_clip(source, spec, views)`.

The server (`/v1/classify`, `sttm predict`), training and evaluation data,
and `sttm explain` all call it, so a model is trained on exactly what it is served. What
differs between them is only *which* views are taken:

- `Views`: test-mode clips along time x crops (MMAction2's `num_clips` x ThreeCrop);
- `Jitter`: training's random view (temporal jitter, scale jitter, a random crop).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import numpy as np

from media.decode import Limits, Source, VideoInfo, read_frames
from media.errors import VideoError
from media.sampling import Plan, Sampling, clip_plan, jitter_plan
from media.transforms import crop, normalize, random_crop


@dataclass(frozen=True)
class InputSpec:
    """What a model takes, as its weights expect it (from its config or its exported metadata)."""

    frames: int  # T
    size: int  # S: crop size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    short_side: int  # resize the short side to this, then crop `size`
    sampling: Sampling = "dense"
    frame_interval: int = 4  # dense sampling: stride between sampled frames


@dataclass(frozen=True)
class Views:
    """Test-mode views: `num_clips` clips along time (within `[start_s, end_s)`) x `crops`
    crops (1: centre, 3: ThreeCrop); `sampling`/`frame_interval` default to the model's."""

    sampling: Sampling | None = None
    frame_interval: int | None = None
    num_clips: int = 1
    crops: int = 1
    start_s: float = 0.0
    end_s: float | None = None

    def short_side(self, spec: InputSpec) -> int:
        return spec.short_side

    def plan(self, spec: InputSpec) -> Plan:
        sampling = self.sampling or spec.sampling
        if self.frame_interval is not None and sampling != "dense":  # it would be ignored: say so
            raise VideoError(
                "bad_option", f"frame_interval applies to dense sampling only; this request's sampling is {sampling}"
            )
        interval = self.frame_interval or spec.frame_interval
        return clip_plan(spec.frames, sampling, interval, self.num_clips, self.start_s, self.end_s)

    def crop(self, frames: np.ndarray, spec: InputSpec) -> np.ndarray:
        return crop(frames, spec.size, self.crops)


@dataclass(frozen=True)
class Jitter:
    """Training's random view, drawn from `rng`: the short side scaled by a factor in `scale`,
    a random clip in time, a random crop."""

    rng: random.Random = field(default_factory=random.Random)
    scale: tuple[float, float] = (1.0, 1.25)

    def short_side(self, spec: InputSpec) -> int:
        return int(spec.short_side * self.rng.uniform(*self.scale))

    def plan(self, spec: InputSpec) -> Plan:
        return jitter_plan(spec.frames, spec.sampling, spec.frame_interval, self.rng)

    def crop(self, frames: np.ndarray, spec: InputSpec) -> np.ndarray:
        return random_crop(frames, spec.size, self.rng)


@dataclass(frozen=True)
class Clip:
    """The model's input and what was decoded to make it."""

    tensor: np.ndarray  # (V, 3, T, S, S) float32, normalised: views = crops x clips (crop-major)
    pixels: np.ndarray  # (V, T, S, S, 3) uint8: the same views before normalisation
    indices: np.ndarray  # (clips, T) frame indices decoded
    info: VideoInfo
    decode_s: float
    preprocess_s: float


def load_clip(source: Source, spec: InputSpec, views: Views | Jitter = Views(), limits: Limits = Limits()) -> Clip:
    """Decode the frames `views` plans (and no others), crop, normalise.

    Args:
        source: a path, the encoded bytes, or a seekable binary file object (an upload).
    Raises:
        media.VideoError: the source is not a usable video, or the views ask for too much.
    """
    short_side = views.short_side(spec)  # drawn first: a Jitter's draws are in a fixed order
    t0 = time.perf_counter()
    frames, indices, info = read_frames(source, views.plan(spec), short_side, limits)  # (clips, T, H, W, 3)
    t1 = time.perf_counter()
    pixels = views.crop(frames, spec)  # (crops, clips, T, S, S, 3)
    pixels = pixels.reshape(-1, *pixels.shape[2:])  # (V, T, S, S, 3)
    tensor = normalize(pixels, spec.mean, spec.std)  # (V, 3, T, S, S)
    return Clip(tensor, pixels, indices, info, t1 - t0, time.perf_counter() - t1)
