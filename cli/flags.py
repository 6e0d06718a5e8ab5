"""Flags several commands share, each set defined once (argparse parents)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


def at_least(low: int, high: int | None = None):
    """An argparse type for a count (clips, requests, workers, a batch) or a port: an int of at
    least `low` (and at most `high`), so that 0 or -1 is refused with the flag's name rather than
    run as nothing."""

    def parse(text: str) -> int:
        value = int(text)  # not a number: argparse's "invalid int value"
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be at least {low}, not {value}" if high is None else f"must be {low}-{high}, not {value}"
            )
        return value

    parse.__name__ = "int"
    return parse


def over(low: float):
    """An argparse type for a time or a rate: a finite float over `low` (0 or -1 seconds, nan, inf
    are refused with the flag's name)."""

    def parse(text: str) -> float:
        value = float(text)  # not a number: argparse's "invalid float value"
        if not (math.isfinite(value) and value > low):
            raise argparse.ArgumentTypeError(f"must be a number over {low:g}, not {text}")
        return value

    parse.__name__ = "float"
    return parse


PORT = at_least(1, 65535)  # a TCP port to listen on


def timeline_only(args: argparse.Namespace, names: tuple[str, ...]) -> dict:
    """The flags among `names` given on the command line (a default of None: not given); given
    without `--timeline`, which alone reads them, they are refused in one line, not ignored."""
    given = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if given and not args.timeline:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
        raise ValueError(f"{flags}: for --timeline only (without it a video is one clip)")
    return given


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def _sidecars() -> argparse.ArgumentParser:
    sidecars = _parent()
    sidecars.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="class names, one a line (for checkpoints that do not carry them)",
    )
    sidecars.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="the MMAction2 config (.py) of an MMAction2 checkpoint, read as data: clip "
        "size, sampling, normalisation, heads",
    )
    return sidecars


def _checkpoint(sidecars: argparse.ArgumentParser) -> argparse.ArgumentParser:
    checkpoint = _parent()
    checkpoint.add_argument(
        "model", help="checkpoint path or built-in name (videomae-s/b/l, timesformer-b, vit-tiny, ..., or 'demo')"
    )
    return argparse.ArgumentParser(add_help=False, parents=[checkpoint, sidecars])


def _merge() -> argparse.ArgumentParser:
    merge = _parent()
    merge.add_argument(
        "--merge", choices=["none", "tome", "sttm"], default=None, help="token merging (default: the checkpoint's)"
    )
    merge.add_argument("--reduction", type=float, default=None, help="fraction of GFLOPs to save, e.g. 0.38")
    return merge


def _exported() -> argparse.ArgumentParser:
    exported = _parent()
    exported.add_argument("model", help="exported .onnx (or TensorRT .plan), or 'demo'")
    return exported


def _json() -> argparse.ArgumentParser:
    as_json = _parent()
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    return as_json


def _runtime() -> argparse.ArgumentParser:
    runtime = _parent()
    runtime.add_argument(
        "--backend",
        choices=["auto", "onnxruntime", "openvino", "tensorrt", "torch"],
        default=None,
        help="runtime of an exported model (STTM_BACKEND; auto, for an ONNX file: OpenVINO on AVX-512 "
        "and AMX CPUs, ONNX Runtime on AVX2-only ones and for int8 files; an IR: OpenVINO; engines: "
        "TensorRT; .pt2, checkpoints and model names: torch, the PyTorch backend, on a CUDA GPU where "
        "there is one; `sttm info MODEL` says which here, and why)",
    )
    runtime.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16", "fp16", "int8"],
        default=None,
        help="what the runtime computes in (STTM_PRECISION; auto: what an int8 file stores; else bf16 "
        "on CPUs with bf16 units where it passes the load-time check, fp16 for PyTorch on a GPU, fp32 otherwise)",
    )
    return runtime


def _calib() -> argparse.ArgumentParser:
    calib = _parent()
    calib.add_argument(
        "--calib",
        default=None,
        metavar="DATA|generated",
        help="int8 on OpenVINO: calibrate on clips of a data set directory (its train split), or on generated clips",
    )
    calib.add_argument("--calib-clips", type=at_least(1), default=64, help="calibration clips (default 64)")
    return calib


@dataclass(frozen=True)
class Flags:
    checkpoint: argparse.ArgumentParser  # a checkpoint or built-in name, + sidecars
    sidecars: argparse.ArgumentParser  # --labels, --config
    merge: argparse.ArgumentParser  # --merge, --reduction
    exported: argparse.ArgumentParser  # an exported model
    json: argparse.ArgumentParser  # --json
    runtime: argparse.ArgumentParser  # --backend, --precision
    calib: argparse.ArgumentParser  # --calib, --calib-clips


def shared() -> Flags:
    sidecars = _sidecars()
    return Flags(_checkpoint(sidecars), sidecars, _merge(), _exported(), _json(), _runtime(), _calib())


def sidecars_of(args: argparse.Namespace):
    """`--labels` / `--config` as the loader takes them."""
    from models.checkpoint import Sidecars

    return Sidecars(labels=args.labels, config=args.config)
