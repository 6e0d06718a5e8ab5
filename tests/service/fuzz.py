"""Mutation fuzzer for the decode path the server runs on every upload.

Real clips (H.264 `.mp4` from `models.synth`, one remuxed to `.mkv`, fragmented and faststart `.mp4`,
one re-encoded to VP9 `.webm`) are mutated — flipped bits, overwritten runs, interesting
integers (box sizes, dimensions), truncations, spliced headers, duplicated or removed
chunks, random bytes — and each case goes through `probe` and `media.load_clip`
with the server's `Limits`, in a worker process the parent kills when it runs past the
decode time limit (+ margin). Per case the only acceptable outcomes are views of the right
shape or a `VideoError` (what the server answers 4xx); anything else is a crash, a worker
that died is a crash, a case past the limit is a hang.

    .venv/bin/python -m tests.service.fuzz --cases 10000 [--seed S] [--save DIR]

Case `i` of seed `S` is reproducible on its own (`--only i`).
"""

from __future__ import annotations

import argparse
import functools
import io
import multiprocessing as mp
import resource
import struct
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from media import Limits, VideoError, load_clip, probe
from runtime.metadata import ModelMetadata

Mutation = Callable[[bytes, np.random.Generator, list[bytes]], bytes]
EDGE = 4096  # bytes at either end of a file, where the headers are (mp4 moov is at the end, mkv's at the start)
INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 8000, 65535, 1 << 20)
OPTIONS = (  # request options the cases cycle through (query parameters of /v1/classify)
    {},
    {"num_clips": 3, "crops": 3},
    {"sampling": "dense", "frame_interval": 2},
    {"start": 0.5, "end": 1.5},
)


# ----------------------------------------------------------------------------- corpus


def _remux(data: bytes, fmt: str, options: dict | None = None) -> bytes:
    """The same packets in another container (through a file: faststart rewrites it)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out"
        with av.open(io.BytesIO(data)) as src, av.open(str(path), "w", format=fmt, options=options) as dst:
            stream = dst.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)
        return path.read_bytes()


def _vp9_webm(data: bytes) -> bytes:
    """Re-encoded to VP9 in WebM (WebM carries no H.264)."""
    buf = io.BytesIO()
    with av.open(io.BytesIO(data)) as src, av.open(buf, "w", format="webm") as dst:
        video = src.streams.video[0]
        stream = dst.add_stream("libvpx-vp9", rate=video.average_rate)
        stream.width, stream.height, stream.pix_fmt = video.width, video.height, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "40", "b": "0"}
        for frame in src.decode(video):
            frame.pts = None
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode())
    return buf.getvalue()


def corpus(clips: list[Path]) -> dict[str, bytes]:
    """Seed inputs: the clips as they are, the first one as .mkv, fragmented and faststart .mp4
    and VP9 .webm, and two odd but valid files (a resolution change, a long sample table)."""
    seeds = {path.name: path.read_bytes() for path in clips}
    first = seeds[clips[0].name]
    seeds["remux.mkv"] = _remux(first, "matroska")
    seeds["fragmented.mp4"] = _remux(first, "mp4", {"movflags": "frag_keyframe+empty_moov"})
    seeds["faststart.mp4"] = _remux(first, "mp4", {"movflags": "faststart"})  # moov before the media
    seeds["vp9.webm"] = _vp9_webm(first)
    seeds["resize.ts"] = flat_h264(64, 64, 8, "mpegts") + flat_h264(512, 256, 2, "mpegts", first_pts=8)
    seeds["many-samples.mp4"] = declare_samples(flat_h264(64, 64), 100_000)
    return seeds


def synth_clips(out: Path, seed: int = 0) -> list[Path]:
    """One real H.264 clip per class of the synthetic data set."""
    from models.synth import SynthConfig, generate

    generate(out, clips_per_class=1, cfg=SynthConfig(seed=seed), workers=1)
    return sorted((out / "videos").glob("*.mp4"))


# ---------------------------------------------------------------------- hostile files


@functools.cache
def flat_h264(
    width: int, height: int, frames: int = 1, fmt: str = "mp4", level: int = 128, first_pts: int = 0
) -> bytes:
    """Frames of one grey `level`, H.264 at 15 fps: an 8000x8000 frame is ~0.2 MB on disk, 96 MB decoded."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "51", "threads": "1"}
        for i in range(frames):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane in frame.planes:
                memoryview(plane)[:] = bytes([level]) * plane.buffer_size
            frame.pts = first_pts + i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def _box(data: bytes | bytearray, kind: bytes) -> int:
    """Offset of the first `kind` box (its size field)."""
    at = data.find(kind)
    if at < 4:
        raise ValueError(f"no {kind!r} box")
    return at - 4


