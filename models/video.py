"""Video decoding and frame sampling: PyAV + NumPy only (no torch).

One code path shared by the service and training, so a model is trained on exactly what
it is served. Decoding converts only the frames the sampled indices need: indices come
from the container's duration and rate (never `stream.frames` alone, often 0), the
stream is walked once, and a forward seek (to the keyframe before the next target) is
made only when the gap is longer than a few keyframe intervals.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import av
import numpy as np

Source = str | Path | BinaryIO
_REORDER_MARGIN = 24  # frames: stop skipping this far before a target (B-frame reordering is shorter)
# FFmpeg demuxers accepted (MP4/MOV, MKV/WebM, AVI, MPEG-TS): containers whose streams are known
# from the header, so the pixel limit reaches FFmpeg's probe. Refused before any reading: playlists
# and concat lists (hls, concat: they open other files and URLs), images, text (tty), raw
# streams, FLV (its streams appear only while probing, past the pixel limit).
CONTAINERS = "mov,matroska,avi,mpegts"
MAX_FPS = 1000  # a higher frame rate is refused as corrupt


class VideoError(ValueError):
    """The input cannot be used as a video; `code` is machine-readable, message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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


# ---------------------------------------------------------------------------- sampling


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
    total: int,
    clip_len: int,
    sampling: Literal["dense", "uniform"],
    frame_interval: int = 4,
    num_clips: int = 1,
) -> np.ndarray:
    if total <= 0:
        raise VideoError("empty", "the video has no frames")
    if sampling == "dense":
        return dense_indices(total, clip_len, frame_interval, num_clips)
    return uniform_indices(total, clip_len, num_clips)


# ------------------------------------------------------------------- MP4 sample tables
# FFmpeg's MP4/MOV demuxer builds one index entry (24 bytes) per declared sample while it
# opens the file, and run-length tables (a constant `stsz` sample size, fragment runs with
# default sizes) declare billions of samples in a few bytes: a 2 KB file can take gigabytes
# and seconds before any header check. So the tables are read first, by the duration limit.

_PARENTS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"mvex", b"moof", b"traf"}
_MAX_TOP_BOXES = 100_000  # far more than a real file has (fragmented: 2 per fragment)


def _box_header(head: bytes | memoryview, room: int) -> tuple[bytes, int, int] | None:
    """(type, box size, header size) from the first 8-16 bytes of a box with `room` bytes
    left in its parent (size 0: to the end); None when the header is malformed."""
    size, kind = struct.unpack_from(">I4s", head)
    header = 8
    if size == 1 and len(head) >= 16:
        size, header = struct.unpack_from(">Q", head, 8)[0], 16
    elif size == 0:
        size = room
    return (kind, size, header) if size >= header else None


def _boxes(data: memoryview) -> Iterator[tuple[bytes, memoryview]]:
    """ISO BMFF boxes in `data` as (type, payload), up to the first malformed header."""
    pos = 0
    while pos + 8 <= len(data):
        box = _box_header(data[pos : pos + 16], len(data) - pos)
        if box is None:
            return
        kind, size, header = box
        yield kind, data[pos + header : pos + size]
        pos += size


def _index_entries(data: memoryview, depth: int = 0, sound: bool = False) -> int:
    """Index entries FFmpeg builds for the sample tables in `data`: one per sample (`stsz`,
    `trun`), for constant-size audio (PCM) one per 1024 samples."""
    total = 0
    for kind, payload in _boxes(data):
        if kind == b"hdlr" and len(payload) >= 12:  # comes before its siblings' tables
            sound = bytes(payload[8:12]) == b"soun"
        elif kind in _PARENTS and depth < 8:
            total += _index_entries(payload, depth + 1, sound)
        elif kind == b"stsz" and len(payload) >= 12:
            size, count = struct.unpack_from(">II", payload, 4)
            total += count // 1024 + 1 if sound and size else count
        elif kind == b"trun" and len(payload) >= 8:
            total += struct.unpack_from(">I", payload, 4)[0]
    return total


