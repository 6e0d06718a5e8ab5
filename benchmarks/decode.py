"""Sampled decoding (`media.read_frames`) vs decoding every frame, on generated clips.

    python -m benchmarks.decode [--seconds 10 300] [--gop 250] [--repeats 5] [--workdir DIR]

Clips are generated here (H.264, 640x360, 30 fps; by default 10 s and 5 min), GOP 250
(x264's default; phones and streaming sites use 1-2 s: `--gop 60`), a moving pattern so the
encoder has real work. The baseline is what a
naive user writes with PyAV: decode every frame and scale it to the short side.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from media import read_frames
from media.sampling import clip_plan

SHORT_SIDE = 224
WORKDIR = Path(tempfile.gettempdir()) / "sttm-bench"
PLANS = {  # label -> the plan read_frames gets: one test-mode clip of 16 frames
    "16 uniform": clip_plan(16, "uniform", 4),
    "16 dense x4": clip_plan(16, "dense", 4),
}


def make_clip(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (640, 360), gop: int = 250) -> Path:
    """An H.264 clip of `seconds` at `path` (kept: an existing file is reused)."""
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23", "g": str(gop)}
        for i in range(int(seconds * fps)):
            x = (i * 7) % w
            frame = np.stack([(xx + i) % 256, (yy * 2 + i) % 256, np.full_like(xx, i % 256)], -1).astype(np.uint8)
            frame[h // 3 : h // 3 + 60, x : x + 60] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def clip_label(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 and seconds % 60 == 0 else f"{seconds:g} s"


def make_clips(workdir: Path, seconds: list[float], gop: int = 250) -> dict[str, Path]:
    """label ("10 s", "5 min") -> the generated clip."""
    suffix = "" if gop == 250 else f"-gop{gop}"
    return {clip_label(s): make_clip(workdir / f"{s:g}s{suffix}.mp4", s, gop=gop) for s in seconds}


def decode_every_frame(path: Path, short_side: int) -> int:
    """The naive baseline: decode every frame and convert it to RGB scaled to `short_side`
    (then drop it). Returns the number of frames."""
    count = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"  # as media.decode: only which frames are decoded differs
        for frame in container.decode(stream):
            scale = short_side / min(frame.width, frame.height)
            w, h = max(short_side, round(frame.width * scale)), max(short_side, round(frame.height * scale))
            frame.to_ndarray(format="rgb24", width=w, height=h)
            count += 1
    return count


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 300], help="clip lengths to generate")
    parser.add_argument("--gop", type=int, default=250, help="keyframe interval of the generated clips (frames)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="where the clips are generated (and kept)")
    args = parser.parse_args(argv)

    clips = make_clips(args.workdir, args.seconds, args.gop)  # first: generating is not timed
    repeats = f"median of {args.repeats} (every frame: once from 1 min)"
    print(f"# PyAV {av.__version__}, GOP {args.gop}, short side {SHORT_SIDE}, {repeats}")
    print("| clip | frames sampled | sampled decode ms | decode every frame ms | ratio |")
    print("|---|---|---|---|---|")
    for seconds in dict.fromkeys(args.seconds):
        name = clip_label(seconds)
        path = clips[name]
        every_repeats = 1 if seconds >= 60 else args.repeats
        every = median_ms(lambda path=path: decode_every_frame(path, SHORT_SIDE), every_repeats)
        for label, plan in PLANS.items():
            ours = median_ms(lambda path=path, plan=plan: read_frames(path, plan, SHORT_SIDE), args.repeats)
            print(f"| {name} | {label} | {ours:.0f} | {every:.0f} | {every / ours:.1f}x |")


if __name__ == "__main__":
    main()
