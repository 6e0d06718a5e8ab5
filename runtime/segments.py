"""Windows -> action segments: the smoothing rule, as a small pure state machine.

The rule (the same for a recorded video and a live stream, which get segments as they close):

1. Each window's label is its top-1, or *no action* when that probability is under `min_score`.
2. Hysteresis: the current segment's label holds until another label (or *no action*) has
   been the window label for `min_windows` consecutive windows; the shorter runs in between
   are absorbed into the current segment. The very first run opens a segment at once, and
   the end of the video closes the run it cuts short as a segment of its own.
3. A segment spans from its first window's start to the boundary with the next segment —
   the midpoint between the centres of the last window of one and the first of the other
   (windows may overlap) — and the last one to its last window's end.
4. Its score is the mean probability of its label over all of its windows (absorbed ones
   included). *No action* spans are gaps: they are not segments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np


class TimelineLimits:
    """The timeline's option limits, one place for the HTTP query, the stream options and the commands (pydantic's
    `Field` bounds; `outside` checks a value against them where there is no pydantic model)."""

    TOP_K = dict(ge=1, le=1000)
    MIN_SCORE = dict(ge=0, le=1)
    MIN_WINDOWS = dict(ge=1, le=100)
    WINDOW_S = dict(gt=0, le=600)  # a file's timeline; a live stream's windows: at most STREAM_WINDOW_S
    STRIDE_S = dict(ge=0.01, le=600)  # at least 10 ms: a finer stride is below any video's frame interval
    STREAM_WINDOW_S = dict(gt=0, le=60)
    STREAM_STRIDE_S = dict(ge=0.1, le=60)


def outside(value: float, bounds: dict[str, float]) -> str | None:
    """Why `value` is outside `bounds` (`TimelineLimits.WINDOW_S`, ...), in pydantic's words, or None."""
    if not math.isfinite(value):
        return "input should be a finite number"
    words = {"gt": "greater than", "ge": "greater than or equal to", "le": "less than or equal to"}
    fails = {"gt": lambda b: value <= b, "ge": lambda b: value < b, "le": lambda b: value > b}
    return next((f"input should be {words[k]} {b:g}" for k, b in bounds.items() if fails[k](b)), None)


@dataclass(frozen=True)
class Segment:
    label: str
    start_s: float
    end_s: float
    score: float


@dataclass
class _Run:
    label: int | None  # class index; None: no action
    start_s: float
    first_centre: float
    last_centre: float = 0.0
    end_s: float = 0.0
    windows: int = 0
    probs: np.ndarray | None = None  # (classes,) sum over the run's windows

    def add(self, start_s: float, end_s: float, probs: np.ndarray) -> None:
        self.last_centre, self.end_s = (start_s + end_s) / 2, end_s
        self.windows += 1
        self.probs = probs.copy() if self.probs is None else self.probs + probs

    def absorb(self, other: _Run) -> None:
        self.last_centre, self.end_s, self.windows = other.last_centre, other.end_s, self.windows + other.windows
        self.probs = self.probs + other.probs


@dataclass
class Segmenter:
    """Feed windows in time order (`push`); closed segments come out as soon as the rule
    closes them, the last one from `finish`."""

    labels: Sequence[str]
    min_score: float = 0.0
    min_windows: int = 2
    _current: _Run | None = field(default=None, init=False)
    _pending: _Run | None = field(default=None, init=False)

    def push(self, start_s: float, end_s: float, probs: np.ndarray) -> list[Segment]:
        """One window `[start_s, end_s)` with its class probabilities `[classes]`."""
        best = int(np.argmax(probs))
        label = best if probs[best] >= self.min_score else None
        centre = (start_s + end_s) / 2
        closed: list[Segment] = []
        if self._current is None:
            self._current = _Run(label, start_s, centre)
            self._current.add(start_s, end_s, probs)
            return closed
        if label == self._current.label:
            if self._pending is not None:  # an interruption shorter than min_windows
                self._current.absorb(self._pending)
                self._pending = None
            self._current.add(start_s, end_s, probs)
            return closed
        if self._pending is not None and self._pending.label != label:
            self._current.absorb(self._pending)
            self._pending = None
        if self._pending is None:
            self._pending = _Run(label, start_s, centre)
        self._pending.add(start_s, end_s, probs)
        if self._pending.windows >= self.min_windows:
            boundary = (self._current.last_centre + self._pending.first_centre) / 2
            closed += self._close(self._current, boundary)
            self._current, self._pending = self._pending, None
            self._current.start_s = boundary
        return closed

    def finish(self) -> list[Segment]:
        """No more windows: the open segment closes, and a run at the very end that the end
        cut short of `min_windows` closes as its own segment."""
        current, pending, self._current, self._pending = self._current, self._pending, None, None
        if current is None:
            return []
        if pending is None:
            return self._close(current, current.end_s)
        boundary = (current.last_centre + pending.first_centre) / 2
        pending.start_s = boundary
        return self._close(current, boundary) + self._close(pending, pending.end_s)

    def _close(self, run: _Run, end_s: float) -> list[Segment]:
        if run.label is None:
            return []
        score = float(run.probs[run.label] / run.windows)
        return [Segment(self.labels[run.label], run.start_s, max(end_s, run.start_s), score)]


def segments(
    windows: Iterable[tuple[float, float, np.ndarray]],
    labels: Sequence[str],
    min_score: float = 0.0,
    min_windows: int = 2,
) -> list[Segment]:
    """All segments of windows `(start_s, end_s, probs [classes])` in time order."""
    seg = Segmenter(labels, min_score, min_windows)
    out = [s for start, end, probs in windows for s in seg.push(start, end, probs)]
    return out + seg.finish()
