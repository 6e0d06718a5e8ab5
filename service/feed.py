"""A URL stream's source, opened under `STTM_STREAM_ALLOW`: what the decoder reads.

- RTSP(S): the host is resolved once and checked; FFmpeg connects to a relay on 127.0.0.1
  (`media.rtsp_relay`) that connects to the checked address, so FFmpeg never looks the name up,
  and refuses the camera's redirects (FFmpeg would follow them to any host, unchecked).
- HTTP(S): FFmpeg fetches nothing. The first URL is fetched here (`service.fetch.Fetcher`:
  checked, pinned, redirects checked); a playlist is followed by `media.hls.HlsReader`, any
  other body is copied as it arrives; either way into a `Pipe` the decoder reads, from a
  thread of its own. When that thread fails (a refused URL, a dropped server), the pipe is
  closed and `Feed.error` says why: it outranks whatever the decoder made of the cut media.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from media.container import index_after_media
from media.errors import VideoError
from media.hls import PLAYLIST_BYTES, HlsReader, is_playlist
from media.pipe import Pipe
from media.rtsp_relay import RtspRelay
from service.fetch import Fetcher
from service.sources import AllowList, Resolver, check, system_resolver

PIPE_BYTES = 8 << 20  # fetched media waiting for the decoder; the fetch waits beyond it
FILE_BYTES = 1 << 40  # a progressive file: no size limit of its own (the decoder's limits hold)
WRITE_BYTES = 1 << 20  # a segment goes into the pipe in pieces of this size


@dataclass
class Feed:
    """What the decoder reads (`source`) and whether it is live (None: let the decoder say)."""

    source: str | Pipe
    live: bool | None = None
    fetch_error: VideoError | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    relay: RtspRelay | None = None

    @property
    def error(self) -> VideoError | None:
        """Why the fetch or the relay ended, if it failed (a refused URL or redirect, a server gone)."""
        return self.fetch_error or (self.relay.error if self.relay else None)

    def close(self) -> None:
        """Stop the fetching thread (it ends within one network timeout), or the relay."""
        self.stop.set()
        if isinstance(self.source, Pipe):
            self.source.close()
        if self.relay is not None:
            self.relay.close()

    def write(self, data: bytes) -> None:
        """Into the pipe, in pieces, waiting while it is full for as long as the stream reads
        (a file's decoding waits for the model: the fetch waits for the decoding)."""
        for i in range(0, len(data), WRITE_BYTES):
            while True:
                try:
                    self.source.write(data[i : i + WRITE_BYTES])
                    break
                except TimeoutError:
                    if self.stop.is_set():
                        raise BrokenPipeError("the stream stopped reading") from None

    def pump(self, work: Callable[[], None], fetcher: Fetcher) -> None:
        """Run `work` (it writes into the pipe) in a thread; its failure becomes `error`."""

        def run() -> None:
            try:
                work()
            except VideoError as err:
                self.fetch_error = err
            except (BrokenPipeError, TimeoutError):
                pass  # the decoder stopped reading: it has its own reason
            except Exception as err:  # noqa: BLE001 - a stream ends with the reason
                self.fetch_error = VideoError("unreachable", f"{type(err).__name__}: {err}")
            finally:
                self.source.close()
                fetcher.close()

        self.thread = threading.Thread(target=run, name="feed", daemon=True)
        self.thread.start()


def open_feed(url: str, allow: AllowList, timeout_s: float, resolver: Resolver = system_resolver) -> Feed:
    """Open `url` under `allow`. Blocking (DNS, the first HTTP response): call it off the event
    loop. Raises `service.sources.RefusedError` or VideoError (`unreachable`, `bad_playlist`, ...)."""
    if url.lower().startswith("rtsp"):
        target = check(url, allow, resolver)
        relay = RtspRelay(target.address, target.port, target.host if target.scheme == "rtsps" else None, timeout_s)
        return Feed(relay.local_url(url), relay=relay)
    fetcher = Fetcher(allow, timeout_s, resolver)
    response = contextlib.ExitStack()  # the first response: open while a file is copied
    try:
        final, first = response.enter_context(fetcher.open(url))
        body = fetcher.chunks(first, FILE_BYTES, whole=False)
        head = next(body, b"")
        if not is_playlist(head):
            return _file_feed(head, body, response, fetcher, timeout_s)
        with response:
            playlist = _rest(head, body, time.monotonic() + 4 * timeout_s)
    except BaseException:
        response.close()
        fetcher.close()
        raise
    return _playlist_feed(final, playlist, fetcher, timeout_s)


def _rest(head: bytes, body: Iterator[bytes], deadline: float) -> bytes:
    """A playlist's whole body: at most `PLAYLIST_BYTES`, by `deadline`."""
    out = bytearray(head)
    for chunk in body:
        out += chunk
        if len(out) > PLAYLIST_BYTES or time.monotonic() > deadline:
            raise VideoError("bad_playlist", "a playlist over 1 MiB, or one that took too long to arrive")
    return bytes(out)


def _file_feed(
    head: bytes, body: Iterator[bytes], response: contextlib.ExitStack, fetcher: Fetcher, timeout_s: float
) -> Feed:
    if index_after_media(head):  # the decoder would wait for an index at the end: refused, not retried
        raise VideoError(
            "unsupported",
            "the MP4's index (moov) comes after its media: an MP4 read as it arrives needs it first "
            "(ffmpeg -i IN -c copy -movflags +faststart OUT)",
        )
    feed = Feed(Pipe(PIPE_BYTES, timeout_s), live=False)

    def copy() -> None:
        with response:
            if head:
                feed.write(head)
            for chunk in body:
                if feed.stop.is_set():
                    return
                feed.write(chunk)

    feed.pump(copy, fetcher)
    return feed


def _playlist_feed(url: str, body: bytes, fetcher: Fetcher, timeout_s: float) -> Feed:
    stop = threading.Event()
    try:  # the master playlist's variant is fetched here: a refusal ends the stream before it starts
        reader = HlsReader(url, body, fetcher.get, lambda data: None, stop)
    except BaseException:
        fetcher.close()
        raise
    pipe = Pipe(PIPE_BYTES, timeout_s + reader.target_s)  # a live playlist's next segment may take one target
    feed = Feed(pipe, live=reader.live, stop=stop)
    reader.write = feed.write
    feed.pump(reader.run, fetcher)
    return feed
