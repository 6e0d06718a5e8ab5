"""End-to-end against the Hugging Face `video-classification` pipeline, same weights, same clip.

Two halves, because transformers' VideoMAE image processor needs torchvision, which
breaks beside this project's torch: run `prepare` and `ours` with the project's venv,
`hf` with a separate venv (torch==2.14.1 torchvision==0.29.1 transformers av), e.g.

    python -m benchmarks.hf prepare --out /tmp/hfbench            # HF dir + our exports
    /other/venv/bin/python benchmarks/hf.py hf --out /tmp/hfbench --clip CLIP
    python -m benchmarks.hf ours --out /tmp/hfbench --clip CLIP

On a noisy machine, `alternate` runs the two sides in turn (hf, ours, ... , hf: `--rounds`
of each, HF once more) and prints the medians and their ratio per export:

    python -m benchmarks.hf alternate --out /tmp/hfbench --clip CLIP --hf-python /other/venv/bin/python \
        --only sttm-int8.onnx none.onnx --rounds 3

`hf` imports nothing from this project (run it as a file, so the other venv never needs
this project installed); `prepare` needs the export extra (torch) and transformers, `ours`
only the serving path (media, runtime.backends).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# our exports: file -> (merge, stored precision, reduction); ToMe and STTM at the paper's 0.38,
# STTM int8 at 0.5 too (the ladder's most merged rung), and STTM 0.38 as an int8 OpenVINO IR
VARIANTS = {
    "none.onnx": ("none", "fp32", 0.0), "tome.onnx": ("tome", "fp32", 0.38), "sttm.onnx": ("sttm", "fp32", 0.38),
    "sttm-int8.onnx": ("sttm", "int8", 0.38), "sttm050-int8.onnx": ("sttm", "int8", 0.5),
    "sttm-int8.xml": ("sttm", "int8", 0.38),
}  # fmt: skip
# what `ours` times: (export, runtime, run-time precision)
RUNS = (
    ("none.onnx", "onnxruntime", "fp32"), ("sttm.onnx", "onnxruntime", "fp32"),
    ("sttm-int8.onnx", "onnxruntime", "auto"), ("sttm050-int8.onnx", "onnxruntime", "auto"),
    ("none.onnx", "openvino", "fp32"), ("sttm.onnx", "openvino", "fp32"), ("sttm-int8.xml", "openvino", "auto"),
    ("none.onnx", "openvino", "bf16"), ("tome.onnx", "openvino", "bf16"), ("sttm.onnx", "openvino", "bf16"),
)  # fmt: skip


def _median(fn, repeats: int) -> tuple[float, object]:
    result, times = None, []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def prepare(out: Path) -> None:
    import torch
    import transformers

    from export.run import ExportSpec, run_export
    from runtime.agreement import ValidationError

    hf_dir = out / "videomae-b"
    if not (hf_dir / "config.json").is_file():
        torch.manual_seed(0)
        config = transformers.VideoMAEConfig(num_labels=400)
        transformers.VideoMAEForVideoClassification(config).eval().save_pretrained(hf_dir)
        processor = {
            "image_processor_type": "VideoMAEImageProcessor",
            "size": {"shortest_edge": 224},
            "crop_size": {"height": 224, "width": 224},
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
        }
        (hf_dir / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    for variant, (merge, precision, reduction) in VARIANTS.items():
        target = out / f"videomae-b-{variant}"
        if not target.is_file():
            ir = target.suffix == ".xml"  # int8 IRs are calibrated: on generated clips here
            try:
                run_export(ExportSpec(str(hf_dir), target, merge=merge, reduction=reduction, precision=precision,
                                      fmt="openvino" if ir else "onnx", calib="generated" if ir else None,
                                      quiet=True))  # fmt: skip
            except ValidationError as err:  # e.g. int8 failing its gate: `ours` skips it, saying so
                print(json.dumps({"export": target.name, "refused": str(err).splitlines()[0]}), flush=True)


def hf(out: Path, clip: str, repeats: int) -> None:
    import torch
    from transformers import VideoClassificationPipeline, VideoMAEForVideoClassification, VideoMAEImageProcessor

    torch.set_num_threads(torch.get_num_threads())
    model = VideoMAEForVideoClassification.from_pretrained(out / "videomae-b", attn_implementation="sdpa").eval()
    processor = VideoMAEImageProcessor.from_pretrained(out / "videomae-b")
    pipe = VideoClassificationPipeline(model=model, image_processor=processor)
    pipe(clip)  # warm-up
    seconds, result = _median(lambda: pipe(clip, top_k=5), repeats)
    print(json.dumps({"side": "hf", "torch": torch.__version__, "seconds": seconds, "top": result[0]}))


def ours(out: Path, clip: str, repeats: int, only: list[str] | None = None) -> None:
    from media import Limits, Views, load_clip
    from runtime.backends import BackendOptions, ModelLoadError, load_backend

    for variant, kind, precision in RUNS:
        if only and variant not in only:
            continue
        try:  # what this CPU cannot run (or `prepare` could not export here) is skipped, with the reason
            backend = load_backend(out / f"videomae-b-{variant}", BackendOptions(kind, precision, max_batch=1))
        except ModelLoadError as err:
            print(json.dumps({"side": f"sttm-serve {variant}, {kind} {precision}", "skipped": str(err)}), flush=True)
            continue
        backend.warm_up()

        def run(backend=backend):
            clip_input = load_clip(clip, backend.meta.input_spec, Views(), Limits())
            return backend(clip_input.tensor)

        seconds, _ = _median(run, repeats)
        side = f"sttm-serve {variant}, {backend.provider} {backend.precision}"
        print(json.dumps({"side": side, "seconds": seconds}), flush=True)


def alternate(out: Path, clip: str, repeats: int, only: list[str] | None, hf_python: str, rounds: int) -> None:
    """`hf` and `ours` in turn, each a fresh process, HF first and last; every result line is
    printed as it comes, then per export the median seconds and HF's median over it."""
    common = ["--out", str(out), "--clip", clip, "--repeats", str(repeats)]
    hf_side = [hf_python, str(Path(__file__).resolve()), "hf", *common]
    ours_side = [sys.executable, "-m", "benchmarks.hf", "ours", *common, *(["--only", *only] if only else [])]
    seconds: dict[str, list[float]] = {}
    for side in [hf_side, ours_side] * rounds + [hf_side]:
        lines = subprocess.run(side, check=True, capture_output=True, text=True).stdout.splitlines()
        for line in lines:
            if line.startswith("{"):
                print(line, flush=True)
                row = json.loads(line)
                if "seconds" in row:
                    seconds.setdefault(row["side"], []).append(row["seconds"])
    reference = statistics.median(seconds.pop("hf"))
    for side, times in seconds.items():
        median = statistics.median(times)
        print(json.dumps({"side": side, "median_s": round(median, 3), "hf_median_s": round(reference, 3),
                          "vs_hf": round(reference / median, 2), "runs": len(times)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("side", choices=["prepare", "hf", "ours", "alternate"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clip", default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", metavar="FILE", help="ours: only these exports (e.g. sttm-int8.onnx)")
    parser.add_argument("--hf-python", help="alternate: the Python of the venv with transformers + torchvision")
    parser.add_argument("--rounds", type=int, default=3, help="alternate: runs of each side (HF once more)")
    args = parser.parse_args()
    if args.side == "prepare":
        prepare(args.out)
    elif args.side == "hf":
        hf(args.out, args.clip, args.repeats)
    elif args.side == "alternate":
        if not args.hf_python:
            parser.error("alternate needs --hf-python")
        alternate(args.out, args.clip, args.repeats, args.only, args.hf_python, args.rounds)
    else:
        ours(args.out, args.clip, args.repeats, args.only)


if __name__ == "__main__":
    main()
