"""ONNX Runtime (CPU) vs PyTorch eager, unmerged vs ToMe vs STTM, in one run.

    python -m benchmarks.export_speed [--model videomae-b] [--reduction 0.38] [--repeats 5]

Each model is exported (and validated) first; then all six runners are timed
interleaved so machine noise hits all alike. Median latency per runner, batch 1.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch

from benchmarks.timing import interleaved_medians, speed_flags
from export.onnx import export_onnx, metadata_for
from export.validate import open_onnx, validate
from models import PRESETS, MergeConfig, build_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[speed_flags()])
    args = parser.parse_args(argv)

    cfg = PRESETS[args.model]
    merges = {"none": MergeConfig()}
    merges.update({m: MergeConfig(method=m, reduction=args.reduction) for m in ("tome", "sttm")})
    video = torch.randn(1, 3, cfg.num_frames, cfg.image_size, cfg.image_size)
    runners, gflops = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, merge in merges.items():
            model = build_model(cfg, merge)
            path = Path(scratch) / f"{name}.onnx"
            start = time.perf_counter()
            export_onnx(model, path, metadata_for(model, args.model))
            exported = time.perf_counter() - start
            run = open_onnx(path)
            report = validate(model, run, "onnxruntime-cpu", batches=(1,), clips=2)
            print(f"# {name}: exported in {exported:.0f} s, ORT vs PyTorch max abs diff {report.max_abs_diff:.1e}")
            runners[f"pytorch {name}"] = lambda m=model: m(video)
            runners[f"ort {name}"] = lambda r=run: r(video.numpy())
            gflops[name] = model.gflops()
        ms = {k: v * 1e3 for k, v in interleaved_medians(runners, args.repeats).items()}
    print(f"# {args.model} {cfg.num_frames}x{cfg.image_size}, batch 1, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, {torch.get_num_threads()} threads, {platform.machine()}, "
          f"median of {args.repeats}, reduction {args.reduction}")  # fmt: skip
    print("| runner | GFLOPs (MACs) | latency ms | vs ORT none | vs PyTorch same merge |")
    print("|---|---|---|---|---|")
    for key, value in ms.items():
        backend, merge = key.split()
        row = [key, f"{gflops[merge]:.1f}", f"{value:.0f}", f"{ms['ort none'] / value:.2f}x",
               f"{ms[f'pytorch {merge}'] / value:.2f}x"]  # fmt: skip
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
