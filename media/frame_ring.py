"""The frames of the window being filled: frames in time order in, one clip per window out.

Memory is one window whatever the length of the video: each frame is dropped as soon as no
later window can use it. A window's frames are sampled as `load_clip` samples a clip of that
span (`media.sampling.sample_indices` over the frames inside it).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import numpy as np

from media.clip import InputSpec
from media.sampling import sample_indices


class FrameRing:
    """Frames `(t, pixels)` in time order -> windows `[k * stride_s, k * stride_s + window_s)`.

    Holds only frames at or after the next window's start (at most `capacity`; past that the
    oldest are thinned out), so memory is one window whatever the length of the video.
    """

    def __init__(self, spec: InputSpec, window_s: float, stride_s: float, max_fps: float = 120.0) -> None:
        self.spec, self.window_s, self.stride_s = spec, window_s, stride_s
        self.frames: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self.capacity = int(np.ceil(window_s * max_fps)) + 2
        self.next = 0  # index of the next window to emit
        self.covered = 0.0  # end (s) of the last window emitted

    def _start(self, k: int) -> float:
        return k * self.stride_s

    def push(self, t: float, pixels: np.ndarray) -> Iterator[tuple[float, float, np.ndarray]]:
        """Add a frame at `t` seconds; yields `(start_s, end_s, clip [T, S, S, 3])` of each
        window this frame completes (a frame at or past a window's end completes it)."""
        while t >= self._start(self.next) + self.window_s:
            yield self._emit(self._start(self.next) + self.window_s)
        self.frames.append((t, pixels))
        if len(self.frames) > self.capacity:  # more frames per window than any model needs
            self.frames.popleft()

    def finish(self, end_s: float) -> Iterator[tuple[float, float, np.ndarray]]:
        """The stream ended at `end_s`: the partial window, unless one already reaches the end."""
        if self.frames and self.covered < end_s - 1e-6:
            yield self._emit(min(self._start(self.next) + self.window_s, end_s))

    def _emit(self, end: float) -> tuple[float, float, np.ndarray]:
        start = self._start(self.next)
        inside = [p for t, p in self.frames if start <= t < end]
        if not inside:  # a gap in the stream: the latest earlier frame stands in
            earlier = [p for t, p in self.frames if t < start]
            inside = earlier[-1:] or [self.frames[0][1]]
        idx = sample_indices(len(inside), self.spec.frames, self.spec.sampling, self.spec.frame_interval)[0]
        clip = np.stack([inside[i] for i in idx])  # (T, S, S, 3)
        self.next += 1
        self.covered = end
        keep_from = self._start(self.next)
        while len(self.frames) > 1 and self.frames[1][0] <= keep_from:  # the frame at/just before stays
            self.frames.popleft()
        return start, end, clip
