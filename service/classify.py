"""The classify use case: a clip in, labels out — one path that `/v1/classify`,
`/v1/timeline`, KServe's `infer` and `sttm predict` all render.

Plain data in (`ClassifyOptions`, `TimelineOptions`), plain data out (`Classification`,
`Timeline`); the HTTP schemas and the CLI only translate. Decoding runs in a thread pool,
inference through the dynamic batcher; every stage is timed.

The model may be a ladder of merge ratios (`service.ladder`): options carry `reduction`
(a rung's nominal value, or None for the load policy's choice) and every answer names the
rung it ran on (`reduction`, `gflops`).
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
from service.backends import Backend
from service.batcher import Batcher
from service.ladder import BatchRun, LoadPolicy, Rung, find_rung, load_rungs
from service.postprocess import Prediction, average_views, softmax, top_k
from service.settings import Settings


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 5
    views: Views = field(default_factory=Views)
    clip_len: int | None = None  # when given, must equal the model's frames
    reduction: float | None = None  # a rung's nominal reduction; None: the load policy picks


@dataclass(frozen=True)
class TimelineOptions:
    top_k: int = 3
    window_s: float = 2.0
    stride_s: float = 1.0
    reduction: float | None = None  # as in ClassifyOptions


@dataclass(frozen=True)
class Latency:
    """Seconds per stage of one request; `total` includes everything before the answer."""

    decode: float
    preprocess: float
    queue: float
    inference: float
    total: float


@dataclass(frozen=True)
class Classification:
    model: str
    predictions: list[Prediction]  # best first
    frames: list[int]  # frame indices of the first clip
    views: int
    video: VideoInfo
    latency: Latency
    reduction: float  # the rung it ran on (nominal, as in ladder.json)
    gflops: float  # that rung's multiply-adds per clip, G


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
    reduction: float
    gflops: float


@dataclass(frozen=True)
class Classifier:
    backend: Backend  # the least-merged rung's (every rung has the same labels and input spec)
    batcher: Batcher
    pool: ThreadPoolExecutor  # decoding threads
    name: str  # the model's name (a ladder's, from ladder.json)
    rungs: tuple[Rung, ...]  # least merged first; one for a single model
    policy: LoadPolicy  # picks the rung of each batch of auto requests
    limits: Limits = Limits()
    max_views: int = 30  # num_clips x crops per request
    max_windows: int = 120  # timeline windows per request

    def rung_index(self, reduction: float | None) -> int | None:
        """The rung pinned by a nominal `reduction` (None: auto); `bad_option` when there is none."""
        try:
            return None if reduction is None else find_rung(self.rungs, reduction)
        except ValueError as err:
            raise VideoError("bad_option", str(err)) from None

    async def infer(self, tensor: np.ndarray, rung: int | None = None) -> tuple[np.ndarray, float, float, Rung]:
        """`[n, 3, T, S, S]` through the batcher on `rung` (None: the load policy's choice):
        logits `[n, classes]`, queue and inference seconds, the rung it ran on. Raises
        `QueueFullError` when the bounded queue has no room."""
        started = time.perf_counter()
        logits, queue_s, ran = await self.batcher.submit(tensor, rung)
        return logits, queue_s, time.perf_counter() - started - queue_s, self.rungs[ran]

    async def classify(self, source: Source, opts: ClassifyOptions, started: float | None = None) -> Classification:
        """One clip, `opts.views` of it, softmax-averaged. `started`: when the request began."""
        started = time.perf_counter() if started is None else started
        meta = self.backend.meta
        if opts.clip_len is not None and opts.clip_len != meta.num_frames:
            raise VideoError("bad_option", f"clip_len must be {meta.num_frames} for this model")
        if opts.views.num_clips * opts.views.crops > self.max_views:
            raise VideoError("bad_option", f"num_clips x crops is over {self.max_views} views")
        pinned = self.rung_index(opts.reduction)
        clip = await self._load(source, opts.views)
        logits, queue_s, infer_s, rung = await self.infer(clip.tensor, pinned)
        return Classification(
            model=self.name,
            predictions=top_k(average_views(logits), meta.labels, opts.top_k),
            frames=[int(i) for i in clip.indices[0]],
            views=len(clip.tensor),
            video=clip.info,
            latency=Latency(clip.decode_s, clip.preprocess_s, queue_s, infer_s, time.perf_counter() - started),
            reduction=rung.reduction,
            gflops=rung.gflops,
        )

    async def timeline(self, source: Source, opts: TimelineOptions, started: float | None = None) -> Timeline:
        """One clip per window, all decoded in one pass and sent as one batch."""
        started = time.perf_counter() if started is None else started
        meta = self.backend.meta
        most = min(self.max_windows, self.batcher.max_queue)  # more never fit in the queue: 422, not 503
        pinned = self.rung_index(opts.reduction)
        clip = await self._load(source, Windows(opts.window_s, opts.stride_s, most))
        logits, queue_s, infer_s, rung = await self.infer(clip.tensor, pinned)
        duration = clip.info.duration_s
        starts = window_starts(duration, opts.window_s, opts.stride_s, most)  # (windows,)
        windows = [
            Window(float(s), min(float(s) + opts.window_s, duration), top_k(p, meta.labels, opts.top_k))
            for s, p in zip(starts, softmax(logits))
        ]
        latency = Latency(clip.decode_s, clip.preprocess_s, queue_s, infer_s, time.perf_counter() - started)
        return Timeline(self.name, windows, clip.info, latency, rung.reduction, rung.gflops)

    async def _load(self, source: Source, views: Views | Windows):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, load_clip, source, self.backend.meta.input_spec, views,
                                          self.limits)  # fmt: skip


def _cost_per_clip(backend: Backend, batch: int) -> float:
    """Warm up, then time one clip alone: the load policy's first estimate of seconds per clip
    (a clip alone is what a quiet server runs; batches cost less per clip: a safe side)."""
    backend.warm_up((1, batch))
    started = time.perf_counter()
    backend.warm_up((1,))
    return time.perf_counter() - started


@asynccontextmanager
async def open_classifier(
    settings: Settings, on_batch: Callable[[BatchRun], None] = lambda run: None
) -> AsyncIterator[Classifier]:
    """Load and warm up the model (every rung of a ladder), start the batcher and the decoding
    threads; on exit, finish the queued work (up to 30 s) and stop them. Raises
    `ModelLoadError` when the model cannot be served."""
    s = settings
    name, rungs = load_rungs(s.model, s.backend_options)
    costs = [_cost_per_clip(r.backend, min(2, s.max_batch)) for r in rungs]
    policy = LoadPolicy(costs, s.latency_target_s, in_flight=s.max_batch)

    def batch_done(size: int, seconds: float, rung: int) -> None:
        predicted = policy.predict(size, rung)
        policy.observe(rung, size, seconds)
        on_batch(BatchRun(size, seconds, rungs[rung], predicted))

    def run(clips: np.ndarray, rung: int) -> np.ndarray:
        return rungs[rung].backend(clips)

    batcher = Batcher(run, s.max_batch, s.max_wait_ms, s.max_queue, batch_done, policy.choose)
    batcher.start()
    pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="decode")
    try:
        yield Classifier(rungs[0].backend, batcher, pool, name, tuple(rungs), policy, s.limits, s.max_views,
                         s.max_windows)  # fmt: skip
    finally:
        await asyncio.wait_for(batcher.stop(), timeout=30)  # drain in-flight work
        pool.shutdown(wait=True, cancel_futures=False)
