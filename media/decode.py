"""PyAV decoding of only the frames a sampling plan needs.

Frame counts come from the container's duration and rate (never `stream.frames` alone,
often 0); the stream is walked once, and a forward seek (to the keyframe before the next
target) is made only when the gap is longer than a few keyframe intervals. Frames are
resized (short side) by FFmpeg's scaler and rotated upright.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from media.container import CONTAINERS, MAX_FPS, check_sample_tables
from media.errors import VideoError

Source = str | Path | bytes | BinaryIO  # a path, the encoded bytes, or a seekable binary file
_REORDER_MARGIN = 24  # frames: stop skipping this far before a target (B-frame reordering is shorter)
_SEEK_SAVES = 8  # frames: a seek (demuxer repositioned, decoder flushed) pays once it skips this many
_WALK_BACK = 1000  # index entries searched back for a keyframe before a target


@dataclass(frozen=True)
class Limits:
    max_pixels: int = 3840 * 2160  # refused from the header, before any frame is decoded
    max_duration_s: float = 3600.0
    decode_timeout_s: float = 30.0


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int  # as stored (before rotation)
    height: int
    codec: str
    frames: int  # estimated from duration x rate (or counted from packets)


def decoder_options(limits: Limits) -> dict[str, str]:
    """FFmpeg decoder options: a decoder refuses (allocates no) frames over the pixel limit."""
    return {"max_pixels": str(limits.max_pixels)}


def open_container(source: Source, limits: Limits) -> av.container.InputContainer:
    """Open and probe, in one of `CONTAINERS`. FFmpeg's probe may decode a first frame; the
    decoder options keep it from allocating one over the pixel limit (`_info` then refuses it)."""
    if isinstance(source, bytes | bytearray | memoryview):
        source = io.BytesIO(source)
    elif isinstance(source, str | Path) and not Path(source).is_file():  # a path: `sttm predict`'s, a manifest's
        raise VideoError("not_found", f"{'not a file' if Path(source).exists() else 'no such file'}: {source}")
    check_sample_tables(source, limits.max_duration_s)
    if isinstance(source, str | Path):  # read as a file even when named like a protocol ("concat:a|b", "pipe:0")
        source = f"file:{source}"
    try:
        return av_open(source, limits)
    except av.FFmpegError as err:
        reason = err.strerror or str(err)
        raise VideoError("not_a_video", f"not a readable MP4/MOV, MKV/WebM, AVI or MPEG-TS video ({reason})") from None


def video_stream(container, limits: Limits) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise VideoError("no_video_stream", f"the file has no video stream (streams: {', '.join(kinds) or 'none'})")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # an unknown or damaged codec id
        raise VideoError("unsupported_codec", "no decoder for the video stream's codec")
    stream.thread_type = "SLICE"  # frame threading measured slower on 2 cores
    stream.codec_context.options = decoder_options(limits)  # in-band size changes too
    return stream


def check_pixels(width: int, height: int, limits: Limits) -> None:
    """Refuse a frame size over the pixel limit, read from the header before any frame is decoded."""
    if width * height > limits.max_pixels:
        raise VideoError("too_large", f"{width}x{height} is over the limit of {limits.max_pixels} pixels")


def _info(container, stream, limits: Limits) -> VideoInfo:
    ctx = stream.codec_context
    width, height = ctx.width, ctx.height
    if width <= 0 or height <= 0:
        raise VideoError("corrupt", "the video stream has no frame size")
    check_pixels(width, height, limits)
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if not fps or not np.isfinite(fps) or fps <= 0 or fps > MAX_FPS:
        raise VideoError("corrupt", "the video stream has no usable frame rate")
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = 0.0
    if duration > limits.max_duration_s:
        raise VideoError("too_long", f"{duration:.0f} s is over the limit of {limits.max_duration_s:.0f} s")
    frames = round(duration * fps) if duration > 0 else 0
    if frames <= 0:
        frames = stream.frames or _count_packets(container, stream)
        duration = frames / fps
    return VideoInfo(duration, fps, width, height, ctx.name, int(frames))


def _count_packets(container, stream) -> int:
    """Last resort when neither duration nor frame count is known: demux, don't decode."""
    try:
        count = sum(1 for packet in container.demux(stream) if packet.size)
        container.seek(0, stream=stream)
    except av.FFmpegError as err:
        raise VideoError("corrupt", f"cannot read the video stream ({err.strerror or err})") from None
    return count