def declared_samples(file: BinaryIO) -> int:
    """Index entries the MP4/MOV sample tables of a seekable file declare (0 for other formats);
    reads the `moov`/`moof` boxes only, and leaves the file where it was."""
    start, end = file.tell(), file.seek(0, 2)
    pos, total = 0, 0
    try:
        for _ in range(_MAX_TOP_BOXES):
            if pos + 8 > end:
                break
            file.seek(pos)
            box = _box_header(file.read(16), end - pos)
            if box is None:
                break
            kind, size, header = box
            if kind in (b"moov", b"moof"):
                file.seek(pos + header)
                total += _index_entries(memoryview(file.read(min(size, end - pos) - header)))
            pos += size
        else:
            raise VideoError("corrupt", f"more than {_MAX_TOP_BOXES} top-level boxes")
    finally:
        file.seek(start)
    return total


def _check_sample_tables(source: Source, limits: Limits) -> None:
    """Refuses tables that declare more samples than a video within the duration limit has."""
    most = round(limits.max_duration_s * MAX_FPS)
    try:
        if isinstance(source, str | Path):
            with open(source, "rb") as file:
                samples = declared_samples(file)
        else:
            samples = declared_samples(source)
    except VideoError:
        raise
    except (OSError, ValueError):  # not a seekable file: FFmpeg will say what is wrong
        return
    if samples > most:
        raise VideoError("too_long", f"the sample tables declare {samples} samples, more than "
                                     f"{limits.max_duration_s:.0f} s at {MAX_FPS} fps")  # fmt: skip


# ---------------------------------------------------------------------------- decoding


def _decoder_options(limits: Limits) -> dict[str, str]:
    """FFmpeg decoder options: a decoder refuses (allocates no) frames over the pixel limit."""
    return {"max_pixels": str(limits.max_pixels)}


def _open(source: Source, limits: Limits) -> av.container.InputContainer:
    """Open and probe, in one of `CONTAINERS`. FFmpeg's probe may decode a first frame; the
    decoder options keep it from allocating one over the pixel limit (`_info` then refuses it)."""
    if isinstance(source, str | Path):
        source = str(source)
    _check_sample_tables(source, limits)
    try:
        return av.open(source, mode="r", metadata_errors="ignore", options=_decoder_options(limits),
                       container_options={"format_whitelist": CONTAINERS})  # fmt: skip
    except av.FFmpegError as err:
        reason = err.strerror or str(err)
        raise VideoError("not_a_video", f"not a readable MP4/MOV, MKV/WebM, AVI or MPEG-TS video ({reason})") from None


def _stream(container, limits: Limits) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        raise VideoError("no_video_stream", f"the file has no video stream (streams: {', '.join(kinds) or 'none'})")
    stream = container.streams.video[0]
    if stream.codec_context is None:  # an unknown or damaged codec id
        raise VideoError("unsupported_codec", "no decoder for the video stream's codec")
    stream.thread_type = "SLICE"  # frame threading measured slower on 2 cores
    stream.codec_context.options = _decoder_options(limits)  # in-band size changes too
    return stream


def _info(container, stream, limits: Limits) -> VideoInfo:
    ctx = stream.codec_context
    width, height = ctx.width, ctx.height
    if width <= 0 or height <= 0:
        raise VideoError("corrupt", "the video stream has no frame size")
    if width * height > limits.max_pixels:
        raise VideoError("too_large", f"{width}x{height} is over the limit of {limits.max_pixels} pixels")
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
    with _open(source, limits) as container:
        return _info(container, _stream(container, limits), limits)


def _output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(width, height)
    return max(short_side, round(width * scale)), max(short_side, round(height * scale))


def read_frames(
    source: Source,
    indices: np.ndarray | Callable[[VideoInfo], np.ndarray] | None,
    short_side: int,
    limits: Limits = Limits(),
    *,
    clip_len: int = 16,
    sampling: Literal["dense", "uniform"] = "dense",
    frame_interval: int = 4,
    num_clips: int = 1,
    start_s: float = 0.0,
    end_s: float | None = None,
) -> tuple[np.ndarray, np.ndarray, VideoInfo]:
    """Decode the sampled frames, resized (short side) by FFmpeg's scaler, rotated upright.

    Args:
        indices: frame indices to return (any shape), or a function of the header info
            that returns them; None samples them with `sampling`/`clip_len`/
            `frame_interval`/`num_clips` within [start_s, end_s).
    Returns:
        frames `[*indices.shape, H, W, 3]` uint8, the indices used (absolute), and the info.
    """
    with _open(source, limits) as container:
        stream = _stream(container, limits)
        info = _info(container, stream, limits)
        if callable(indices):
            indices = indices(info)
        elif indices is None:
            start_s, end_s = min(start_s, info.duration_s), None if end_s is None else min(end_s, info.duration_s)
            first = min(max(0, round(start_s * info.fps)), max(info.frames - 1, 0))  # times past the end: the end
            last = info.frames if end_s is None else min(info.frames, max(first + 1, round(end_s * info.fps)))
            indices = first + sample_indices(last - first, clip_len, sampling, frame_interval, num_clips)
        indices = np.asarray(indices, dtype=np.int64)
        wanted = np.unique(indices)
        frames = _decode(container, stream, info, wanted, short_side, limits)
    lookup = {int(i): k for k, i in enumerate(wanted)}
    stacked = np.stack(frames)  # (len(wanted), H, W, 3)
    return stacked[np.vectorize(lookup.__getitem__, otypes=[int])(indices)], indices, info


