"""Serving benchmarks (numbers for the notes, not tests).

    python -m service.bench decode               # sampled decoding vs decoding every frame
    python -m service.bench pipeline MODEL.onnx  # per-stage latency through the serving pipeline

Clips are generated here (H.264, 640x360, 30 fps): 10 s and 5 min, GOP 250 (x264's
default), a moving pattern so the encoder has real work.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from models.video import decode_all, read_frames


def make_clip(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (640, 360)) -> Path:
    if path.is_file():
        return path
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):
            x = (i * 7) % w
            frame = np.stack([(xx + i) % 256, (yy * 2 + i) % 256, np.full_like(xx, i % 256)], -1).astype(np.uint8)
            frame[h // 3 : h // 3 + 60, x : x + 60] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def decode(args) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clips = {"10 s": make_clip(workdir / "10s.mp4", 10), "5 min": make_clip(workdir / "5min.mp4", 300)}
    print("| clip | frames sampled | sampled decode ms | decode every frame ms | ratio |")
    print("|---|---|---|---|---|")
    for name, path in clips.items():
        for label, kw in (("16 uniform", dict(clip_len=16, sampling="uniform")),
                          ("16 dense x4", dict(clip_len=16, sampling="dense", frame_interval=4))):  # fmt: skip
            ours = _median_ms(lambda kw=kw, path=path: read_frames(path, None, 224, **kw), args.repeats)
            every = _median_ms(lambda path=path: decode_all(path, 224), 1 if name == "5 min" else args.repeats)
            print(f"| {name} | {label} | {ours:.0f} | {every:.0f} | {every / ours:.1f}x |")


def pipeline(args) -> None:
    from service.predict import predict

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    clips = {"10 s": make_clip(workdir / "10s.mp4", 10), "5 min": make_clip(workdir / "5min.mp4", 300)}
    print(f"# {args.model}")
    print("| clip | decode ms | preprocess ms | inference ms |")
    print("|---|---|---|---|")
    for name, path in clips.items():
        runs = [predict(args.model, [str(path)])[0]["latency_ms"] for _ in range(args.repeats)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} | {med['decode']:.0f} | {med['preprocess']:.0f} | {med['inference']:.0f} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    for name in ("decode", "pipeline"):
        p = sub.add_parser(name)
        p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "sttm-bench"))
        p.add_argument("--repeats", type=int, default=5)
        if name == "pipeline":
            p.add_argument("model")
        p.set_defaults(run=decode if name == "decode" else pipeline)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
