"""PyTorch throughput vs GFLOPs for none / ToMe / STTM, measured in one run — on the CPU or a GPU.

    python -m benchmarks.merge_speed [--model videomae-b] [--reduction 0.38] [--repeats 5]
                                     [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                     [--batches 1 32] [--compile [--compile-mode MODE]]

e.g. the GPU table: `python -m benchmarks.merge_speed --device cuda --dtype fp16 --batches 1 32
--compile` (eager at every batch; `--compile` adds `torch.compile` for none and STTM at the
largest batch; `--compile-mode reduce-overhead` replays it as CUDA graphs, which takes the
per-kernel launch cost off small batches). Runs are interleaved (none, tome, sttm, none, ...)
so machine noise hits all alike; on a GPU every call is synchronised. The median per runner
is reported with its ratio to the unmerged model at the same batch and mode.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from benchmarks.timing import interleaved_medians, speed_flags
from models import PRESETS, MergeConfig, build_model

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
COMPILED = ("none", "sttm")  # what --compile adds, at the largest batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[speed_flags()])
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    parser.add_argument("--compile", action="store_true", help="add torch.compile for none and STTM, largest batch")
    parser.add_argument("--compile-mode", default="default", choices=["default", "reduce-overhead", "max-autotune"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: PyTorch sees no CUDA device here")

    cfg = PRESETS[args.model]
    methods = {"none": MergeConfig()}
    for method in ("tome", "sttm"):
        methods[method] = MergeConfig(method=method, reduction=args.reduction)
    models = {name: build_model(cfg, merge).eval().to(device, dtype) for name, merge in methods.items()}
    flops = {name: model.gflops() for name, model in models.items()}
    runners = {}
    for batch in args.batches:
        video = torch.randn(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
        for name, model in models.items():
            runners[(name, "eager", batch)] = _synchronised(model, video)
    if args.compile:
        batch, mode = max(args.batches), "compile" + ("" if args.compile_mode == "default" else f" {args.compile_mode}")
        video = torch.randn(batch, 3, cfg.num_frames, cfg.image_size, cfg.image_size, device=device, dtype=dtype)
        for name in COMPILED:
            started = time.perf_counter()
            compiled = torch.compile(models[name], mode=args.compile_mode)
            with torch.inference_mode():
                compiled(video)  # compile outside the timed rounds
            print(f"# {name}: {mode} at batch {batch} took {time.perf_counter() - started:.0f} s")
            runners[(name, mode, batch)] = _synchronised(compiled, video)
    seconds = interleaved_medians(runners, args.repeats)

    where = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(
        f"# {args.model} {cfg.num_frames}x{cfg.image_size}, PyTorch {torch.__version__}, {args.dtype}, SDPA, "
        f"{where}" + ("" if device.type == "cuda" else f", {args.threads} threads") + f", median of {args.repeats}"
    )
    print("| merge | mode | batch | GFLOPs (MACs) per clip | ms per batch | clips/s | GFLOPs ratio | speedup |")
    print("|---|---|---|---|---|---|---|---|")
    for (name, mode, batch), s in seconds.items():
        base = seconds[("none", mode, batch)]
        row = [name, mode, str(batch), f"{flops[name]:.4g}", f"{s * 1e3:.1f}", f"{batch / s:.1f}",
               f"{flops['none'] / flops[name]:.2f}x", f"{base / s:.2f}x"]  # fmt: skip
        print("| " + " | ".join(row) + " |")


def _synchronised(model: torch.nn.Module, video: torch.Tensor):
    """One call, finished: on a GPU the kernels are waited for."""
    sync = torch.cuda.synchronize if video.is_cuda else (lambda: None)

    def run() -> None:
        model(video)
        sync()

    return run


if __name__ == "__main__":
    main()
