"""Continuous video: frames in, one model clip per window out, in one decoding pass.

`read_windows(source, spec, window_s, stride_s)` decodes a source front to back (a file, an
upload, a URL FFmpeg reads live — RTSP, HLS, HTTP — or a `Pipe` fed by a client) and yields a
`WindowClip` as soon as the frames of a window have arrived. Memory is bounded by one window:
the `FrameRing` keeps the resized frames of the window being filled and drops each frame as
soon as no later window can use it. The last, partial window is classified too (its frames
are sampled as `sample_indices` pads a short video: the last frame repeats).

A window's frames are sampled exactly as `load_clip` samples a clip of that time span
(`media.sampling.sample_indices` over the frames inside `[start, start + window_s)`), so a
timeline and a classification of the same span see the same frames.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from media.clip import InputSpec
from media.container import CONTAINERS
from media.decode import Limits, Source, convert_frame, decoder_options, open_container, output_size, video_stream
from media.errors import VideoError
from media.sampling import sample_indices
from media.transforms import crop, normalize

# What FFmpeg may open for a URL source: the network protocols of RTSP, HLS and HTTP(S), and
# the demuxers of those plus our containers. `file`, `concat`, `pipe`, `data`, ... are refused,
# also where a playlist names them.
PROTOCOLS = "http,https,tcp,tls,rtsp,rtsps,rtp,udp,crypto"
URL_FORMATS = f"{CONTAINERS},hls,rtsp,sdp,rtp"
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")


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


class FrameRing:
    """Frames `(t, pixels)` in time order -> windows `[k * stride_s, k * stride_s + window_s)`.

    Holds only frames at or after the next window's start (at most `capacity`; past that the
    oldest are thinned out), so memory is one window whatever the length of the video.
    """

    def __init__(self, spec: InputSpec, window_s: float, stride_s: float, max_fps: float = 120.0) -> None:
        self.spec, self.window_s, self.stride_s = spec, window_s, stride_s
        self.frames: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self.capacity = int(np.ceil(window_s * max_fps)) + 2
        self.next = 0  # index of the next window to emit
        self.covered = 0.0  # end (s) of the last window emitted

    def _start(self, k: int) -> float:
        return k * self.stride_s

    def push(self, t: float, pixels: np.ndarray) -> Iterator[tuple[float, float, np.ndarray]]:
        """Add a frame at `t` seconds; yields `(start_s, end_s, clip [T, S, S, 3])` of each
        window this frame completes (a frame at or past a window's end completes it)."""
        while t >= self._start(self.next) + self.window_s:
            yield self._emit(self._start(self.next) + self.window_s)
        self.frames.append((t, pixels))
        if len(self.frames) > self.capacity:  # more frames per window than any model needs
            self.frames.popleft()

    def finish(self, end_s: float) -> Iterator[tuple[float, float, np.ndarray]]:
        """The stream ended at `end_s`: the partial window, unless one already reaches the end."""
        if self.frames and self.covered < end_s - 1e-6:
            yield self._emit(min(self._start(self.next) + self.window_s, end_s))

    def _emit(self, end: float) -> tuple[float, float, np.ndarray]:
        start = self._start(self.next)
        inside = [p for t, p in self.frames if start <= t < end]
        if not inside:  # a gap in the stream: the latest earlier frame stands in
            earlier = [p for t, p in self.frames if t < start]
            inside = earlier[-1:] or [self.frames[0][1]]
        idx = sample_indices(len(inside), self.spec.frames, self.spec.sampling, self.spec.frame_interval)[0]
        clip = np.stack([inside[i] for i in idx])  # (T, S, S, 3)
        self.next += 1
        self.covered = end
        keep_from = self._start(self.next)
        while len(self.frames) > 1 and self.frames[1][0] <= keep_from:  # the frame at/just before stays
            self.frames.popleft()
        return start, end, clip


class Pipe:
    """A bounded in-memory byte pipe: a client's chunks in (`write`), FFmpeg's reads out.

    `read` blocks until data arrives, the writer closes (then b"": end of stream), or
    `timeout_s` passes (then `TimeoutError`: FFmpeg sees a read error). `write` blocks while
    the pipe holds `capacity` bytes (up to `timeout_s`), so a client cannot outrun decoding
    by more than that.
    """

    def __init__(self, capacity: int = 8 << 20, timeout_s: float = 10.0) -> None:
        self.capacity, self.timeout_s = capacity, timeout_s
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._closed = False
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._size < self.capacity, self.timeout_s):
                raise TimeoutError("the decoder did not keep up")
            if self._closed:
                raise BrokenPipeError("the pipe is closed")
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            if not self._cond.wait_for(lambda: self._chunks or self._closed, self.timeout_s):
                raise TimeoutError(f"no media for {self.timeout_s:.0f} s")
            if not self._chunks:
                return b""
            out = bytearray()
            while self._chunks and (n < 0 or len(out) < n):
                chunk = self._chunks.popleft()
                take = len(chunk) if n < 0 else min(len(chunk), n - len(out))
                out += chunk[:take]
                if take < len(chunk):
                    self._chunks.appendleft(chunk[take:])
            self._size -= len(out)
            self._cond.notify_all()
            return bytes(out)


