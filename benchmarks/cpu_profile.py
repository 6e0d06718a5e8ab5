"""Where the time of a forward goes, by `torch.profiler` on the CPU (docs/gpu.md): VideoMAE-B
16x224, random weights, batch 1, fp32: unmerged (before), STTM 0.38 (after), and STTM with the
proportional-attention bias folded into q/k (`models.layers.fold_biases`) instead of SDPA's mask.
CPU figures: what a GPU spends its time on differs (launches, memory traffic); benchmarks/gpu.py
records a CUDA profile where a GPU is lent.

    python -m benchmarks.cpu_profile [--model videomae-b] [--variants none,sttm,sttm-fold] [--runs 2] [--top 12]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from models import PRESETS, MergeConfig, build_model
from models.layers import Attention, fold_biases
from models.vit import GroupedMerge


def _label(model: torch.nn.Module) -> list:
    """Wrap each merger and each attention in a profiler range (`merge`, `attention`)."""
    hooks = []
    for module in model.modules():
        name = "merge" if isinstance(module, GroupedMerge) else "attention" if isinstance(module, Attention) else None
        if name is None:
            continue

        def enter(mod, args, name=name):
            mod._range = record_function(name)
            mod._range.__enter__()

        def leave(mod, args, out):
            mod._range.__exit__(None, None, None)

        hooks += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    return hooks


def profile_forward(preset: str, method: str, fold: bool, runs: int, top: int) -> str:
    cfg = PRESETS[preset]
    model = fold_biases(build_model(cfg, MergeConfig(method, 0.38 if method != "none" else 0.0)).eval(), fold)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=gen)  # (1, 3, T, S, S)
    hooks = _label(model)
    with torch.inference_mode():
        model(video)  # warm-up
        started = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                model(video)
        wall = (time.perf_counter() - started) / runs
    for hook in hooks:
        hook.remove()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranges = {e.key: e.cpu_time_total for e in events if e.key in ("merge", "attention")}
    lines = [f"{preset} {method}{' (bias folded)' if fold else ''}: {wall * 1000:.0f} ms per forward (profiled), "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {torch.get_num_threads()} threads",
             "| range / op | share of self CPU time |", "|---|---|"]  # fmt: skip
    lines += [f"| `{k}` (range) | {v / total:.1%} |" for k, v in sorted(ranges.items())]
    ops = sorted((e for e in events if e.key not in ranges), key=lambda e: -e.self_cpu_time_total)[:top]
    lines += [f"| `{e.key}` | {e.self_cpu_time_total / total:.1%} |" for e in ops]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="videomae-b")
    parser.add_argument("--variants", default="none,sttm,sttm-fold", help="merge methods; -fold: the bias folded")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    for variant in args.variants.split(","):
        method, fold = variant.removesuffix("-fold"), variant.endswith("-fold")
        print(profile_forward(args.model, method, fold, args.runs, args.top), "\n", flush=True)


if __name__ == "__main__":
    main()
