"""Windows from a decoding thread to the event loop: a bounded hand-off."""

from __future__ import annotations

import asyncio
import collections
import threading

from media.stream import Progress, WindowClip


class Handoff:
    """Windows from a decoding thread to the event loop, at most `capacity` waiting.

    When full, `put` either waits for room (a file: never drop, decoding waits for
    inference) or drops the oldest waiting window and counts it (a live source: never
    behind). Either way the queue never grows past `capacity`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, capacity: int, drop: bool, progress: Progress | None = None
    ) -> None:
        self.loop, self.capacity, self.drop = loop, capacity, drop
        self.progress = progress if progress is not None else Progress()  # counts the drops
        self.items: collections.deque = collections.deque()
        self.closed = False  # the consumer is gone
        self.done = False  # the producer is finished
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._ready = asyncio.Event()

    @property
    def dropped(self) -> int:
        return self.progress.dropped

    def _wake(self) -> None:
        self.loop.call_soon_threadsafe(self._ready.set)

    def put(self, item: WindowClip) -> bool:
        """From the producer thread; False when the consumer is gone."""
        with self._cond:
            if self.drop and len(self.items) >= self.capacity:
                self.items.popleft()
                self.progress.dropped += 1
            self._cond.wait_for(lambda: self.closed or len(self.items) < self.capacity)
            if self.closed:
                return False
            self.items.append(item)
        self._wake()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        with self._cond:
            self.done, self.error = True, error
        self._wake()

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self.items.clear()
            self._cond.notify_all()

    async def get(self) -> WindowClip | None:
        """The next window; None at the end (raises what the producer raised)."""
        while True:
            self._ready.clear()
            with self._cond:
                if self.items:
                    item = self.items.popleft()
                    self._cond.notify_all()
                    return item
                if self.done:
                    if self.error is not None:
                        raise self.error
                    return None
            await self._ready.wait()