def open_url(url: str, timeout_s: float, limits: Limits) -> av.container.InputContainer:
    """Open a network source with FFmpeg, only over `PROTOCOLS` (the caller checks the host,
    and follows HTTP redirects itself: FFmpeg follows none). Every wait (connect, read) is
    bounded by `timeout_s`. Raises VideoError."""
    scheme = url.split(":", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise VideoError("bad_url", f"only {', '.join(URL_SCHEMES)} URLs are read, not {scheme!r}")
    micros = str(int(timeout_s * 1e6))
    options = {"protocol_whitelist": PROTOCOLS, "format_whitelist": URL_FORMATS, "rw_timeout": micros,
               **decoder_options(limits)}  # fmt: skip
    if scheme.startswith("rtsp"):
        options |= {"rtsp_transport": "tcp", "timeout": micros}
    else:
        options |= {"max_redirects": "0"}  # FFmpeg follows none: the caller followed and checked them
    try:
        return av.open(url, mode="r", options=options, timeout=(timeout_s, timeout_s), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise VideoError("unreachable", f"cannot open the source ({err.strerror or err})") from None


def _open_any(source: Source | Pipe, timeout_s: float, limits: Limits):
    if isinstance(source, str) and "://" in source:
        return open_url(source, timeout_s, limits)
    if isinstance(source, Pipe):
        try:
            return av.open(source, mode="r", metadata_errors="ignore", options=decoder_options(limits),
                           container_options={"format_whitelist": CONTAINERS})  # fmt: skip
        except (av.FFmpegError, TimeoutError) as err:
            raise VideoError("not_a_video", f"not a readable WebM/Matroska or MP4 stream ({err})") from None
    return open_container(source, limits)


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
        source: a path, bytes, a binary file, a URL (`open_url`) or a `Pipe`.
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
    container = _open_any(source, timeout_s, limits)
    with container:
        stream = video_stream(container, limits)
        ctx = stream.codec_context
        if ctx.width * ctx.height > limits.max_pixels:
            raise VideoError("too_large", f"{ctx.width}x{ctx.height} is over the limit of {limits.max_pixels} pixels")
        progress.live = (container.duration is None or isinstance(source, Pipe)
                         or (isinstance(source, str) and source.lower().startswith("rtsp")))  # fmt: skip
        progress.started_at = time.monotonic()
        ring = FrameRing(spec, window_s, stride_s, max_fps)
        tb = float(stream.time_base or 0) or 1 / 90000
        first_pts, size, end_s, kept_t = None, None, 0.0, -1.0
        rate = stream.average_rate or stream.guessed_rate
        step = 1 / float(rate) if rate and 0 < float(rate) <= 1000 else 0.04  # a frame's duration
        try:
            for frame in container.decode(stream):
                if stop.is_set():
                    return
                if frame.pts is None:
                    t = end_s
                else:
                    first_pts = frame.pts if first_pts is None else first_pts
                    t = (frame.pts - first_pts) * tb
                if t > limits.max_duration_s and not progress.live:
                    raise VideoError("too_long", f"over the limit of {limits.max_duration_s:.0f} s")
                if t < kept_t + 0.999 / max_fps:
                    continue  # over max_fps: thinned out (never converted)
                kept_t = t
                if size is None:
                    size = output_size(frame.width, frame.height, spec.short_side)
                pixels = crop(convert_frame(frame, size), spec.size)[0]  # (S, S, 3)
                progress.frames += 1
                end_s = max(end_s, t + step)
                now = time.monotonic()
                for start, end, clip in ring.push(t, pixels):
                    window = WindowClip(start, end, normalize(clip[None], spec.mean, spec.std), now)
                    progress.decode_s += time.perf_counter() - busy_since
                    yield window
                    busy_since = time.perf_counter()
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
        if progress.frames == 0:
            raise VideoError("empty", "no frame could be decoded")
        for start, end, clip in ring.finish(end_s):
            yield WindowClip(start, end, normalize(clip[None], spec.mean, spec.std), time.monotonic())
