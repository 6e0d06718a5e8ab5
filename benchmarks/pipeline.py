"""Per-stage latency through the serving path (`sttm predict`), on generated clips.

    python -m benchmarks.pipeline MODEL.onnx [--seconds 10 300] [--repeats 5] [--workdir DIR]

The clips are `benchmarks.decode`'s. The model is loaded and warmed up once; each clip is
classified `--repeats` times, one request at a time, and the median of each stage of
`/v1/classify`'s `latency_ms` (decode, preprocess, queue, inference, total) is reported.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from benchmarks.decode import WORKDIR, make_clips

STAGES = ("decode", "preprocess", "queue", "inference", "total")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an exported model (.onnx, or a TensorRT engine with its sidecar)")
    parser.add_argument("--seconds", type=float, nargs="+", default=[10, 300], help="clip lengths to generate")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="where the clips are generated (and kept)")
    args = parser.parse_args(argv)

    from cli.predict import predict  # after parsing: --help needs no serving stack

    clips = make_clips(args.workdir, args.seconds)
    results = predict(args.model, [str(path) for path in clips.values() for _ in range(args.repeats)])
    if errors := [r for r in results if "error" in r]:
        raise SystemExit(f"{errors[0]['path']}: {errors[0]['error']['message']}")
    print(f"# {args.model}, median of {args.repeats}, ms")
    print("| clip | " + " | ".join(STAGES) + " |")
    print("|---|" + "---|" * len(STAGES))
    for name, path in clips.items():
        runs = [r["latency_ms"] for r in results if r["path"] == str(path)]
        print(f"| {name} | " + " | ".join(f"{statistics.median(r[s] for r in runs):.0f}" for s in STAGES) + " |")


if __name__ == "__main__":
    main()
