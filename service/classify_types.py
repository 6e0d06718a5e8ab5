"""The classify use case's plain data: options in (`ClassifyOptions`, `TimelineOptions`),
results out (`Classification`, `Timeline`, `Window`, `Latency`, `Merges`); the HTTP schemas
and the CLI only translate them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from media import VideoInfo, Views
from media.sampling import Sampling
from runtime.postprocess import Prediction
from runtime.segments import Segment
from service.ladder_policy import Rung


@dataclass(frozen=True, kw_only=True)
class ClassifyOptions:
    top_k: int = 5
    views: Views = field(default_factory=Views)
    clip_len: int | None = None  # when given, must equal the model's frames
    explain: bool = False  # also what the merges did (the model file must have the output)
    reduction: float | None = None  # a rung's nominal reduction; None: the load policy picks


@dataclass(frozen=True, kw_only=True)
class TimelineOptions:
    top_k: int = 3
    window_s: float = 2.0
    stride_s: float = 1.0
    min_score: float = 0.0  # a window under it is "no action"
    min_windows: int = 2  # hysteresis of the segments (runtime.segments)
    sampling: Sampling | None = None  # frames of a window: None = the model's
    reduction: float | None = None  # as in ClassifyOptions


@dataclass(frozen=True)
class Latency:
    """Seconds per stage of one request; `total` includes everything before the answer."""

    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float


@dataclass(frozen=True)
class Merges:
    """What the model's merges did to the first view: the final token of every patch."""

    grid: tuple[int, int, int]  # (t, h, w) patch grid; a time slice spans num_frames / t frames
    frames: list[int]  # the first frame index of each time slice
    index: np.ndarray  # (t*h*w,) int, t-major: equal ids = one merged token


@dataclass(frozen=True)
class Inference:
    """One call through the batcher: logits `[n, classes]`, the seconds it waited and ran, its rung."""

    logits: np.ndarray
    queue_s: float
    infer_s: float
    rung: Rung


@dataclass(frozen=True)
class Explanation:
    """One explain call beside the batcher (no queue): logits, the first view's merges, seconds."""

    logits: np.ndarray
    merges: Merges
    infer_s: float


@dataclass(frozen=True)
class Classification:
    model: str
    predictions: list[Prediction]  # best first
    frames: list[int]  # frame indices of the first clip
    views: int
    video: VideoInfo
    latency: Latency
    reduction: float  # the rung it ran on (nominal, as in ladder.json)
    gflops: float  # that rung's multiply-adds per clip, G
    merges: Merges | None = None  # when asked (`explain`)


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    predictions: list[Prediction]
    probs: np.ndarray  # (classes,)
    latency_s: float = 0.0  # queue + inference
    queue_s: float = 0.0  # of which waiting for the batcher (and for a stream slot)
    lag_s: float = 0.0  # from the window's last frame to its answer
    rung: Rung | None = None  # the rung it ran on


@dataclass(frozen=True)
class Timeline:
    model: str
    windows: list[Window]
    segments: list[Segment]
    video: VideoInfo
    latency: Latency
    reduction: float
    gflops: float