def declare_samples(one_frame_mp4: bytes, count: int) -> bytes:
    """The sample tables of a one-frame MP4 rewritten in place to declare `count` samples of the
    same size in one chunk (stts, constant stsz, stsc): the bytes of the file do not change in number."""
    data = bytearray(one_frame_mp4)
    stts, stsz, stsc = _box(data, b"stts"), _box(data, b"stsz"), _box(data, b"stsc")
    if struct.unpack_from(">I", data, stsz + 12)[0] == 0:
        raise ValueError("stsz has no constant sample size")
    struct.pack_into(">I", data, stts + 16, count)  # header 8, version+flags 4, entries 4, then (count, delta)
    struct.pack_into(">I", data, stsz + 16, count)  # header 8, version+flags 4, sample size 4, then count
    struct.pack_into(">I", data, stsc + 20, count)  # header 8, version+flags 4, entries 4, (first chunk, count, ...)
    return bytes(data)


# -------------------------------------------------------------------------- mutations


def _position(size: int, rng: np.random.Generator) -> int:
    """A byte offset, two times in three near either end of the file."""
    if size <= 1:
        return 0
    where = rng.integers(3)
    if where == 0:
        return int(rng.integers(size))
    if where == 1:
        return int(rng.integers(min(size, EDGE)))
    return int(size - 1 - rng.integers(min(size, EDGE)))


def _span(size: int, rng: np.random.Generator, longest: int = 512) -> tuple[int, int]:
    start = _position(size, rng)
    return start, min(size, start + 1 + int(rng.integers(longest)))


