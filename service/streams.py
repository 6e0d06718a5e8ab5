"""Live streams: a registry of running sources, each decoded in its own thread, its windows
classified through the shared batcher, its results kept as a bounded log of events.

A stream's life: `starting` -> `running` (frames arrive) <-> `retrying` (the source stalled
or dropped: reopened with backoff for `STTM_STREAM_RETRY_S`) -> `finished` (the source ended:
a file's or playlist's end, a camera's goodbye) / `failed` (refused, unusable, or `gave up`
retrying, with the last error) / `stopped`. Every connection is opened under
`STTM_STREAM_ALLOW` (`service.feed`). Every step is an event (`started`, `window`,
`segment`, `end`) in the stream's `EventLog`: SSE subscribers and the WebSocket read it at
their own pace, from the first event kept or after a `Last-Event-ID`; a slow or gone reader
never holds the stream up. A finished stream stays addressable for `STTM_STREAM_KEEP_S`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from pydantic import BaseModel

from media import Limits, VideoError
from media.stream import Pipe, Progress
from runtime.segments import Segmenter
from service.classify import Classifier, TimelineOptions
from service.errors import ApiError
from service.feed import open_feed
from service.metrics import Metrics
from service.schemas import Segment, StreamWindow
from service.settings import Settings
from service.sources import AllowList, Resolver, system_resolver

ACTIVE = ("starting", "running", "retrying")
RETRYABLE = ("timeout", "unreachable", "corrupt", "empty")  # a stall, a drop, a source not up yet


@dataclass(frozen=True)
class Event:
    id: int
    name: str  # started | window | segment | end | error
    data: dict


class EventLog:
    """The last `capacity` events of a stream; readers follow it without holding it up."""

    def __init__(self, capacity: int) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self.next_id = 1
        self.closed = False
        self._changed = asyncio.Event()

    def append(self, name: str, data: dict) -> None:
        if self.closed:
            return
        self.events.append(Event(self.next_id, name, data))
        self.next_id += 1
        self.closed = name == "end"
        self._changed.set()
        self._changed = asyncio.Event()

    async def follow(self, after: int = 0, keepalive_s: float | None = None) -> AsyncIterator[Event | None]:
        """Events with id > `after`, then those that come, until `end`. With `keepalive_s`,
        None is yielded after that long without an event (time for an SSE comment)."""
        while True:
            changed = self._changed
            for event in list(self.events):
                if event.id > after:
                    after = event.id
                    yield event
            if self.closed and (not self.events or after >= self.events[-1].id):
                return
            try:
                await asyncio.wait_for(changed.wait(), keepalive_s)
            except TimeoutError:
                yield None


@dataclass
class Stream:
    id: str
    url: str | None  # None: client push over the WebSocket
    opts: TimelineOptions
    log: EventLog
    pipe: Pipe | None = None
    state: str = "starting"
    reason: str | None = None
    created: float = field(default_factory=time.time)
    ended_at: float | None = None  # time.monotonic()
    windows: int = 0
    retries: int = 0
    lag_s: float = 0.0
    position_s: float = 0.0  # where the last window ended, in the stream's time (across reconnections)
    alive_at: float = 0.0  # time.monotonic() of the last window
    progress: Progress = field(default_factory=Progress)
    stop: threading.Event = field(default_factory=threading.Event)
    task: asyncio.Task | None = None
    _dropped_before: int = 0  # windows dropped by earlier connections

    @property
    def dropped(self) -> int:
        return self._dropped_before + self.progress.dropped

    @property
    def stats(self) -> dict:
        seconds = max(time.monotonic() - self.progress.started_at, 1e-3) if self.progress.started_at else 0
        return {
            "frames": self.progress.frames,
            "fps_in": round(self.progress.frames / seconds, 2) if seconds else 0.0,
            "windows": self.windows,
            "dropped": self.dropped,
            "lag_s": round(self.lag_s, 3),
            "retries": self.retries,
            "events": self.log.next_id - 1,
        }


FINISHED_KEPT = 64  # finished streams kept at most (the latest), each with up to STTM_STREAM_EVENTS events


class Streams:
    """The registry: at most `STTM_MAX_STREAMS` active at once; finished ones kept `keep_s`, the
    latest `FINISHED_KEPT` of them (streams that end at once, started in a loop, were kept
    without a bound for `keep_s`)."""

    def __init__(self, settings: Settings, metrics: Metrics, resolver: Resolver = system_resolver) -> None:
        self.settings, self.metrics = settings, metrics
        self.allow = AllowList.parse(settings.stream_allow)
        self.resolver = resolver  # one look-up per connection (tests stub it)
        self.streams: dict[str, Stream] = {}

    def _reap(self) -> None:
        now = time.monotonic()
        finished = sorted((s for s in self.streams.values() if s.ended_at), key=lambda s: s.ended_at)
        for i, s in enumerate(finished):
            if now - s.ended_at > self.settings.stream_keep_s or i < len(finished) - FINISHED_KEPT:
                del self.streams[s.id]

    def active(self) -> int:
        return sum(s.state in ACTIVE for s in self.streams.values())

    def get(self, sid: str) -> Stream:
        self._reap()
        if sid not in self.streams:
            raise ApiError(
                404,
                "not_found",
                f"no stream {sid!r} (unknown, or finished more than {self.settings.stream_keep_s:.0f} s ago)",
            )
        return self.streams[sid]

    def list(self) -> list[Stream]:
        self._reap()
        return list(self.streams.values())

    def start(self, classifier: Classifier, url: str | None, opts: TimelineOptions, pipe: Pipe | None = None) -> Stream:
        """Register and start a stream of `url` (already checked) or of a client's `pipe`."""
        self._reap()
        if self.active() >= self.settings.max_streams:
            raise ApiError(
                429,
                "too_many_streams",
                f"{self.settings.max_streams} streams are running (STTM_MAX_STREAMS)",
                retry_after=5,
            )
        stream = Stream(uuid.uuid4().hex[:12], url, opts, EventLog(self.settings.stream_events), pipe)
        self.streams[stream.id] = stream
        self.metrics.streams_active.inc()
        stream.task = asyncio.get_running_loop().create_task(self._run(classifier, stream))
        return stream

    async def stop(self, stream: Stream, reason: str = "stopped") -> None:
        stream.stop.set()
        if stream.pipe is not None:
            stream.pipe.close()
        if stream.task is not None and not stream.task.done():
            stream.reason = stream.reason or reason
            stream.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task

    async def delete(self, sid: str) -> None:
        stream = self.get(sid)
        await self.stop(stream, "deleted")
        self.streams.pop(sid, None)

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(s, "server shutting down") for s in list(self.streams.values())))

    def _emit(self, stream: Stream, name: str, data: dict | BaseModel) -> None:
        stream.log.append(name, data.model_dump() if isinstance(data, BaseModel) else data)

    async def _run(self, classifier: Classifier, stream: Stream) -> None:
        segmenter = Segmenter(classifier.backend.meta.labels, stream.opts.min_score, stream.opts.min_windows)
        self._emit(stream, "started", {"id": stream.id})
        try:
            stream.state, reason = await self._connections(classifier, stream, segmenter)
        except asyncio.CancelledError:
            reason, stream.state = stream.reason or "stopped", "stopped"
        except Exception as err:  # noqa: BLE001 - the stream ends with the reason; the server goes on
            reason, stream.state = f"internal: {type(err).__name__}: {err}", "failed"
        for seg in segmenter.finish():
            self._emit(stream, "segment", Segment.model_validate(seg))
        stream.reason, stream.ended_at = reason, time.monotonic()
        self._emit(stream, "end", {"reason": reason})
        self.metrics.streams_active.dec()

    async def _connections(self, classifier: Classifier, stream: Stream, segmenter: Segmenter) -> tuple[str, str]:
        """Read the source until it ends (`finished`); reconnect with backoff after a stall or a
        drop for `STTM_STREAM_RETRY_S` since the last window (then `gave up`, with the last
        error); a refused URL or unusable media fails at once. The final `(state, reason)`."""
        s = self.settings
        backoff, given_up_at = 0.5, time.monotonic() + s.stream_retry_s
        while True:
            attempt_at = time.monotonic()
            try:
                await self._read(classifier, stream, segmenter)
                return "finished", "finished"  # a file, a playlist's end, a camera's goodbye, the client's end
            except VideoError as err:
                lost = f"{err.code}: {err}"
                if stream.pipe is not None or err.code not in RETRYABLE:
                    if stream.pipe is not None and stream.progress.frames == 0:
                        self._emit(stream, "error", {"code": err.code, "message": str(err)})
                    return "failed", lost
            if stream.alive_at > attempt_at:
                backoff, given_up_at = 0.5, stream.alive_at + s.stream_retry_s
            if time.monotonic() >= given_up_at:
                return "failed", f"gave up after retrying for {s.stream_retry_s:.0f} s: {lost}"
            stream.state, stream.retries = "retrying", stream.retries + 1
            await asyncio.sleep(min(backoff, max(0.0, given_up_at - time.monotonic())))
            backoff = min(backoff * 2, 5.0)

    async def _read(self, classifier: Classifier, stream: Stream, segmenter: Segmenter) -> None:
        """One connection to the source, its windows as events, until it ends. Raises
        VideoError; the feed's own error first (it outranks what the decoder made of the media
        the feed cut short: a refused segment URL, a server gone)."""
        s = self.settings
        stream.progress = progress = Progress()
        offset, feed = stream.position_s, None  # a reconnection's clock restarts: its windows go on from here
        limits = Limits(s.stream_max_pixels, float("inf"), s.decode_timeout_s)
        try:
            if stream.pipe is None:
                feed = await asyncio.to_thread(open_feed, stream.url, self.allow, s.stream_stall_s, self.resolver)
            async for w in classifier.windows(
                stream.pipe if feed is None else feed.source,
                stream.opts,
                progress,
                live=None if feed is None else feed.live,
                stop=stream.stop,
                limits=limits,
                max_fps=s.stream_max_fps,
            ):
                self._window(stream, segmenter, offset, w)
        except VideoError:
            if feed is not None and feed.error is not None:
                raise feed.error from None
            raise
        finally:
            if feed is not None:
                feed.close()
            self._count_drops(stream)
        if feed is not None and feed.error is not None:
            raise feed.error
        if stream.url is not None and stream.url.lower().startswith("rtsp") and not progress.reached_end:
            # FFmpeg reads a server gone as the end of the media: only one that reached the end
            # its server announced (RTCP BYE after the range of a served file) has ended
            raise VideoError(
                "unreachable",
                "the source closed the connection"
                + (
                    f" at {progress.position_s:.1f} s of {progress.duration_s:.1f}"
                    if progress.duration_s
                    else " (a camera that announces no end never ends on its own)"
                ),
            )

    def _window(self, stream: Stream, segmenter: Segmenter, offset: float, w) -> None:
        stream.state, stream.windows, stream.lag_s = "running", stream.windows + 1, w.lag_s
        stream.alive_at = time.monotonic()
        start, end = offset + w.start_s, offset + w.end_s
        stream.position_s = end
        self.metrics.stream_windows.inc()
        self.metrics.stream_lag.observe(w.lag_s)
        window = StreamWindow(
            start_s=start, end_s=end, predictions=w.predictions, latency_ms=w.latency_s * 1000, lag_s=w.lag_s
        )
        self._emit(stream, "window", window)
        for seg in segmenter.push(start, end, w.probs):
            self._emit(stream, "segment", Segment.model_validate(seg))

    def _count_drops(self, stream: Stream) -> None:
        dropped, stream.progress.dropped = stream.progress.dropped, 0  # this connection's, counted once
        self.metrics.stream_dropped.inc(dropped)
        stream._dropped_before += dropped
