"""Model-only latency per backend x precision: PyTorch eager (SDPA), ONNX Runtime fp32,
OpenVINO fp32, bf16 and int8 — unmerged vs ToMe vs STTM, in one run. ONNX Runtime twice:
as the server runs it (attention fused at load, `runtime.backends.fusion`) and on the plain
exported graph.

    python -m benchmarks.backends [--model videomae-b] [--reduction 0.38] [--repeats 5]
                                  [--merges none tome sttm] [--calib-clips 8]
                                  [--runtimes "openvino bf16" ...]

Each model is exported (and validated against PyTorch), and exported again as an int8
OpenVINO IR (`sttm export --format openvino --precision int8 --calib generated`: NNCF,
calibrated on `--calib-clips` generated clips, held to PyTorch by the int8 gate); each
backend x precision is opened as the server opens it (`runtime.backends.load_backend`, the
load-time precision check included: a refused combination is listed with its reason);
`--runtimes` times only those (e.g. many repeats of one precision). Input: one clip of a generated
10 s 640x272 H.264 video, decoded and sampled by `media.load_clip`. Runners are timed
interleaved so machine noise hits all alike; median of `--repeats`, batch 1.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import torch

from benchmarks.decode import make_clip
from benchmarks.timing import interleaved_medians, speed_flags
from export.run import ExportSpec, run_export
from media import load_clip
from models import load_model
from runtime.agreement import ValidationError
from runtime.backends import BackendOptions, ModelLoadError, load_backend
from runtime.backends.cpu import this_cpu

PYTORCH = "pytorch eager"
RUNTIMES = {  # name -> how the server opens it, for batches of 1 (OpenVINO: no streams model besides)
    "onnxruntime fp32 plain graph": BackendOptions("onnxruntime", "fp32", max_batch=1, fuse=False),
    "onnxruntime fp32": BackendOptions("onnxruntime", "fp32", max_batch=1),  # attention in ORT's fused kernel
    "openvino fp32": BackendOptions("openvino", "fp32", max_batch=1),
    "openvino bf16": BackendOptions("openvino", "bf16", max_batch=1),
    "openvino int8": BackendOptions("openvino", "int8", max_batch=1),
    "onnxruntime int8": BackendOptions("onnxruntime", "auto", max_batch=1),  # the int8 ONNX export (7-bit weights)
}


def _ms(seconds: float) -> str:
    """Milliseconds, to the unit where that is precise enough (a tiny model on a fast CPU: 0.42)."""
    ms = seconds * 1000
    return f"{ms:.0f}" if ms >= 10 else f"{ms:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], parents=[speed_flags()])
    parser.add_argument("--merges", nargs="+", default=["none", "tome", "sttm"], choices=["none", "tome", "sttm"])
    parser.add_argument("--calib-clips", type=int, default=8, help="int8 calibration clips (generated)")
    parser.add_argument("--runtimes", nargs="+", default=[PYTORCH, *RUNTIMES], choices=[PYTORCH, *RUNTIMES])
    args = parser.parse_args(argv)
    runners, refused, gflops, gate, runs_on = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        clip_path = make_clip(Path(scratch) / "clip.mp4", 10, size=(640, 272))
        video = load_clip(clip_path, load_model(args.model).input_spec).tensor  # (1, 3, T, S, S)
        for merge in args.merges:
            reduction = 0.0 if merge == "none" else args.reduction
            model = load_model(args.model, merge=merge, reduction=reduction).eval()
            gflops[merge] = model.gflops()
            path = Path(scratch) / f"{merge}.onnx"
            run_export(ExportSpec(args.model, path, merge=merge, reduction=reduction, quiet=True))
            files = {
                "openvino int8": path.with_suffix(".xml"),
                "onnxruntime int8": path.with_name(f"{merge}-int8.onnx"),
            }
            int8 = {  # the int8 exports, each held to PyTorch by the int8 gate; only those asked for
                "openvino int8": dict(fmt="openvino", calib="generated", calib_clips=args.calib_clips),
                "onnxruntime int8": {},
            }
            for name in (name for name in int8 if name in args.runtimes):
                try:
                    done = run_export(ExportSpec(args.model, files[name], merge=merge, reduction=reduction, quiet=True,
                                                 precision="int8", **int8[name]))  # fmt: skip
                    gate[(merge, name)] = done.reports[-1].max_abs_diff
                except ValidationError as err:
                    refused[(merge, name)] = f"int8 gate: max abs diff {err.report.max_abs_diff:.3g} > 0.1"
            if PYTORCH in args.runtimes:
                runners[(merge, PYTORCH)] = lambda m=model: m(torch.from_numpy(video)).numpy()
            for name, options in RUNTIMES.items():
                if (merge, name) in refused or name not in args.runtimes:
                    continue
                try:
                    backend = load_backend(files.get(name, path), options)
                    runners[(merge, name)] = lambda r=backend.run: r(video)
                    runs_on[(merge, name)] = backend.provider  # e.g. whether its attention runs fused
                except ModelLoadError as err:
                    refused[(merge, name)] = str(err).split(": ", 1)[-1]
        seconds = interleaved_medians(runners, args.repeats)
    base = seconds.get(("none", "onnxruntime fp32"))  # the baseline column, when it was timed
    print(f"# {args.model}, batch 1, model only, torch {torch.__version__}, {platform.machine()}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}, reduction {args.reduction}, "
          f"CPU {this_cpu().describe()}")  # fmt: skip
    print("| merge | runtime | GFLOPs (MACs) | latency ms | vs ORT fp32 none | vs same runtime none |")
    print("|---|---|---|---|---|---|")
    for (merge, name), sec in seconds.items():
        own = seconds.get(("none", name))
        vs_own = f"{own / sec:.2f}x" if own else "-"
        vs_base = f"{base / sec:.2f}x" if base else "-"
        print(f"| {merge} | {name} | {gflops[merge]:.1f} | {_ms(sec)} | {vs_base} | {vs_own} |")
    for (merge, name), provider in runs_on.items():
        print(f"# {merge}: {name} runs on {provider}")
    for (merge, name), diff in gate.items():
        print(f"# {merge}: {name} vs PyTorch max abs logit diff {diff:.3g} (gate 0.1)")
    for (merge, name), reason in refused.items():
        print(f"| {merge} | {name} | {gflops[merge]:.1f} | refused: {reason} | - | - |")


if __name__ == "__main__":
    main()
