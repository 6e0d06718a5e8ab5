"""Validation is part of export: the exported model must agree with PyTorch.

Runs generated clips through both at several batch sizes; fails unless top-1 matches on
every clip and the max abs difference of logits is within tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from models import VideoClassifier

TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2, "int8": 1e-1}


class ValidationError(RuntimeError):
    """The exported model disagrees with PyTorch; `report` holds the table."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(f"{message}\n{report.table()}")
        self.report = report


@dataclass(frozen=True)
class Row:
    batch: int
    clips: int
    max_abs_diff: float
    top1_match: int
    near_ties: int = 0  # top-1 differs, but the reference's top-2 margin is within 2 x tolerance

    @property
    def ok(self) -> bool:
        return self.top1_match + self.near_ties == self.clips


@dataclass(frozen=True)
class ValidationReport:
    backend: str
    tolerance: float
    rows: tuple[Row, ...]
    reference: str = "pytorch"

    @property
    def max_abs_diff(self) -> float:
        return max(r.max_abs_diff for r in self.rows)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and self.max_abs_diff <= self.tolerance

    def table(self) -> str:
        lines = [
            f"{self.backend} vs {self.reference} (tolerance {self.tolerance:g})",
            "| batch | clips | max abs diff | top-1 match |",
            "|---|---|---|---|",
        ]
        for r in self.rows:
            ties = f" (+{r.near_ties} near-tie)" if r.near_ties else ""
            lines.append(f"| {r.batch} | {r.clips} | {r.max_abs_diff:.2e} | {r.top1_match}/{r.clips}{ties} |")
        lines.append(f"result: {'PASS' if self.ok else 'FAIL'}")
        return "\n".join(lines)


def validation_clips(model: VideoClassifier, count: int, seed: int = 0) -> torch.Tensor:
    """Normalised clips `[count, 3, T, H, W]`: a square moving over a gradient background
    with noise — structured enough that merging has objects to find."""
    cfg = model.config
    T, S = cfg.num_frames, cfg.image_size
    gen = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, S), torch.linspace(0, 1, S), indexing="ij")  # (S, S)
    clips = []
    for _ in range(count):
        colour, back = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
        start, velocity = torch.rand(2, generator=gen) * 0.6, (torch.rand(2, generator=gen) - 0.5) * 0.6
        side = 0.15 + 0.2 * float(torch.rand((), generator=gen))
        frames = []
        for t in range(T):
            y0, x0 = (start + velocity * t / max(T - 1, 1)).tolist()
            inside = ((ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side)).float()  # (S, S)
            frame = back[:, None, None] * (0.5 + 0.5 * xs) * (1 - inside) + colour[:, None, None] * inside
            frames.append(frame)
        clip = torch.stack(frames, 1) + 0.05 * torch.randn(3, T, S, S, generator=gen)  # (3, T, S, S)
        mean, std = torch.tensor(cfg.preprocessing.mean), torch.tensor(cfg.preprocessing.std)
        clips.append((clip.clamp(0, 1) - mean[:, None, None, None]) / std[:, None, None, None])
    return torch.stack(clips)


def validate(
    model: VideoClassifier,
    run: Callable[[np.ndarray], np.ndarray],
    backend: str,
    precision: str = "fp32",
    batches: tuple[int, ...] = (1, 3),
    clips: int = 6,
    reference: Callable[[np.ndarray], np.ndarray] | None = None,
) -> ValidationReport:
    """Compare `run` (numpy in, numpy logits out) with the PyTorch model (or with
    `reference`, e.g. ONNX Runtime for an engine) on generated clips; raise on failure."""
    tolerance = TOLERANCE[precision]
    videos = validation_clips(model, clips)
    if reference is None:
        with torch.no_grad():
            expected = model(videos).numpy()
    else:
        expected = reference(videos.numpy())
    rows = []
    for batch in batches:
        got = np.concatenate([run(videos[i : i + batch].numpy()) for i in range(0, clips, batch)])
        diff = float(np.abs(got - expected).max()) if np.isfinite(got).all() else math.inf
        same = got.argmax(-1) == expected.argmax(-1)  # (clips,)
        top2 = np.sort(expected, -1)[:, -2:]  # (clips, 2)
        # a flip within tolerance can only happen where the reference nearly ties: allowed there
        tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
        rows.append(Row(batch, clips, diff, int(same.sum()), int((~same & tie).sum())))
    report = ValidationReport(backend, tolerance, tuple(rows), "pytorch" if reference is None else "onnxruntime")
    if not report.ok:
        raise ValidationError(f"{backend} output does not match {report.reference}", report)
    return report


def onnxruntime_runner(path: str, threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """A CPU ONNX Runtime session as a function (warnings and above are logged)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda video: session.run(None, {name: video})[0]
