"""Which frames a clip is made of: MMAction2's sampling vocabulary as pure functions.

A *plan* is a function of the header facts (`VideoInfo`) that returns the frame indices to
decode, `[clips, T]`; `media.decode.read_frames` calls it once the container is open.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

import numpy as np

from media.errors import VideoError

if TYPE_CHECKING:
    from media.decode import VideoInfo

Sampling = Literal["dense", "uniform"]
Plan = Callable[["VideoInfo"], np.ndarray]


def dense_indices(total: int, clip_len: int, frame_interval: int, num_clips: int = 1) -> np.ndarray:
    """MMAction2 test-mode dense sampling: `num_clips` clips of `clip_len` frames,
    `frame_interval` apart, evenly spaced over the video (one clip: centred).
    Indices past the end repeat the last frame. Returns `[num_clips, clip_len]`."""
    span = clip_len * frame_interval
    if num_clips == 1:
        starts = np.array([max(0, (total - span) // 2)])
    else:
        starts = np.linspace(0, max(0, total - span), num_clips).round().astype(int)
    idx = starts[:, None] + np.arange(clip_len)[None, :] * frame_interval  # (num_clips, clip_len)
    return np.minimum(idx, max(total - 1, 0))


def uniform_indices(total: int, clip_len: int, num_clips: int = 1) -> np.ndarray:
    """Segment sampling (TSN/SSv2): split the video into `clip_len` segments and take the
    centre of each; further clips shift within the segment. Returns `[num_clips, clip_len]`."""
    seg = total / clip_len
    offsets = (np.arange(num_clips) + 0.5) / num_clips  # (num_clips,) in (0, 1)
    idx = np.floor((np.arange(clip_len)[None, :] + offsets[:, None]) * seg).astype(int)  # (num_clips, clip_len)
    return np.clip(idx, 0, max(total - 1, 0))


def sample_indices(
    total: int, clip_len: int, sampling: Sampling, frame_interval: int = 4, num_clips: int = 1
) -> np.ndarray:
    """Test-mode sampling of `total` frames: `[num_clips, clip_len]`."""
    if total <= 0:
        raise VideoError("empty", "the video has no frames")
    if sampling == "dense":
        return dense_indices(total, clip_len, frame_interval, num_clips)
    return uniform_indices(total, clip_len, num_clips)


def jittered_indices(total: int, clip_len: int, sampling: Sampling, frame_interval: int, rng: random.Random):
    """Train-mode sampling, one clip `[clip_len]`: a random frame inside each segment
    (uniform), or a random start (dense)."""
    if sampling == "uniform":
        seg = total / clip_len
        idx = np.floor((np.arange(clip_len) + [rng.random() for _ in range(clip_len)]) * seg)
        return np.clip(idx.astype(int), 0, total - 1)
    start = rng.randint(0, max(0, total - clip_len * frame_interval))
    return np.minimum(start + np.arange(clip_len) * frame_interval, total - 1)


def frame_range(info: VideoInfo, start_s: float, end_s: float | None) -> tuple[int, int]:
    """The frames `[first, last)` within `[start_s, end_s)`; an end past the video's end means
    its end, and the range holds at least one frame. A start at or past the end is a
    `bad_option` (the last frame repeated would be answered as if it were the clip)."""
    if start_s > 0 and start_s >= info.duration_s:
        raise VideoError(
            "bad_option", f"start {start_s:g} s is not before the end of the video ({info.duration_s:.2f} s)"
        )
    start_s, end_s = min(start_s, info.duration_s), None if end_s is None else min(end_s, info.duration_s)
    first = min(max(0, round(start_s * info.fps)), max(info.frames - 1, 0))
    last = info.frames if end_s is None else min(info.frames, max(first + 1, round(end_s * info.fps)))
    return first, last


def clip_plan(
    clip_len: int,
    sampling: Sampling,
    frame_interval: int,
    num_clips: int = 1,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> Plan:
    """`num_clips` test-mode clips within `[start_s, end_s)`."""

    def plan(info: VideoInfo) -> np.ndarray:
        first, last = frame_range(info, start_s, end_s)
        return first + sample_indices(last - first, clip_len, sampling, frame_interval, num_clips)

    return plan


def window_starts(duration_s: float, window_s: float, stride_s: float, max_windows: int) -> np.ndarray:
    """Start (s) of each window of a timeline, every `stride_s` until one reaches the end (the
    last may be partial: its clip is padded); too many is a `too_many_windows` error."""
    last = max(duration_s - window_s, 0.0)
    count = np.ceil(last / stride_s - 1e-6) + 1  # a float (may be inf), counted before anything is listed
    if count > max_windows:
        raise VideoError("too_many_windows", f"{count:.4g} windows; at most {max_windows} (raise stride_s)")
    return np.arange(int(count)) * stride_s  # (windows,) seconds


def jitter_plan(clip_len: int, sampling: Sampling, frame_interval: int, rng: random.Random) -> Plan:
    """One train-mode clip over the whole video: `[1, clip_len]`."""
    return lambda info: jittered_indices(info.frames, clip_len, sampling, frame_interval, rng)[None]
