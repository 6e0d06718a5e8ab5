"""FFmpeg's RTSP connection through the relay: whole messages pass, a redirect is refused and
its target hears nothing (FFmpeg alone follows it: the first test shows it does)."""

from __future__ import annotations

import time

import pytest

from media.decode import Limits
from media.errors import VideoError
from media.rtsp_relay import RedirectError, RtspRelay, passable
from media.url import open_url
from tests.media.fake_rtsp import CannedRtsp, listener, redirect_to

OK = b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nContent-Length: 5\r\n\r\nv=0\r\n"
FRAME = b"$\x00\x00\x03abc"


def test_whole_messages_pass_and_a_partial_one_waits():
    assert passable(OK + FRAME) == len(OK + FRAME)
    assert passable(OK + FRAME[:3]) == len(OK)  # the frame's header is not whole yet
    assert passable(OK[:-2]) == 0  # the body is not whole yet
    assert passable(FRAME + OK[:10]) == len(FRAME)
    assert passable(b"") == 0


def test_a_redirect_reply_is_refused_and_a_huge_header_is_an_error():
    with pytest.raises(RedirectError, match="redirected to rtsp://10.0.0.1/x: RTSP redirects are refused"):
        passable(FRAME + b"RTSP/1.0 302 Found\r\nCSeq: 2\r\nLocation: rtsp://10.0.0.1/x\r\n\r\n")
    with pytest.raises(ValueError, match="header over"):
        passable(b"RTSP/1.0 200 OK\r\n" + b"X: y\r\n" * 20000)


@pytest.fixture
def inside():
    server = listener("127.0.0.2")
    yield server
    server.close()


def test_ffmpeg_alone_follows_a_redirect_to_any_host(inside):
    camera = CannedRtsp("127.0.0.1", redirect_to(f"rtsp://127.0.0.2:{inside.port}/x"))
    with pytest.raises(VideoError):
        open_url(f"rtsp://127.0.0.1:{camera.port}/cam", 3, Limits())
    assert inside.connections == 1  # why the relay exists


def test_through_the_relay_a_redirect_ends_the_connection_and_its_target_hears_nothing(inside):
    camera = CannedRtsp("127.0.0.1", redirect_to(f"rtsp://127.0.0.2:{inside.port}/x"))
    relay = RtspRelay("127.0.0.1", camera.port, None, timeout_s=3)
    with pytest.raises(VideoError):
        open_url(relay.local_url("rtsp://cam.example/cam"), 3, Limits())
    assert relay.error.code == "forbidden_url" and "redirected to rtsp://127.0.0.2" in str(relay.error)
    assert inside.connections == 0 and camera.connections == 1


def test_a_silent_source_ends_the_relay_within_its_timeout():
    camera = CannedRtsp("127.0.0.1", lambda cseq: b"")  # connects, never answers
    relay = RtspRelay("127.0.0.1", camera.port, None, timeout_s=1)
    started = time.monotonic()
    with pytest.raises(VideoError):
        open_url(relay.local_url("rtsp://cam.example/cam"), 3, Limits())
    assert time.monotonic() - started < 5
    assert relay.error.code == "unreachable" and "sent nothing for 1 s" in str(relay.error)


def test_the_local_url_keeps_user_path_and_query_and_speaks_plain_rtsp_to_the_relay():
    relay = RtspRelay("127.0.0.1", 1, "cam.example", timeout_s=1)
    port = relay.local_url("x://h/").split(":")[2].rstrip("/")
    assert relay.local_url("rtsps://u:p@cam.example:322/live/1?ch=2") == f"rtsp://u:p@127.0.0.1:{port}/live/1?ch=2"
    relay.close()
