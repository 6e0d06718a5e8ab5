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


def profile_model(model: torch.nn.Module, video: torch.Tensor, runs: int, top: int) -> dict:
    """`torch.profiler` over `runs` forwards of `model` on `video` (after one warm-up), by self time
    on the device the model is on (CUDA kernels' time on a GPU, CPU time otherwise): the ms per
    forward, the share of the `merge` and `attention` ranges, and the `top` ops by self time."""
    cuda = video.is_cuda
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    hooks = _label(model)
    with torch.inference_mode():
        model(video)  # warm-up
        sync()
        started = time.perf_counter()
        with profile(activities=activities) as prof:
            for _ in range(runs):
                model(video)
            sync()
        wall = (time.perf_counter() - started) / runs
    for hook in hooks:
        hook.remove()
    events = prof.key_averages()

    def self_time(e) -> float:
        return e.self_device_time_total if cuda else e.self_cpu_time_total

    def whole(e) -> float:  # a range: everything inside it
        return e.device_time_total if cuda else e.cpu_time_total

    total = sum(self_time(e) for e in events) or 1.0
    ranges = {e.key: round(whole(e) / total, 4) for e in events if e.key in ("merge", "attention")}
    ops = sorted((e for e in events if e.key not in ranges), key=lambda e: -self_time(e))[:top]
    return {
        "ms_per_forward": round(wall * 1000, 2),
        "time": "self CUDA time" if cuda else "self CPU time",
        "ranges": ranges,
        "top": [[e.key, round(self_time(e) / total, 4)] for e in ops],
    }


def table(title: str, result: dict) -> str:
    """A profile (`profile_model`) as a markdown table of shares."""
    lines = [f"{title}: {result['ms_per_forward']:.1f} ms per forward (profiled)",
             f"| range / op | share of {result['time']} |", "|---|---|"]  # fmt: skip
    lines += [f"| `{k}` (range) | {v:.1%} |" for k, v in sorted(result["ranges"].items())]
    lines += [f"| `{k}` | {v:.1%} |" for k, v in result["top"]]
    return "\n".join(lines)


def profile_forward(preset: str, method: str, fold: bool, runs: int, top: int) -> str:
    """VideoMAE (`preset`), random weights, batch 1, fp32 on the CPU: the profile's table."""
    cfg = PRESETS[preset]
    model = fold_biases(build_model(cfg, MergeConfig(method, 0.38 if method != "none" else 0.0)).eval(), fold)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(1, 3, cfg.num_frames, cfg.image_size, cfg.image_size, generator=gen)  # (1, 3, T, S, S)
    stamp = f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {torch.get_num_threads()} threads"
    title = f"{preset} {method}{' (bias folded)' if fold else ''}, {stamp}"
    return table(title, profile_model(model, video, runs, top))


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