def flip_bits(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    out = bytearray(data)
    for _ in range(1 + rng.geometric(0.3)):
        if out:
            out[_position(len(out), rng)] ^= 1 << int(rng.integers(8))
    return bytes(out)


def overwrite_run(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    start, end = _span(len(data), rng, 256)
    kind = rng.integers(3)
    run = rng.bytes(end - start) if kind == 2 else (b"\x00", b"\xff")[kind] * (end - start)
    return data[:start] + run + data[end:]


def interesting_int(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    """A box size, a width, a count... replaced by an edge value (big-endian, as mp4 and EBML store them)."""
    width = int(rng.choice([1, 2, 4, 8]))
    value = int(rng.choice(INTERESTING)) % (1 << (8 * width))
    start = _position(max(len(data) - width, 1), rng)
    return data[:start] + value.to_bytes(width, "big") + data[start + width :]


def truncate(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    return data[: _position(len(data), rng)]


def splice(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    """The head of one file on the tail of another."""
    other = seeds[int(rng.integers(len(seeds)))]
    return data[: _position(len(data), rng)] + other[_position(len(other), rng) :]


def duplicate_chunk(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    start, end = _span(len(data), rng, 8192)
    at = _position(len(data), rng)
    return data[:at] + data[start:end] + data[at:]


def remove_chunk(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    start, end = _span(len(data), rng, 8192)
    return data[:start] + data[end:]


def random_bytes(data: bytes, rng: np.random.Generator, seeds: list[bytes]) -> bytes:
    """Noise, half the time behind a real file's first bytes (so the container is recognised)."""
    noise = rng.bytes(int(rng.integers(0, 65536)))
    return data[: int(rng.integers(8, 64))] + noise if rng.random() < 0.5 else noise


MUTATIONS: dict[str, Mutation] = {
    f.__name__: f
    for f in (flip_bits, overwrite_run, interesting_int, truncate, splice, duplicate_chunk, remove_chunk, random_bytes)
}


def make_case(seeds: dict[str, bytes], seed: int, index: int) -> tuple[str, bytes, dict]:
    """Case `index` of `seed`: (description, bytes, request options), independent of other cases."""
    rng = np.random.default_rng([seed, index])
    names = sorted(seeds)
    base = names[int(rng.integers(len(names)))]
    data, steps = seeds[base], []
    for _ in range(min(4, int(rng.geometric(0.6)))):  # mostly one mutation, sometimes a few
        name = str(rng.choice(list(MUTATIONS)))
        data = MUTATIONS[name](data, rng, list(seeds.values()))
        steps.append(name)
    options = OPTIONS[int(rng.integers(len(OPTIONS)))]
    return f"{base}:{'+'.join(steps)}", data, options


# ----------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Outcome:
    kind: str  # "ok" | "rejected" | "crash" | "hang"
    detail: str = ""  # the VideoError code, or what went wrong
    seconds: float = 0.0


def check_case(data: bytes, options: dict, meta: ModelMetadata, limits: Limits) -> Outcome:
    """Header, then the server's preprocessing: views of the right shape or a VideoError."""
    from service.schemas import ClassifyQuery

    views = ClassifyQuery(**options).options().views
    started = time.perf_counter()
    try:
        info = probe(io.BytesIO(data), limits)
        clip = load_clip(io.BytesIO(data), meta.input_spec, views, limits)
    except VideoError as err:
        return Outcome("rejected", err.code, time.perf_counter() - started)
    except Exception as err:  # noqa: BLE001 - anything but a VideoError is what we are looking for
        where = traceback.extract_tb(err.__traceback__)[-1]
        detail = f"{type(err).__name__}: {str(err)[:200]} ({Path(where.filename).name}:{where.lineno})"
        return Outcome("crash", detail, time.perf_counter() - started)
    seconds = time.perf_counter() - started
    expected = (views.num_clips * views.crops, 3, meta.input_spec.frames, meta.input_spec.size, meta.input_spec.size)
    tensor = clip.tensor
    if tensor.shape != expected or tensor.dtype != np.float32 or not np.isfinite(tensor).all():
        return Outcome("crash", f"views {tensor.shape} {tensor.dtype}, expected {expected} float32", seconds)
    if clip.info != info:
        return Outcome("crash", f"probe says {info}, decoding says {clip.info}", seconds)
    return Outcome("ok", "", seconds)


def _worker(conn, meta: ModelMetadata, limits: Limits, memory_mb: int) -> None:
    """Runs cases sent over `conn`; a memory cap turns a decompression bomb into a finding."""
    if memory_mb:
        resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    av.logging.set_level(None)  # FFmpeg's complaints about broken input are expected here
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        outcome = check_case(*job, meta, limits)
        conn.send((outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10))


class Runner:
    """One worker process; restarted when it dies or is killed for running too long."""

    def __init__(self, meta: ModelMetadata, limits: Limits, margin_s: float, memory_mb: int) -> None:
        self.args, self.limit_s = (meta, limits, memory_mb), limits.decode_timeout_s + margin_s
        self.ctx = mp.get_context("spawn")
        self.process = None

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.process = self.ctx.Process(target=_worker, args=(child, *self.args), daemon=True)
        self.process.start()
        child.close()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the fuzz worker did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.join()
            self.process = None

    def run(self, data: bytes, options: dict) -> tuple[Outcome, int]:
        """The outcome and the worker's peak resident memory so far (MiB)."""
        if self.process is None:
            self._start()
        started = time.perf_counter()
        try:
            self.conn.send((data, options))
            if self.conn.poll(self.limit_s):
                return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError):
            pass
        seconds = time.perf_counter() - started
        alive = self.process.is_alive()
        self.stop()
        if alive:
            return Outcome("hang", f"no answer after {seconds:.1f} s", seconds), 0
        return Outcome("crash", "the worker died (a crash in native code, or out of memory)", seconds), 0


# ---------------------------------------------------------------------------- report


@dataclass
class Finding:
    index: int
    case: str
    outcome: Outcome


@dataclass
class Report:
    cases: int = 0
    ok: int = 0
    rejected: Counter = field(default_factory=Counter)
    crashes: list[Finding] = field(default_factory=list)
    hangs: list[Finding] = field(default_factory=list)
    max_seconds: float = 0.0
    slowest: str = ""
    peak_mb: int = 0
    wall_s: float = 0.0

    def add(self, index: int, case: str, outcome: Outcome, peak_mb: int) -> None:
        self.cases += 1
        if outcome.kind == "ok":
            self.ok += 1
        elif outcome.kind == "rejected":
            self.rejected[outcome.detail] += 1
        else:
            (self.hangs if outcome.kind == "hang" else self.crashes).append(Finding(index, case, outcome))
        if outcome.seconds > self.max_seconds:
            self.max_seconds, self.slowest = outcome.seconds, f"#{index} {case}"
        self.peak_mb = max(self.peak_mb, peak_mb)

    def summary(self) -> str:
        codes = ", ".join(f"{code} {n}" for code, n in self.rejected.most_common()) or "none"
        lines = [
            f"cases {self.cases}  ok {self.ok}  rejected {sum(self.rejected.values())}  "
            f"crashes {len(self.crashes)}  hangs {len(self.hangs)}",
            f"rejected by code: {codes}",
            f"max {self.max_seconds:.3f} s per case ({self.slowest}); worker peak RSS {self.peak_mb} MiB; "
            f"wall {self.wall_s:.0f} s",
        ]
        lines += [f"{f.outcome.kind} #{f.index} {f.case}: {f.outcome.detail}" for f in self.crashes + self.hangs]
        return "\n".join(lines)


def fuzz(
    seeds: dict[str, bytes],
    cases: int,
    meta: ModelMetadata,
    limits: Limits,
    seed: int = 0,
    margin_s: float = 5.0,
    memory_mb: int = 4096,
    save: Path | None = None,
    only: list[int] | None = None,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    report, runner, started = Report(), Runner(meta, limits, margin_s, memory_mb), time.perf_counter()
    try:
        for index in only if only is not None else range(cases):
            case, data, options = make_case(seeds, seed, index)
            outcome, peak_mb = runner.run(data, options)
            report.add(index, case, outcome, peak_mb)
            if save is not None and outcome.kind in ("crash", "hang"):
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{outcome.kind}-{seed}-{index}.bin").write_bytes(data)
            if progress is not None and report.cases % 500 == 0:
                report.wall_s = time.perf_counter() - started
                progress(report)
    finally:
        runner.stop()
    report.wall_s = time.perf_counter() - started
    return report


def main(argv: list[str] | None = None) -> int:
    from runtime.backends import load_backend
    from service.settings import Settings

    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m tests.service.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", type=int, nargs="+", help="run just these case indices")
    parser.add_argument("--model", type=Path, default=settings.model, help="its metadata sets the preprocessing")
    parser.add_argument("--decode-timeout", type=float, default=settings.decode_timeout_s, help="seconds")
    parser.add_argument("--margin", type=float, default=5.0, help="seconds past the decode limit that make a hang")
    parser.add_argument("--memory-mb", type=int, default=4096, help="address-space cap of the worker (0: none)")
    parser.add_argument("--save", type=Path, help="write crashing and hanging inputs here")
    args = parser.parse_args(argv)

    meta = load_backend(args.model).meta
    limits = Limits(settings.max_pixels, settings.max_duration_s, args.decode_timeout)
    with tempfile.TemporaryDirectory() as tmp:
        seeds = corpus(synth_clips(Path(tmp)))
    print(f"seeds: {len(seeds)} files ({', '.join(sorted(seeds))}); limits {limits}", flush=True)
    report = fuzz(seeds, args.cases, meta, limits, args.seed, args.margin, args.memory_mb, args.save, args.only,
                  progress=lambda r: print(r.summary().splitlines()[0], f"({r.wall_s:.0f} s)", flush=True))  # fmt: skip
    print(report.summary())
    return 1 if report.crashes or report.hangs else 0


if __name__ == "__main__":
    sys.exit(main())
