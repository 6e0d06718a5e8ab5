"""Does a runtime agree with its reference? The rule every exported model and every
backend x precision is held to, torch-free (the server checks a low precision at load with it).

Max abs logit difference within the precision's tolerance, and the same top-1 on every clip
except where the reference's top-2 margin is within 2x the tolerance (a flip that a
difference within tolerance implies: counted as a near-tie). Clips are generated: a square
moving over a gradient with noise — structured enough that merging has objects to find.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from media import InputSpec

TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2, "int8": 1e-1}
# a runtime's rewrite of a file (fused kernels at load) held to the graph it rewrites, where the file
# records no distance from PyTorch: an fp32 file at the fp32 rule; an int8 file requantises
# activations per call, so a float reordering upstream of a quantiser flips roundings and shows as
# whole steps — held to a tenth of int8's budget
REWRITE_TOLERANCE = {"fp32": TOLERANCE["fp32"], "int8": TOLERANCE["int8"] / 10}


def rewrite_tolerance(precision: str, validated_diff: float | None = None) -> float:
    """How far a runtime's rewrite of a file may move its logits from the graph it rewrites: what
    the file left of its precision's gate (`TOLERANCE` less `validated_diff`, the file's own
    distance from PyTorch at export — on the validation clips, whose first ones a load-time check
    reruns, the served logits then stay within the gate, up to how an int8 file's logits move with
    the batch size), or `REWRITE_TOLERANCE` where the file records no distance."""
    if validated_diff is None:
        return REWRITE_TOLERANCE[precision]
    return TOLERANCE[precision] - validated_diff


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


def moving_squares(spec: InputSpec, count: int, seed: int = 0) -> np.ndarray:
    """Normalised clips `[count, 3, T, S, S]` float32: a square of random colour and size
    moving in a straight line over a gradient background, plus noise."""
    rng = np.random.default_rng(seed)
    T, S = spec.frames, spec.size
    ys, xs = np.meshgrid(np.linspace(0, 1, S), np.linspace(0, 1, S), indexing="ij")  # (S, S)
    mean, std = np.asarray(spec.mean)[:, None, None, None], np.asarray(spec.std)[:, None, None, None]
    clips = []
    for _ in range(count):
        colour, back = rng.random(3), rng.random(3)
        start, velocity = rng.random(2) * 0.6, (rng.random(2) - 0.5) * 0.6
        side = 0.15 + 0.2 * rng.random()
        frames = []
        for t in range(T):
            y0, x0 = start + velocity * t / max(T - 1, 1)
            inside = (ys >= y0) & (ys < y0 + side) & (xs >= x0) & (xs < x0 + side)  # (S, S)
            frames.append(np.where(inside, colour[:, None, None], back[:, None, None] * (0.5 + 0.5 * xs)))
        clip = np.stack(frames, 1) + 0.05 * rng.standard_normal((3, T, S, S))  # (3, T, S, S)
        clips.append((clip.clip(0, 1) - mean) / std)
    return np.stack(clips).astype(np.float32)


def compare(
    run: Callable[[np.ndarray], np.ndarray],
    videos: np.ndarray,
    expected: np.ndarray,
    backend: str,
    precision: str,
    reference: str,
    batches: tuple[int, ...] = (1, 3),
    tolerance: float | None = None,
) -> ValidationReport:
    """Run `videos` through `run` at each batch size and hold the logits to `expected` (the
    reference's) within `tolerance` (default: `precision`'s); raises `ValidationError` (with
    the table) when they disagree."""
    tolerance, clips = TOLERANCE[precision] if tolerance is None else tolerance, len(videos)
    rows = []
    for batch in batches:
        got = np.concatenate([run(videos[i : i + batch]) for i in range(0, clips, batch)])
        diff = float(np.abs(got - expected).max()) if np.isfinite(got).all() else math.inf
        same = got.argmax(-1) == expected.argmax(-1)  # (clips,)
        top2 = np.sort(expected, -1)[:, -2:]  # (clips, 2)
        # a flip within tolerance can only happen where the reference nearly ties: allowed there
        tie = (top2[:, 1] - top2[:, 0]) <= 2 * tolerance
        rows.append(Row(batch, clips, diff, int(same.sum()), int((~same & tie).sum())))
    report = ValidationReport(backend, tolerance, tuple(rows), reference)
    if not report.ok:
        raise ValidationError(f"{backend} output does not match {reference}", report)
    return report
