"""The classify use case: a clip in, labels out — one path that `/v1/classify`,
`/v1/timeline`, KServe's `infer` and `sttm predict` all render.

Plain data in (`ClassifyOptions`, `TimelineOptions`), plain data out (`Classification`,
`Timeline`); the HTTP schemas and the CLI only translate. Decoding runs in a thread pool,
inference through the dynamic batcher; every stage is timed.

The options and results live in `service.classify_types`, the thread-to-asyncio hand-off in
`service.handoff`, starting and stopping in `service.lifecycle` (`open_classifier`).

The model may be a ladder of merge ratios (`service.ladder_policy`): options carry `reduction`
(a rung's nominal value, or None for the load policy's choice) and every answer names the
rung it ran on (`reduction`, `gflops`).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from media import InputSpec, Limits, Source, VideoError, Views, load_clip, probe
from media.sampling import window_starts
from media.stream import Pipe, Progress, WindowClip, read_windows
from runtime.backends import Backend
from runtime.postprocess import average_views, softmax, top_k
from runtime.segments import segments
from service.batcher import Batcher, QueueFullError, Ticket
from service.classify_types import (
    Classification,
    ClassifyOptions,
    Explanation,
    Inference,
    Latency,
    Merges,
    Timeline,
    TimelineOptions,
    Window,
)
from service.handoff import Handoff
from service.ladder_policy import LoadPolicy, Rung, find_rung

__all__ = [
    "Classification",
    "ClassifyOptions",
    "Classifier",
    "Explanation",
    "Inference",
    "Latency",
    "Merges",
    "Timeline",
    "TimelineOptions",
    "Window",
]


@dataclass(frozen=True, kw_only=True)
class Classifier:
    backend: Backend  # the least-merged rung's (every rung has the same labels and input spec)
    batcher: Batcher
    pool: ThreadPoolExecutor  # decoding threads
    name: str  # the model's name (a ladder's, from ladder.json)
    rungs: tuple[Rung, ...]  # least merged first; one for a single model
    policy: LoadPolicy  # picks the rung of each batch of auto requests
    limits: Limits = Limits()
    max_views: int = 30  # num_clips x crops per request
    max_windows: int = 3600  # timeline windows per request
    window_slots: asyncio.Semaphore | None = None  # batcher slots live streams and timelines share
    stall_timeout_s: float = 10.0  # the longest wait for a source's next frame
    # explain requests run outside the batcher (one call gives logits and merges); at most this
    # many at once, beyond it 503 like a full queue
    explaining: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    def rung_index(self, reduction: float | None) -> int | None:
        """The rung pinned by a nominal `reduction` (None: auto); `bad_option` when there is none."""
        try:
            return None if reduction is None else find_rung(self.rungs, reduction)
        except ValueError as err:
            raise VideoError("bad_option", str(err)) from None

    async def infer(self, tensor: np.ndarray, rung: int | None = None, ticket: Ticket | None = None) -> Inference:
        """`[n, 3, T, S, S]` through the batcher on `rung` (None: the load policy's choice). Raises
        `QueueFullError` when the bounded queue has no room (and `ticket` holds none)."""
        started = time.perf_counter()
        logits, queue_s, ran = await self.batcher.submit(tensor, rung, ticket)
        return Inference(logits, queue_s, time.perf_counter() - started - queue_s, self.rungs[ran])

    async def classify(self, source: Source, opts: ClassifyOptions, started: float | None = None) -> Classification:
        """One clip, `opts.views` of it, softmax-averaged. `started`: when the request began."""
        started = time.perf_counter() if started is None else started
        meta = self.backend.meta
        if opts.clip_len is not None and opts.clip_len != meta.input_spec.frames:
            raise VideoError("bad_option", f"clip_len must be {meta.input_spec.frames} for this model")
        if opts.views.num_clips * opts.views.crops > self.max_views:
            raise VideoError("bad_option", f"num_clips x crops is over {self.max_views} views")
        pinned = self.rung_index(opts.reduction)
        explainer = self._explainer(pinned) if opts.explain else None
        merges = None
        views = opts.views.num_clips * opts.views.crops
        with self.batcher.admission(views, pinned) as ticket:  # refused before decoding
            clip = await self._load(source, opts.views)
            self.policy.observe_outside(clip.decode_s + clip.preprocess_s)
            if explainer is not None:
                explained = await self._explain(explainer, clip)
                logits, merges, queue_s, infer_s, rung = (
                    explained.logits,
                    explained.merges,
                    0.0,
                    explained.infer_s,
                    explainer,
                )
            else:
                ran = await self.infer(clip.tensor, pinned, ticket)
                logits, queue_s, infer_s, rung = ran.logits, ran.queue_s, ran.infer_s, ran.rung
        return Classification(
            model=self.name,
            predictions=top_k(average_views(logits), meta.labels, opts.top_k),
            frames=[int(i) for i in clip.indices[0]],
            views=len(clip.tensor),
            video=clip.info,
            latency=Latency(clip.decode_s, clip.preprocess_s, queue_s, infer_s, time.perf_counter() - started),
            reduction=rung.reduction,
            gflops=rung.gflops,
            merges=merges,
        )

    def _explainer(self, pinned: int | None) -> Rung:
        """The rung an explain request runs on: the pinned one, else the least merged whose file
        has the merge output (a ladder's unmerged rung has none); `bad_option` when there is none."""
        candidates = self.rungs if pinned is None else (self.rungs[pinned],)
        rung = next((r for r in candidates if r.backend.explain is not None), None)
        if rung is None:
            raise VideoError(
                "bad_option",
                "this model file has no merge output (explain): export it again with "
                "`sttm export` (merged models), or leave explain off",
            )
        return rung

    async def _explain(self, rung: Rung, clip) -> Explanation:
        """Logits and the first view's merges from one model call on `rung`, beside the batcher."""
        if self.explaining.locked():  # no await between this check and the acquire: nobody waits
            raise QueueFullError("explain requests are running at the limit; try again")
        async with self.explaining:
            started = time.perf_counter()
            logits, index = await asyncio.to_thread(rung.backend.explain, clip.tensor)
            infer_s = time.perf_counter() - started
        grid = tuple(rung.backend.meta.merge_grid)  # (t, h, w)
        step = rung.backend.meta.input_spec.frames // grid[0]  # frames per time slice
        frames = [int(i) for i in clip.indices[0][::step]]
        return Explanation(logits, Merges(grid, frames, index[0]), infer_s)

    async def timeline(self, source: Source, opts: TimelineOptions, started: float | None = None) -> Timeline:
        """The whole video window by window (the last, partial window too), decoded in one
        pass; each window goes to the batcher as soon as its frames are decoded."""
        started = time.perf_counter() if started is None else started
        meta = self.backend.meta
        info = await asyncio.get_running_loop().run_in_executor(self.pool, probe, source, self.limits)
        window_starts(info.duration_s, opts.window_s, opts.stride_s, self.max_windows)  # too many: 422 first
        self.rung_index(opts.reduction)  # a reduction that is no rung: 422 before decoding
        if hasattr(source, "seek"):
            source.seek(0)
        progress = Progress()
        windows = [w async for w in self.windows(source, opts, progress, live=False)]
        if len(windows) > self.max_windows:
            raise VideoError("too_many_windows", f"{len(windows)} windows; at most {self.max_windows}")
        segs = segments([(w.start_s, w.end_s, w.probs) for w in windows], meta.labels, opts.min_score, opts.min_windows)
        # sums over the windows: decoding runs while earlier windows wait and infer
        queue_s, infer_s = sum(w.queue_s for w in windows), sum(w.latency_s - w.queue_s for w in windows)
        latency = Latency(progress.decode_s, 0.0, queue_s, infer_s, time.perf_counter() - started)
        # under load, auto windows may run on several rungs: the answer names the most merged one
        rung = max((w.rung for w in windows), key=lambda r: r.reduction, default=self.rungs[0])
        return Timeline(self.name, windows, segs, info, latency, rung.reduction, rung.gflops)

    async def windows(
        self,
        source: Source | Pipe,
        opts: TimelineOptions,
        progress: Progress,
        *,
        live: bool | None = None,
        stop: threading.Event | None = None,
        capacity: int = 2,
        limits: Limits | None = None,
        max_fps: float = 120.0,
    ) -> AsyncIterator[Window]:
        """Windows of `source` classified as they arrive, in order: a decoding thread, a
        bounded `Handoff`, and at most `capacity` windows in the batcher at a time.

        `live`: drop the oldest waiting windows when inference falls behind (None: decide
        from the source — live when it has no known duration); `progress.dropped` counts them.
        `limits`: default the uploads'."""
        loop = asyncio.get_running_loop()
        spec = replace(self.backend.meta.input_spec, sampling=opts.sampling or self.backend.meta.input_spec.sampling)
        stop = stop or threading.Event()
        pinned = self.rung_index(opts.reduction)
        handoff = Handoff(loop, capacity, drop=bool(live), progress=progress)
        timeout = self.stall_timeout_s if live is not False else self.limits.decode_timeout_s
        reader = _WindowReader(source, spec, opts, limits or self.limits, timeout, stop, progress, max_fps)
        thread = threading.Thread(target=reader.feed, args=(handoff, live), name="windows", daemon=True)
        thread.start()
        inflight: collections.deque[tuple[WindowClip, asyncio.Task]] = collections.deque()
        getting: asyncio.Task | None = None
        finished = False
        try:
            while not finished or inflight:
                if getting is None and not finished and len(inflight) < capacity:
                    getting = loop.create_task(handoff.get())
                waiting = {t for t in (getting, inflight[0][1] if inflight else None) if t is not None}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if getting is not None and getting.done():
                    clip, getting = getting.result(), None  # raises what the decoding thread raised
                    if clip is None:
                        finished = True
                    else:
                        inflight.append((clip, loop.create_task(self._infer_window(clip, pinned))))
                while inflight and inflight[0][1].done():  # in order, each as soon as it is answered
                    done, task = inflight.popleft()
                    yield self._window(done, *task.result(), opts.top_k)
        finally:
            stop.set()
            handoff.close()
            for task in [t for _, t in inflight] + ([getting] if getting else []):
                task.cancel()
            await asyncio.to_thread(thread.join, 5)

    def _window(self, clip: WindowClip, logits: np.ndarray, seconds: float, queue_s: float, rung: Rung, k: int):
        probs = softmax(logits[0])
        predictions = top_k(probs, self.backend.meta.labels, k)
        lag_s = time.monotonic() - clip.ready_at
        return Window(clip.start_s, clip.end_s, predictions, probs, seconds, queue_s, lag_s, rung)

    async def _infer_window(self, clip: WindowClip, rung: int | None) -> tuple[np.ndarray, float, float, Rung]:
        """Logits `[1, classes]`, seconds in all, seconds waiting (for a slot and in the queue),
        the rung it ran on (`rung`: pinned, or None for the load policy's choice)."""
        slots = self.window_slots or asyncio.Semaphore(1 << 30)
        started = time.perf_counter()
        async with slots:
            while True:
                try:
                    ran = await self.infer(clip.tensor, rung)
                    break
                except QueueFullError:  # uploads hold the rest of the queue: wait for room, not fail
                    await asyncio.sleep(0.05)
        seconds = time.perf_counter() - started
        return ran.logits, seconds, seconds - ran.infer_s, ran.rung

    async def _load(self, source: Source, views: Views):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, load_clip, source, self.backend.meta.input_spec, views, self.limits
        )


@dataclass(frozen=True)
class _WindowReader:
    """`read_windows` over one source, run in a decoding thread into a `Handoff`."""

    source: Source | Pipe
    spec: InputSpec
    opts: TimelineOptions
    limits: Limits
    timeout_s: float
    stop: threading.Event
    progress: Progress
    max_fps: float

    def feed(self, handoff: Handoff, live: bool | None) -> None:
        """Put each window into `handoff` until the end, or until its consumer is gone; hand
        over what the reader raised. `live` None: drop windows when the source turns out live."""
        try:
            reader = read_windows(
                self.source,
                self.spec,
                self.opts.window_s,
                self.opts.stride_s,
                self.limits,
                timeout_s=self.timeout_s,
                stop=self.stop,
                progress=self.progress,
                max_fps=self.max_fps,
            )
            started = False
            for clip in reader:
                if not started and live is None:
                    handoff.drop, started = self.progress.live, True
                if not handoff.put(clip):
                    break
            handoff.finish()
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            handoff.finish(err)
