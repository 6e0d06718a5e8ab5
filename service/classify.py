"""The classify use case: a clip in, labels out — one path that `/v1/classify`,
`/v1/timeline`, KServe's `infer` and `sttm predict` all render.

Plain data in (`ClassifyOptions`, `TimelineOptions`), plain data out (`Classification`,
`Timeline`); the HTTP schemas and the CLI only translate. Decoding runs in a thread pool,
inference through the dynamic batcher; every stage is timed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np

from media import Limits, Source, VideoError, VideoInfo, Views, Windows, load_clip
from media.sampling import window_starts
from service.backends import Backend, load_backend
from service.batcher import Batcher, QueueFullError
from service.postprocess import Prediction, average_views, softmax, top_k
from service.settings import Settings


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 5
    views: Views = field(default_factory=Views)
    clip_len: int | None = None  # when given, must equal the model's frames
    explain: bool = False  # also what the merges did (the model file must have the output)


@dataclass(frozen=True)
class TimelineOptions:
    top_k: int = 3
    window_s: float = 2.0
    stride_s: float = 1.0


@dataclass(frozen=True)
class Latency:
    """Seconds per stage of one request; `total` includes everything before the answer."""

    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float


@dataclass(frozen=True)
class Merges:
    """What the model's merges did to the first view: the final token of every patch."""

    grid: tuple[int, int, int]  # (t, h, w) patch grid; a time slice spans num_frames / t frames
    frames: list[int]  # the first frame index of each time slice
    index: np.ndarray  # (t*h*w,) int, t-major: equal ids = one merged token


@dataclass(frozen=True)
class Classification:
    model: str
    predictions: list[Prediction]  # best first
    frames: list[int]  # frame indices of the first clip
    views: int
    video: VideoInfo
    latency: Latency
    merges: Merges | None = None  # when asked (`explain`)


@dataclass(frozen=True)
class Window:
    start_s: float
    end_s: float
    predictions: list[Prediction]


@dataclass(frozen=True)
class Timeline:
    model: str
    windows: list[Window]
    video: VideoInfo
    latency: Latency


@dataclass(frozen=True)
class Classifier:
    backend: Backend
    batcher: Batcher
    pool: ThreadPoolExecutor  # decoding threads
    limits: Limits = Limits()
    max_views: int = 30  # num_clips x crops per request
    max_windows: int = 120  # timeline windows per request
    # explain requests run outside the batcher (one call gives logits and merges); at most this
    # many at once, beyond it 503 like a full queue
    explaining: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    async def infer(self, tensor: np.ndarray) -> tuple[np.ndarray, float, float]:
        """`[n, 3, T, S, S]` through the batcher: logits `[n, classes]`, queue and inference
        seconds. Raises `QueueFullError` when the bounded queue has no room."""
        started = time.perf_counter()
        logits, queue_s = await self.batcher.submit(tensor)
        return logits, queue_s, time.perf_counter() - started - queue_s

    async def classify(self, source: Source, opts: ClassifyOptions, started: float | None = None) -> Classification:
        """One clip, `opts.views` of it, softmax-averaged. `started`: when the request began."""
        started = time.perf_counter() if started is None else started
        meta = self.backend.meta
        if opts.clip_len is not None and opts.clip_len != meta.num_frames:
            raise VideoError("bad_option", f"clip_len must be {meta.num_frames} for this model")
        if opts.views.num_clips * opts.views.crops > self.max_views:
            raise VideoError("bad_option", f"num_clips x crops is over {self.max_views} views")
        if opts.explain and self.backend.explain is None:
            raise VideoError("bad_option", "this model file has no merge output (explain): export it again with "
                                           "`sttm export` (merged models), or leave explain off")  # fmt: skip
        clip = await self._load(source, opts.views)
        merges = None
        if opts.explain:
            logits, merges, queue_s, infer_s = await self._explain(clip)
        else:
            logits, queue_s, infer_s = await self.infer(clip.tensor)
        return Classification(
            model=meta.name,
            predictions=top_k(average_views(logits), meta.labels, opts.top_k),
            frames=[int(i) for i in clip.indices[0]],
            views=len(clip.tensor),
            video=clip.info,
            latency=Latency(clip.decode_s, clip.preprocess_s, queue_s, infer_s, time.perf_counter() - started),
            merges=merges,
        )

    async def _explain(self, clip) -> tuple[np.ndarray, Merges, float, float]:
        """Logits and the first view's merges from one model call, beside the batcher."""
        if self.explaining.locked():  # no await between this check and the acquire: nobody waits
            raise QueueFullError("explain requests are running at the limit; try again")
        async with self.explaining:
            started = time.perf_counter()
            logits, index = await asyncio.to_thread(self.backend.explain, clip.tensor)
            infer_s = time.perf_counter() - started
        grid = tuple(self.backend.meta.merge_grid)  # (t, h, w)
        step = self.backend.meta.num_frames // grid[0]  # frames per time slice
        frames = [int(i) for i in clip.indices[0][::step]]
        return logits, Merges(grid, frames, index[0]), 0.0, infer_s

    async def timeline(self, source: Source, opts: TimelineOptions, started: float | None = None) -> Timeline:
        """One clip per window, all decoded in one pass and sent as one batch."""
        started = time.perf_counter() if started is None else started
        meta = self.backend.meta
        most = min(self.max_windows, self.batcher.max_queue)  # more never fit in the queue: 422, not 503
        clip = await self._load(source, Windows(opts.window_s, opts.stride_s, most))
        logits, queue_s, infer_s = await self.infer(clip.tensor)
        duration = clip.info.duration_s
        starts = window_starts(duration, opts.window_s, opts.stride_s, most)  # (windows,)
        windows = [
            Window(float(s), min(float(s) + opts.window_s, duration), top_k(p, meta.labels, opts.top_k))
            for s, p in zip(starts, softmax(logits))
        ]
        latency = Latency(clip.decode_s, clip.preprocess_s, queue_s, infer_s, time.perf_counter() - started)
        return Timeline(meta.name, windows, clip.info, latency)

    async def _load(self, source: Source, views: Views | Windows):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, load_clip, source, self.backend.meta.input_spec, views,
                                          self.limits)  # fmt: skip


@asynccontextmanager
async def open_classifier(
    settings: Settings, on_batch: Callable[[int, float], None] = lambda size, seconds: None
) -> AsyncIterator[Classifier]:
    """Load and warm up the model, start the batcher and the decoding threads; on exit, finish
    the queued work (up to 30 s) and stop them. Raises `ModelLoadError` when the model cannot
    be served."""
    s = settings
    backend = load_backend(s.model, s.backend_options)
    backend.warm_up((1, min(2, s.max_batch)))
    batcher = Batcher(backend, s.max_batch, s.max_wait_ms, s.max_queue, on_batch)
    batcher.start()
    pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="decode")
    try:
        yield Classifier(backend, batcher, pool, s.limits, s.max_views, s.max_windows)
    finally:
        await asyncio.wait_for(batcher.stop(), timeout=30)  # drain in-flight work
        pool.shutdown(wait=True, cancel_futures=False)
