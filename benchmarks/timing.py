"""Interleaved timing: every runner once per round, so machine noise hits all alike."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Hashable

import torch

from models import PRESETS


def speed_flags() -> argparse.ArgumentParser:
    """The flags every speed script takes (argparse parent): model, reduction, repeats."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("--model", default="videomae-b", choices=list(PRESETS))
    flags.add_argument("--reduction", type=float, default=0.38)
    flags.add_argument("--repeats", type=int, default=5)
    return flags


def interleaved_medians(runners: dict[Hashable, Callable[[], object]], repeats: int) -> dict[Hashable, float]:
    """Median seconds per runner over `repeats` rounds, after one warm-up call each (no autograd)."""
    times: dict[Hashable, list[float]] = {key: [] for key in runners}
    with torch.inference_mode():
        for run in runners.values():
            run()  # warm-up
        for _ in range(repeats):
            for key, run in runners.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(samples) for key, samples in times.items()}
