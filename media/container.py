"""What is refused before FFmpeg reads a byte of a container.

- A whitelist of demuxers (`CONTAINERS`): MP4/MOV, MKV/WebM, AVI, MPEG-TS — containers whose
  streams are known from the header, so the pixel limit reaches FFmpeg's probe. Playlists
  and concat lists (they open other files and URLs), images, text, raw streams and FLV
  (its streams appear only while probing) are never opened.
- MP4/MOV sample tables: FFmpeg's demuxer builds one index entry (24 bytes) per declared
  sample while it opens the file, and run-length tables (a constant `stsz` sample size,
  fragment runs with default sizes) declare billions of samples in a few bytes: a 2 KB file
  can take gigabytes and seconds before any header check. So the tables are read first and
  held to the duration limit (`check_sample_tables`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from media.errors import VideoError

CONTAINERS = "mov,matroska,avi,mpegts"  # FFmpeg demuxer names accepted
MAX_FPS = 1000  # a higher frame rate is refused as corrupt; bounds samples per second of video

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


def index_after_media(head: bytes) -> bool:
    """Whether the first bytes of an MP4/MOV put its media (`mdat`) before its index (`moov`, or a
    fragment's `moof`): such a file cannot be decoded as it arrives, only once whole. False for
    anything else, or when `head` ends before either box."""
    if head[4:8] != b"ftyp":
        return False
    pos = 0
    while pos + 8 <= len(head):
        box = _box_header(head[pos : pos + 16], 1 << 62)
        if box is None:
            return False
        kind, size, _ = box
        if kind in (b"moov", b"moof", b"mdat"):
            return kind == b"mdat"
        pos += size
    return False


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


def check_sample_tables(source: str | Path | BinaryIO, max_duration_s: float) -> None:
    """Refuses tables that declare more samples than a video within `max_duration_s` has."""
    most = round(max_duration_s * MAX_FPS)
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
        raise VideoError(
            "too_long",
            f"the sample tables declare {samples} samples, more than {max_duration_s:.0f} s at {MAX_FPS} fps",
        )