def probe(source: Source, limits: Limits = Limits()) -> VideoInfo:
    """Header facts only; raises VideoError on anything unusable."""
    with open_container(source, limits) as container:
        return _info(container, video_stream(container, limits), limits)


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def read_frames(
    source: Source,
    plan: np.ndarray | Callable[[VideoInfo], np.ndarray],
    short_side: int,
    limits: Limits = Limits(),
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """Decode the planned frames, resized (short side) by FFmpeg's scaler, rotated upright.

    Args:
        plan: frame indices to return (any shape), or a function of the header facts that
            returns them (a sampling plan, `media.sampling`).
    Returns:
        frames `[*indices.shape, H, W, 3]` uint8, the indices used (absolute), and the info.
    """
    with open_container(source, limits) as container:
        stream = video_stream(container, limits)
        info = _info(container, stream, limits)
        indices = np.asarray(plan(info) if callable(plan) else plan, dtype=np.int64)
        wanted = np.unique(indices)
        frames = _decode(container, stream, info, wanted, short_side, limits)
    lookup = {int(i): k for k, i in enumerate(wanted)}
    stacked = np.stack(frames)  # (len(wanted), H, W, 3)
    return stacked[np.vectorize(lookup.__getitem__, otypes=[int])(indices)], indices, info


def worth_seeking(key_before: int | None, gop: float, last_index: int, target: int) -> bool:
    """Seek to the keyframe before `target`, rather than decode on from `last_index`? Where the
    container's index names that keyframe (`key_before`, its frame number): when it lies more
    than `_SEEK_SAVES` frames ahead. Without one (MPEG-TS, a pipe; None): when the target is more
    than 3 GOPs ahead (`gop`: a guess, refined from the keyframes decoded)."""
    if key_before is not None:
        return key_before - last_index > _SEEK_SAVES
    return target - last_index > 3 * gop


def keyframe_before(entries, timestamp: int, most: int = _WALK_BACK) -> int | None:
    """The timestamp of the last keyframe that index `entries` (sorted by timestamp: PyAV's
    `stream.index_entries`) lists at or before `timestamp`; None where none of the `most`
    entries up to it is one (or there is no index). Decode timestamps: with B-frames a keyframe
    is listed a frame or two before it is shown."""
    i = bisect.bisect_right(entries, timestamp, key=lambda e: e.timestamp) - 1
    for j in range(i, max(i - most, -1), -1):
        if entries[j].is_keyframe:
            return entries[j].timestamp
    return None


def _decode(container, stream, info: VideoInfo, wanted: np.ndarray, short_side: int, limits: Limits) -> list:
    deadline = time.monotonic() + limits.decode_timeout_s  # one for the whole clip, seeks included
    ctx = stream.codec_context
    tb, t0 = float(stream.time_base), stream.start_time or 0
    entries = stream.index_entries  # the container's index (MP4/MOV sample tables, MKV cues); empty without
    gop = 2 * info.fps  # keyframe interval guess (frames) where there is no index; refined from the stream

    def seek_for(target: int, from_index: int) -> bool:
        if target - from_index <= _SEEK_SAVES:  # close: decode on (no index lookup)
            return False
        key = keyframe_before(entries, int(t0 + target / info.fps / tb))
        key_index = None if key is None else round((key - t0) * tb * info.fps)
        return worth_seeking(key_index, gop, from_index, target)

    out: dict[int, np.ndarray] = {}
    size = None  # (w, h) to convert to, fixed by the first frame (its rotation)
    last, last_index, last_key, k = None, -1, None, 0
    while k < len(wanted):
        target = int(wanted[k])
        progressed = False
        if seek_for(target, last_index):  # jump to the keyframe before it
            _seek(container, stream, int(t0 + target / info.fps / tb))
        try:
            for frame in _frames(container, stream, deadline, limits.decode_timeout_s):
                index = round((frame.pts - t0) * tb * info.fps) if frame.pts is not None else last_index + 1
                if frame.key_frame:
                    if last_key is not None and index > last_key:
                        gop = max(gop, index - last_key)
                    last_key = index
                if index < target:
                    last_index = max(last_index, index)
                    # far from the target: frames nobody references need not be decoded
                    ctx.skip_frame = "NONREF" if target - index > _REORDER_MARGIN else "DEFAULT"
                    continue
                ctx.skip_frame = "DEFAULT"
                if size is None:
                    size = output_size(frame.width, frame.height, short_side)
                array = convert_frame(frame, size)
                while k < len(wanted) and wanted[k] <= index:  # VFR gaps: the next frame stands in
                    out[int(wanted[k])] = array
                    k += 1
                last, last_index, progressed = array, index, True
                if k == len(wanted):
                    break
                target = int(wanted[k])
                if seek_for(target, index):
                    break  # seek in the outer loop
            else:
                break  # end of stream
        except av.FFmpegError as err:
            if last is None:
                raise VideoError("corrupt", f"cannot decode the video ({err.strerror or err})") from None
            break  # a damaged tail: keep what decoded
        if not progressed and k < len(wanted):
            break
    if last is None:
        raise VideoError("empty", "no frame could be decoded")
    for i in wanted[k:]:  # short video: repeat the last frame (MMAction2's convention)
        out[int(i)] = last
    return [out[int(i)] for i in wanted]


def _frames(container, stream, deadline: float, timeout_s: float):
    """The stream's frames, decoded from where the container stands, until `deadline`
    (`time.monotonic()`; `timeout_s`: what it allowed, for the error)."""
    for frame in container.decode(stream):
        if time.monotonic() > deadline:
            raise VideoError("timeout", f"decoding took longer than {timeout_s:.0f} s")
        yield frame


def _seek(container, stream, timestamp: int) -> None:
    """To the keyframe at or before `timestamp` (the stream's time base); a container that
    cannot seek is decoded forward."""
    with contextlib.suppress(av.FFmpegError):
        container.seek(timestamp, stream=stream, backward=True, any_frame=False)


def convert_frame(frame, size: tuple[int, int]) -> np.ndarray:
    """RGB scaled to `size` (w, h, as stored) by FFmpeg's scaler, then rotated upright
    (the display matrix rotates counter-clockwise by `frame.rotation` degrees)."""
    w, h = size
    rotation = frame.rotation or 0
    array = frame.to_ndarray(format="rgb24", width=w, height=h)  # (h, w, 3)
    if rotation:
        array = np.rot90(array, k=round(rotation / 90) % 4)
    return np.ascontiguousarray(array)


def av_open(source, limits: Limits):
    """`av.open` as every decode here does it: read-only, the decoder options of `limits`, only
    the allowed containers (`CONTAINERS`); FFmpeg's errors are the caller's to word."""
    files_only = {"protocol_whitelist": "file"} if isinstance(source, str) else {}  # a path: no network, no pipes
    return av.open(
        source,
        mode="r",
        metadata_errors="ignore",
        options=decoder_options(limits),
        container_options={"format_whitelist": CONTAINERS, **files_only},
    )
