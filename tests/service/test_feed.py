"""`service.feed`: what the decoder of a URL stream reads, from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import functools
import http.server
import threading
import time

import pytest

from media.pipe import Pipe
from service import feed as feed_module
from service.feed import open_feed
from service.sources import AllowList, RefusedError

ALLOW = AllowList.parse("127.0.0.1")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "file.bin").write_bytes(bytes(range(256)) * 400)  # 100 KiB
    (root / "vod.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile.bin\n#EXT-X-ENDLIST\n")
    (root / "live.m3u8").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\nfile.bin\n")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _drain(pipe: Pipe) -> bytes:
    out, deadline = bytearray(), time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            chunk = pipe.read(4096)
        except TimeoutError:  # the pipe's timeout is short here (the writer's): read on
            continue
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_a_file_reaches_a_decoder_slower_than_the_pipe_timeout_whole(www, monkeypatch):
    """A file's decoding waits for the model: the fetch waits for it (past the pipe's
    timeout) instead of cutting the file short."""
    root, base = www
    monkeypatch.setattr(feed_module, "PIPE_BYTES", 8192)
    monkeypatch.setattr(feed_module, "WRITE_BYTES", 4096)
    feed = open_feed(f"{base}/file.bin", ALLOW, 0.2)
    assert feed.live is False and isinstance(feed.source, Pipe)
    head = feed.source.read(4096)
    time.sleep(0.6)  # the model is busy: the writer waits 3 times its pipe's timeout
    slow = head + _drain(feed.source)
    feed.thread.join(5)
    assert slow == (root / "file.bin").read_bytes() and feed.error is None


@pytest.mark.parametrize(("name", "live"), [("vod.m3u8", False), ("live.m3u8", True)])
def test_a_playlist_feeds_its_segments_and_says_whether_it_is_live(www, name, live):
    root, base = www
    feed = open_feed(f"{base}/{name}", ALLOW, 2.0)
    assert feed.live is live
    first = feed.source.read(len((root / "file.bin").read_bytes()))
    assert first == (root / "file.bin").read_bytes()
    feed.close()  # a live one reloads until closed: it stops within a reload
    feed.thread.join(5)
    assert not feed.thread.is_alive() and feed.error is None


def test_rtsp_is_handed_to_ffmpeg_through_a_relay_to_the_checked_address():
    resolve = lambda host, port: ["127.0.0.1"]  # noqa: E731
    feed = open_feed("rtsps://cam.test:8554/live", ALLOW, 1.0, resolve)
    relay = feed.relay
    assert (relay.address, relay.port, relay.server_name) == ("127.0.0.1", 8554, "cam.test")
    assert feed.source == relay.local_url("rtsp://cam.test/live") and feed.source.startswith("rtsp://127.0.0.1:")
    feed.close()
    with pytest.raises(RefusedError):
        open_feed("rtsp://cam.test/live", ALLOW, 1.0, lambda host, port: ["10.0.0.1"])
