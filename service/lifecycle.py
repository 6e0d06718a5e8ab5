"""The classifier's lifecycle: load and warm up every rung, start the batcher and the decoding
threads, and stop them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

import numpy as np

from runtime.backends import Backend
from service.batcher import Batcher
from service.classify import Classifier
from service.ladder_policy import BatchRun, LoadPolicy, load_rungs
from service.settings import Settings


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
    policy = LoadPolicy(costs, s.latency_target_s, in_flight=s.max_batch, deadline=s.latency_deadline)

    def batch_done(size: int, seconds: float, rung: int) -> None:
        predicted = policy.predict(size, rung)
        policy.observe(rung, size, seconds)
        on_batch(BatchRun(size, seconds, rungs[rung], predicted))

    def run(clips: np.ndarray, rung: int) -> np.ndarray:
        return rungs[rung].backend(clips)

    refuse = policy.refuse if policy.deadline else None  # no demand is formed per upload without a deadline
    batcher = Batcher(run, s.max_batch, s.max_wait_ms, s.max_queue, batch_done, policy.choose, refuse)
    batcher.start()
    pool = ThreadPoolExecutor(s.decode_workers, thread_name_prefix="decode")
    try:
        slots = asyncio.Semaphore(max(1, min(s.stream_slots, s.max_queue // 2)))  # uploads keep the rest
        yield Classifier(
            backend=rungs[0].backend,
            batcher=batcher,
            pool=pool,
            name=name,
            rungs=tuple(rungs),
            policy=policy,
            limits=s.limits,
            max_views=s.views_per_request,
            max_windows=s.max_windows,
            window_slots=slots,
            stall_timeout_s=s.stream_stall_s,
        )
    finally:
        await asyncio.wait_for(batcher.stop(), timeout=30)  # drain in-flight work
        pool.shutdown(wait=True, cancel_futures=False)
