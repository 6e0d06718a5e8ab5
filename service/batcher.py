"""Dynamic batching: clips from one request's views and from concurrent requests are
grouped into one model call (up to `max_batch`, waiting at most `max_wait_ms`).

The queue is bounded; `submit` raises `QueueFullError` instead of piling up. An upload takes
its room with `admission(clips)` before it is decoded, so an overloaded server refuses it
without spending the decoding on it — and, where a `refuse` rule is given (a latency
deadline), one the model is predicted to answer too late. A backend error fails only the requests of that batch.

A ladder of merge ratios: a job may be pinned to a rung; a batch holds either pinned jobs of
one rung or auto jobs, whose rung `choose(demand)` picks when the batch starts from the
`Demand` on the server: every request in it (`Waiting`: how long it has been in, its clips,
whether it is decoded) in the order they will run, and the clips admitted per second over
the last `RATE_WINDOW_S`. A model of one rung has only rung 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np


class QueueFullError(RuntimeError):
    """No room for a request (503): the bounded queue is full (`reason` "queue_full"), or — with a
    deadline — the model cannot answer it within the latency target ("late")."""

    def __init__(self, message: str, reason: str = "queue_full", retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.reason, self.retry_after_s = reason, retry_after_s


@dataclass(eq=False)
class _Job:
    clips: np.ndarray  # (n, 3, T, S, S)
    future: asyncio.Future
    rung: int | None = None  # pinned rung, or None: the load policy chooses
    arrived: float = field(default_factory=time.perf_counter)  # admitted (before decoding) or submitted
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class Ticket:
    """Room held for a request's clips while it decodes (`Batcher.admission`)."""

    clips: int
    arrived: float


@dataclass(frozen=True)
class Waiting:
    """A request in the server, as the load policy sees it."""

    age_s: float  # since it arrived (was admitted, before decoding)
    clips: int
    decoded: bool  # False: still decoding, its model work not yet queued


@dataclass(frozen=True)
class Demand:
    """What the load policy sees when a batch of auto jobs starts."""

    backlog: list[Waiting]  # every request in the server, in the order they will run
    clips_per_s: float  # admitted over the last RATE_WINDOW_S


RATE_WINDOW_S = 20.0  # the arrival rate is counted over this long: ~20 requests at 1/s


class Batcher:
    def __init__(
        self,
        run: Callable[[np.ndarray, int], np.ndarray],  # (clips, rung) -> logits
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        on_batch: Callable[[int, float, int], None] = lambda size, seconds, rung: None,
        choose: Callable[[Demand], int] = lambda demand: 0,  # the rung for a batch of auto jobs
        refuse: Callable[[Demand, int, int | None], QueueFullError | None] | None = None,  # e.g. a deadline
    ) -> None:
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.max_queue, self.on_batch, self.choose, self.refuse = max_queue, on_batch, choose, refuse
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._jobs: dict[_Job, None] = {}  # queued or in a batch, in the order they will run
        self._decoding: dict[Ticket, None] = {}  # room held by requests still decoding (`admission`)
        self._arrivals: deque[tuple[float, int]] = deque()  # (time, clips) admitted in the last RATE_WINDOW_S
        self._carried: _Job | None = None  # taken from the queue, but for another rung: starts the next batch
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        while not self.queue.empty() or self._jobs:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()

    @property
    def pending_clips(self) -> int:
        """Clips queued or in a batch."""
        return sum(len(job.clips) for job in self._jobs)

    @property
    def load(self) -> int:
        """Clips in the server: queued, in a batch, or held by requests still decoding."""
        return self.pending_clips + sum(ticket.clips for ticket in self._decoding)

    def demand(self) -> Demand:
        """Every request in the server in the order it will run — queued ones (submit order),
        then those still decoding (admission order) — and the recent arrival rate."""
        now = time.perf_counter()
        queued = [Waiting(now - job.arrived, len(job.clips), True) for job in self._jobs]
        decoding = [Waiting(now - t.arrived, t.clips, False) for t in self._decoding]
        self._forget_arrivals(now)
        return Demand(queued + decoding, sum(n for _, n in self._arrivals) / RATE_WINDOW_S)

    def _record_arrival(self, now: float, clips: int) -> None:
        self._arrivals.append((now, clips))
        self._forget_arrivals(now)  # bounded even when no auto batch asks for the rate

    def _forget_arrivals(self, now: float) -> None:
        while self._arrivals and self._arrivals[0][0] < now - RATE_WINDOW_S:
            self._arrivals.popleft()

    @contextlib.contextmanager
    def admission(self, clips: int, rung: int | None = None) -> Iterator[Ticket]:
        """Hold room for `clips` (to run on `rung`, None: auto) while a request decodes;
        `QueueFullError` (before any work) when there is none, or when the `refuse` rule turns
        it away. Submitting with the ticket turns the hold into queued clips."""
        self._make_room(clips)
        if self.refuse is not None and (refused := self.refuse(self.demand(), clips, rung)) is not None:
            raise refused
        ticket = Ticket(clips, time.perf_counter())
        self._decoding[ticket] = None
        self._record_arrival(ticket.arrived, clips)
        try:
            yield ticket
        finally:
            self._decoding.pop(ticket, None)

    def _make_room(self, clips: int) -> None:
        if self.load + clips > self.max_queue:
            raise QueueFullError(f"{self.load} clips are waiting (limit {self.max_queue})")

    async def submit(
        self, clips: np.ndarray, rung: int | None = None, ticket: Ticket | None = None
    ) -> tuple[np.ndarray, float, int]:
        """Queue `[n, ...]` clips (on `rung`, or where the policy puts them; with the room
        `ticket` holds, else only if there is room); returns their logits `[n, classes]`, the
        queue wait (s) and the rung they ran on."""
        if ticket is not None and ticket in self._decoding:
            del self._decoding[ticket]
            arrived = ticket.arrived
        else:
            self._make_room(len(clips))
            arrived = time.perf_counter()
            self._record_arrival(arrived, len(clips))
        job = _Job(clips, asyncio.get_running_loop().create_future(), rung, arrived)
        self._jobs[job] = None
        await self.queue.put(job)
        return await job.future

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first, self._carried = self._carried or await self.queue.get(), None
            jobs, size = [first], len(first.clips)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    job = await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                if job.rung != first.rung:  # one rung per batch
                    self._carried = job
                    break
                jobs.append(job)
                size += len(job.clips)
            await self._run(jobs, first.rung if first.rung is not None else self.choose(self.demand()))

    async def _run(self, jobs: list[_Job], rung: int) -> None:
        live = [j for j in jobs if not j.future.done()]  # a disconnected client's job is cancelled
        started = time.perf_counter()
        try:
            if live:
                batch = np.concatenate([j.clips for j in live])  # (sum n, 3, T, S, S)
                logits = await asyncio.to_thread(self._chunked, batch, rung)
                self.on_batch(len(batch), time.perf_counter() - started, rung)
                offset = 0
                for job in live:
                    n = len(job.clips)
                    if not job.future.done():
                        job.future.set_result((logits[offset : offset + n], started - job.enqueued, rung))
                    offset += n
        except Exception as err:  # noqa: BLE001 - fail this batch's requests, keep serving
            for job in live:
                if not job.future.done():
                    job.future.set_exception(err)
        finally:
            for job in jobs:
                del self._jobs[job]

    def _chunked(self, batch: np.ndarray, rung: int) -> np.ndarray:
        """One request may bring more views than max_batch: run them in model-sized chunks."""
        parts = [self.run(batch[i : i + self.max_batch], rung) for i in range(0, len(batch), self.max_batch)]
        return np.concatenate(parts)
