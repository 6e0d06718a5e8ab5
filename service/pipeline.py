"""Clip -> model input: decode the sampled frames, crop, normalise (runs in a worker
thread, off the event loop). The same `models.video` functions training uses."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from export.metadata import ModelMetadata
from models.video import Limits, Source, VideoError, VideoInfo, crop, normalize, read_frames, sample_indices
from service.schemas import ClassifyOptions, TimelineOptions


@dataclass
class Prepared:
    views: np.ndarray  # (V, 3, T, S, S) float32
    indices: np.ndarray  # (clips, T) frame indices
    info: VideoInfo
    decode_s: float
    preprocess_s: float


def _sampling(meta: ModelMetadata, opts: ClassifyOptions) -> tuple[str, int]:
    if opts.clip_len is not None and opts.clip_len != meta.num_frames:
        raise VideoError("bad_option", f"clip_len must be {meta.num_frames} for this model")
    sampling = meta.sampling if opts.sampling == "model" else opts.sampling
    return sampling, opts.frame_interval or meta.frame_interval


def _views(frames: np.ndarray, meta: ModelMetadata, crops: int) -> np.ndarray:
    views = crop(frames, meta.image_size, crops)  # (crops, clips, T, S, S, 3)
    views = views.reshape(-1, *views.shape[2:])  # (crops*clips, T, S, S, 3)
    return normalize(views, meta.mean, meta.std)  # (V, 3, T, S, S)


def prepare_clip(source: Source, meta: ModelMetadata, opts: ClassifyOptions, limits: Limits) -> Prepared:
    sampling, interval = _sampling(meta, opts)
    t0 = time.perf_counter()
    frames, indices, info = read_frames(
        source, None, meta.short_side, limits, clip_len=meta.num_frames, sampling=sampling,
        frame_interval=interval, num_clips=opts.num_clips, start_s=opts.start, end_s=opts.end,
    )  # fmt: skip
    t1 = time.perf_counter()
    views = _views(frames, meta, opts.crops)
    return Prepared(views, indices, info, t1 - t0, time.perf_counter() - t1)


def window_starts(duration: float, opts: TimelineOptions, max_windows: int) -> np.ndarray:
    last = max(duration - opts.window_s, 0.0)
    count = (last + 1e-6) // opts.stride_s + 1  # a float (may be inf), counted before anything is listed
    if count > max_windows:
        raise VideoError("too_many_windows", f"{count:.4g} windows; at most {max_windows} (raise stride_s)")
    return np.arange(int(count)) * opts.stride_s  # (windows,) seconds


def prepare_timeline(
    source: Source, meta: ModelMetadata, opts: TimelineOptions, limits: Limits, max_windows: int
) -> tuple[Prepared, np.ndarray]:
    """One clip per window, all decoded in one pass. Returns the views and window starts."""
    starts_box: list[np.ndarray] = []

    def indices(info: VideoInfo) -> np.ndarray:
        starts = window_starts(info.duration_s, opts, max_windows)
        starts_box.append(starts)
        rows = []
        for start in starts:
            first = min(round(start * info.fps), max(info.frames - 1, 0))
            last = min(info.frames, max(first + 1, round((start + opts.window_s) * info.fps)))
            rows.append(first + sample_indices(last - first, meta.num_frames, meta.sampling, meta.frame_interval)[0])
        return np.stack(rows)  # (windows, T)

    t0 = time.perf_counter()
    frames, idx, info = read_frames(source, indices, meta.short_side, limits)
    t1 = time.perf_counter()
    views = _views(frames, meta, 1)
    return Prepared(views, idx, info, t1 - t0, time.perf_counter() - t1), starts_box[0]
