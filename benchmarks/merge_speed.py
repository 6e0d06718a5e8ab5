"""PyTorch latency vs GFLOPs for none / ToMe / STTM, measured in one run.

    python -m benchmarks.merge_speed [--model videomae-b] [--reduction 0.38] [--repeats 5]

Runs are interleaved (none, tome, sttm, none, ...) so machine noise hits all alike;
the median per method is reported with its ratio to the unmerged model.
"""

from __future__ import annotations

import argparse
import platform

import torch

from benchmarks.timing import interleaved_medians, speed_flags
from models import PRESETS, MergeConfig, build_model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[speed_flags()])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    cfg = PRESETS[args.model]
    methods = {"none": MergeConfig()}
    for method in ("tome", "sttm"):
        methods[method] = MergeConfig(method=method, reduction=args.reduction)
    models = {name: build_model(cfg, merge) for name, merge in methods.items()}
    video = torch.randn(args.batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size)
    seconds = interleaved_medians({name: lambda m=model: m(video) for name, model in models.items()}, args.repeats)
    base_ms = seconds["none"] * 1e3
    base_gf = models["none"].gflops()
    print(
        f"# {args.model} {cfg.num_frames}x{cfg.image_size}, batch {args.batch}, PyTorch {torch.__version__} "
        f"eager (SDPA), {args.threads} threads, {platform.processor() or platform.machine()}, "
        f"median of {args.repeats}"
    )
    print("| merge | GFLOPs (MACs) | latency ms | GFLOPs ratio | speedup | speedup / GFLOPs ratio |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        ms = seconds[name] * 1e3
        gf_ratio, speedup = base_gf / model.gflops(), base_ms / ms
        row = [
            name,
            f"{model.gflops():.1f}",
            f"{ms:.0f}",
            f"{gf_ratio:.2f}x",
            f"{speedup:.2f}x",
            f"{speedup / gf_ratio:.2f}",
        ]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
