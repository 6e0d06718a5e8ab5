"""A bounded in-memory byte pipe between a client pushing media and FFmpeg reading it."""

from __future__ import annotations

import collections
import threading


class Pipe:
    """A bounded in-memory byte pipe: a client's chunks in (`write`), FFmpeg's reads out.

    `read` blocks until data arrives, the writer closes (then b"": end of stream), or
    `timeout_s` passes (then `TimeoutError`: FFmpeg sees a read error; every later read fails at
    once, so a decoder that retries its reads ends after `timeout_s`, not a multiple). `write` blocks while
    the pipe holds `capacity` bytes (up to `timeout_s`), so a client cannot outrun decoding
    by more than that.
    """

    def __init__(self, capacity: int = 8 << 20, timeout_s: float = 10.0) -> None:
        self.capacity, self.timeout_s = capacity, timeout_s
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._closed = False
        self._stalled = False
        self._cond = threading.Condition()

    def write(self, data: bytes) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._size < self.capacity, self.timeout_s):
                raise TimeoutError("the decoder did not keep up")
            if self._closed:
                raise BrokenPipeError("the pipe is closed")
            self._chunks.append(bytes(data))
            self._size += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            if self._stalled or not self._cond.wait_for(lambda: self._chunks or self._closed, self.timeout_s):
                self._stalled = True
                raise TimeoutError(f"no media for {self.timeout_s:g} s")
            if not self._chunks:
                return b""
            out = bytearray()
            while self._chunks and (n < 0 or len(out) < n):
                chunk = self._chunks.popleft()
                take = len(chunk) if n < 0 else min(len(chunk), n - len(out))
                out += chunk[:take]
                if take < len(chunk):
                    self._chunks.appendleft(chunk[take:])
            self._size -= len(out)
            self._cond.notify_all()
            return bytes(out)
