"""Continuous video: frames in, one model clip per window out, in one decoding pass.

`read_windows(source, spec, window_s, stride_s)` decodes a source front to back (a file, an
upload, an RTSP URL FFmpeg reads live, or a `Pipe` fed by a client or by the server's own
fetching of HTTP(S) and HLS, `media.hls`) and yields a
`WindowClip` as soon as the frames of a window have arrived. Memory is bounded by one window:
the `FrameRing` keeps the resized frames of the window being filled and drops each frame as
soon as no later window can use it. The last, partial window is classified too (its frames
are sampled as `sample_indices` pads a short video: the last frame repeats).

A window's frames are sampled exactly as `load_clip` samples a clip of that time span
(`media.sampling.sample_indices` over the frames inside `[start, start + window_s)`), so a
timeline and a classification of the same span see the same frames.

The pieces live apart: `media.frame_ring` (the window being filled), `media.pipe` (a client's
pushed bytes), `media.url` (which network sources FFmpeg may open); their names are importable
from here too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from media.clip import InputSpec
from media.decode import (
    Limits,
    Source,
    av_open,
    check_pixels,
    convert_frame,
    open_container,
    output_size,
    video_stream,
)
from media.errors import VideoError
from media.frame_ring import FrameRing
from media.pipe import Pipe
from media.transforms import crop, normalize
from media.url import PROTOCOLS, URL_FORMATS, URL_SCHEMES, open_url

__all__ = [
    "PROTOCOLS",
    "URL_FORMATS",
    "URL_SCHEMES",
    "FrameRing",
    "Pipe",
    "Progress",
    "WindowClip",
    "open_url",
    "read_windows",
]


@dataclass(frozen=True)
class WindowClip:
    """One window's model input and when it was ready."""

    start_s: float
    end_s: float
    tensor: np.ndarray  # (1, 3, T, S, S) float32, normalised
    ready_at: float  # time.monotonic() when its last frame was decoded


@dataclass
class Progress:
    """What a reader has done so far (read by other threads: plain counters)."""

    frames: int = 0
    live: bool = False
    started_at: float = 0.0
    decode_s: float = 0.0  # time spent opening, decoding and preparing (not waiting for the consumer)
    dropped: int = 0  # windows the consumer dropped to stay live (counted by service.handoff)
    duration_s: float | None = None  # the length the source announced (an RTSP server's range), if any
    position_s: float = 0.0  # the time of the last frame decoded

    @property
    def reached_end(self) -> bool:
        """Whether decoding got to the announced end (within half a second): a source that
        closes before it, or that announced none (a camera), dropped rather than ended."""
        return self.duration_s is not None and self.position_s >= self.duration_s - 0.5


@dataclass
class _Clock:
    """A stream's frame times: seconds since its first frame, the last kept one, where it ends."""

    time_base: float
    step: float  # a frame's duration
    first_pts: int | None = None
    kept_t: float = -1.0
    end_s: float = 0.0
    stopped: bool = False

    @classmethod
    def of(cls, stream) -> _Clock:
        rate = stream.average_rate or stream.guessed_rate
        step = 1 / float(rate) if rate and 0 < float(rate) <= 1000 else 0.04
        return cls(float(stream.time_base or 0) or 1 / 90000, step)

    def time_of(self, frame) -> float:
        if frame.pts is None:
            return self.end_s
        self.first_pts = frame.pts if self.first_pts is None else self.first_pts
        return (frame.pts - self.first_pts) * self.time_base


def _open_any(source: Source | Pipe, timeout_s: float, limits: Limits):
    if isinstance(source, str) and "://" in source:
        return open_url(source, timeout_s, limits)
    if isinstance(source, Pipe):
        try:
            return av_open(source, limits)
        except TimeoutError as err:  # the client sent too little to open, then nothing
            raise VideoError("timeout", str(err)) from None
        except av.FFmpegError as err:
            why = getattr(err, "strerror", None) or err  # FFmpeg's words, not "[Errno 1094995529] ...: '<none>'"
            raise VideoError("not_a_video", f"not a readable WebM/Matroska or MP4 stream ({why})") from None
    return open_container(source, limits)