def _decode(container, stream, info: VideoInfo, wanted: np.ndarray, short_side: int, limits: Limits) -> list:
    deadline = time.monotonic() + limits.decode_timeout_s
    ctx = stream.codec_context
    tb = float(stream.time_base)
    t0 = stream.start_time or 0
    gop = 2 * info.fps  # keyframe interval guess (frames); refined from the stream
    out: dict[int, np.ndarray] = {}
    size = None  # (w, h) to convert to, fixed by the first frame (its rotation)
    last, last_index, last_key = None, -1, None
    k = 0
    while k < len(wanted):
        target = int(wanted[k])
        progressed = False
        if target - last_index > 3 * gop:  # far ahead: jump to the keyframe before it
            with contextlib.suppress(av.FFmpegError):  # not seekable: decode forward
                container.seek(int(t0 + target / info.fps / tb), stream=stream, backward=True, any_frame=False)
        try:
            for frame in container.decode(stream):
                if time.monotonic() > deadline:
                    raise VideoError("timeout", f"decoding took longer than {limits.decode_timeout_s:.0f} s")
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
                    size = _output_size(frame.width, frame.height, short_side)
                array = _convert(frame, size)
                while k < len(wanted) and wanted[k] <= index:  # VFR gaps: the next frame stands in
                    out[int(wanted[k])] = array
                    k += 1
                last, last_index, progressed = array, index, True
                if k == len(wanted):
                    break
                target = int(wanted[k])
                if target - index > 3 * gop:
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


def _convert(frame, size: tuple[int, int]) -> np.ndarray:
    """RGB scaled to `size` (w, h, as stored) by FFmpeg's scaler, then rotated upright
    (the display matrix rotates counter-clockwise by `frame.rotation` degrees)."""
    w, h = size
    rotation = frame.rotation or 0
    array = frame.to_ndarray(format="rgb24", width=w, height=h)  # (h, w, 3)
    if rotation:
        array = np.rot90(array, k=round(rotation / 90) % 4)
    return np.ascontiguousarray(array)


def decode_all(source: Source, short_side: int, limits: Limits = Limits()) -> int:
    """Convert every frame (and drop it): the naive baseline benchmarks compare with.
    Returns the number of frames converted."""
    count = 0
    with _open(source, limits) as container:
        stream = _stream(container, limits)
        _info(container, stream, limits)
        for frame in container.decode(stream):
            _convert(frame, _output_size(frame.width, frame.height, short_side))
            count += 1
    return count


# ------------------------------------------------------------------------ preprocessing


def crop(frames: np.ndarray, size: int, crops: int = 1) -> np.ndarray:
    """Centre crop (crops=1) or ThreeCrop along the long side (crops=3):
    `[..., H, W, 3] -> [crops, ..., size, size, 3]`."""
    H, W = frames.shape[-3:-1]
    if crops == 1:
        offsets = [((H - size) // 2, (W - size) // 2)]
    elif crops == 3:
        if W >= H:
            offsets = [((H - size) // 2, x) for x in (0, (W - size) // 2, W - size)]
        else:
            offsets = [(y, (W - size) // 2) for y in (0, (H - size) // 2, H - size)]
    else:
        raise ValueError("crops must be 1 or 3")
    return np.stack([frames[..., y : y + size, x : x + size, :] for y, x in offsets])


def normalize(frames: np.ndarray, mean, std) -> np.ndarray:
    """uint8 `[..., T, H, W, 3]` -> float32 `[..., 3, T, H, W]` normalised."""
    x = frames.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(np.moveaxis(x, -1, -4))  # (..., 3, T, H, W)
