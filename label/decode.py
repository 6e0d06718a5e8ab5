"""The pipeline's first stage, in CPU tasks: each video decoded and sampled into the model's
input by `media.load_clip` (the function the server and `sttm predict` call), under the
server's limits. A video that cannot be used leaves as a row with its error code, never as an
exception: one bad file never ends the job.

What leaves a task is the uint8 pixels of the clip's views (`[V, T, S, S, 3]`, 4x smaller
than the float32 input), normalised in the inference actor by `media.transforms.normalize`
as `load_clip` does. With `--timeline` a video passes through untouched: the actor reads it
once (a URL fetched once), checks its window count from the header, and decodes it window by
window as it infers, so a long video never waits whole in memory.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from label.inputs import is_url
from media import InputSpec, Limits, Source, VideoError, Views, load_clip

# The first stage's output: what a decoding task hands to the inference actors
STAGED = pa.schema(
    [
        ("id", pa.string()),
        ("path", pa.string()),
        ("status", pa.string()),
        ("message", pa.string()),
        ("duration_s", pa.float64()),
        ("decode_ms", pa.float64()),
        ("pixels", pa.binary()),  # [V, T, S, S, 3] uint8 (C order); empty when not decoded here
    ]
)


@dataclass(frozen=True)
class Windows:
    """A timeline's windows (`sttm predict --timeline`'s defaults)."""

    window_s: float = 2.0
    stride_s: float = 1.0
    min_score: float = 0.0
    min_windows: int = 2
    max_windows: int = 3600


@dataclass(frozen=True)
class DecodeSpec:
    spec: InputSpec  # the model's (its metadata)
    limits: Limits = Limits()
    max_bytes: int = 200 * 2**20  # a file or URL over it: `too_large` (the server's upload limit)
    fetch_timeout_s: float = 30.0  # a URL's connection and each read
    fetch_deadline_s: float = 600.0  # a URL's whole body (a server that drips a byte a read would hold a task for good)
    timeline: Windows | None = None


def open_source(path: str, d: DecodeSpec) -> Source:
    """A local path as it is (its size checked), a URL's body as bytes (at most `d.max_bytes`,
    within `d.fetch_deadline_s`). Raises VideoError `too_large` / `timeout`, OSError when it
    cannot be read."""
    if not is_url(path):  # a missing file is left to the decoder: `not_found`, as `sttm predict` says
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        if size > d.max_bytes:
            raise VideoError("too_large", f"the file is over the limit of {d.max_bytes} bytes ({size})")
        return path
    deadline, body = time.monotonic() + d.fetch_deadline_s, bytearray()
    with urllib.request.urlopen(path, timeout=d.fetch_timeout_s) as response:  # noqa: S310 - http(s) only (is_url)
        while chunk := response.read1(1 << 20):  # what one read brings, so the deadline is looked at between reads
            body += chunk
            if len(body) > d.max_bytes:
                raise VideoError("too_large", f"the body is over the limit of {d.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise VideoError("timeout", f"the body did not arrive within {d.fetch_deadline_s:g} s")
    return bytes(body)


def failure(err: Exception) -> dict:
    """The status and message of a video that failed: its `VideoError` code, `io_error` (cannot
    be read), or `internal` (anything else, as the server's 500)."""
    if isinstance(err, VideoError):
        return {"status": err.code, "message": str(err)}
    if isinstance(err, OSError):
        return {"status": "io_error", "message": str(err)}
    return {"status": "internal", "message": f"{type(err).__name__}: {str(err)[:200]}"}


def decode_one(item_id: str, path: str, d: DecodeSpec) -> dict:
    """One video -> a `STAGED` row: `ok` with its pixels, or its error code and message."""
    row = {"id": item_id, "path": path, "status": "ok", "message": "", "pixels": b""}
    started = time.perf_counter()
    try:
        if d.timeline is not None:
            return {**row, "duration_s": None, "decode_ms": 0.0}  # the actor reads it (label.infer)
        clip = load_clip(open_source(path, d), d.spec, Views(), d.limits)
        row["pixels"] = np.ascontiguousarray(clip.pixels).tobytes()
        row["duration_s"] = clip.info.duration_s
    except Exception as err:  # noqa: BLE001 - one hostile file is one row, not the end of the job
        return {**row, **failure(err)}
    row["decode_ms"] = (time.perf_counter() - started) * 1000
    return row


def decode_batch(batch: pa.Table, d: DecodeSpec) -> pa.Table:
    """A Ray Data batch of (id, path) -> the same videos as `STAGED` rows."""
    rows = [decode_one(i, p, d) for i, p in zip(batch["id"].to_pylist(), batch["path"].to_pylist())]
    return pa.Table.from_pylist(rows, schema=STAGED)


def pixels_of(data: bytes, spec: InputSpec, views: int = 1) -> np.ndarray:
    """`STAGED.pixels` back to `[V, T, S, S, 3]` uint8."""
    return np.frombuffer(data, np.uint8).reshape(views, spec.frames, spec.size, spec.size, 3)