def _is_live(source: Source | Pipe, container) -> bool:
    """No known duration: a camera, a live playlist, a client push."""
    if container.duration is None or isinstance(source, Pipe):
        return True
    return isinstance(source, str) and source.lower().startswith("rtsp")


def _frames(
    container, stream, spec: InputSpec, limits: Limits, clock: _Clock, *, stop, progress, max_fps, timeout_s
) -> Iterator[tuple[float, np.ndarray]]:
    """Each kept frame as `(t, pixels [S, S, 3])`, resized and cropped; FFmpeg's errors as VideoError."""
    size = None
    try:
        for frame in container.decode(stream):
            if stop.is_set():
                clock.stopped = True
                return
            t = clock.time_of(frame)
            if t > limits.max_duration_s and not progress.live:
                raise VideoError("too_long", f"over the limit of {limits.max_duration_s:.0f} s")
            if t < clock.kept_t + 0.999 / max_fps:
                continue  # over max_fps: thinned out (never converted)
            clock.kept_t = t
            size = size or output_size(frame.width, frame.height, spec.short_side)
            pixels = crop(convert_frame(frame, size), spec.size)[0]
            progress.frames += 1
            progress.position_s = t
            clock.end_s = max(clock.end_s, t + clock.step)
            yield t, pixels
    except av.FFmpegError as err:
        if progress.frames == 0:
            raise VideoError("corrupt", f"cannot decode the media ({err.strerror or err})") from None
        if isinstance(err, av.ExitError | av.error.TimeoutError) or "timed out" in str(err).lower():
            raise VideoError("timeout", f"no frame for {timeout_s:.0f} s") from None
        if progress.live:
            raise VideoError("unreachable", f"the source dropped ({err.strerror or err})") from None
        # a file's damaged tail: classify what decoded
    except TimeoutError:
        raise VideoError("timeout", f"no frame for {timeout_s:.0f} s") from None


def read_windows(
    source: Source | Pipe,
    spec: InputSpec,
    window_s: float,
    stride_s: float,
    limits: Limits = Limits(),
    *,
    timeout_s: float = 10.0,
    stop: threading.Event | None = None,
    progress: Progress | None = None,
    max_fps: float = 120.0,
) -> Iterator[WindowClip]:
    """Decode `source` once, front to back; yield each window's clip as soon as it is complete,
    then the last, partial one.

    Args:
        source: a path, bytes, a binary file, an RTSP URL (`open_url`) or a `Pipe`.
        timeout_s: the longest wait for the next frame (a stalled source raises `timeout`).
        stop: set it to end the reading early (checked at every frame).
        progress: counters updated as frames arrive; `live` says whether the source has no
            known duration (a camera, a live playlist, a client push).
        max_fps: frames closer together than `1 / max_fps` are skipped.
    Raises:
        media.VideoError: unusable source, undecodable media, a stall longer than `timeout_s`.
    """
    progress = progress if progress is not None else Progress()
    stop = stop or threading.Event()
    busy_since = time.perf_counter()
    with _open_any(source, timeout_s, limits) as container:
        stream = video_stream(container, limits)
        check_pixels(stream.codec_context.width, stream.codec_context.height, limits)
        progress.live = _is_live(source, container)
        progress.duration_s = container.duration / 1e6 if container.duration else None
        progress.started_at = time.monotonic()
        ring, clock = FrameRing(spec, window_s, stride_s, max_fps), _Clock.of(stream)
        frames = _frames(
            container, stream, spec, limits, clock, stop=stop, progress=progress, max_fps=max_fps, timeout_s=timeout_s
        )
        for t, pixels in frames:
            now = time.monotonic()
            for start, end, clip in ring.push(t, pixels):
                window = WindowClip(start, end, normalize(clip[None], spec.mean, spec.std), now)
                progress.decode_s += time.perf_counter() - busy_since
                yield window
                busy_since = time.perf_counter()
        if clock.stopped:
            return
        if progress.frames == 0:
            raise VideoError("empty", "no frame could be decoded")
        for start, end, clip in ring.finish(clock.end_s):
            yield WindowClip(start, end, normalize(clip[None], spec.mean, spec.std), time.monotonic())
