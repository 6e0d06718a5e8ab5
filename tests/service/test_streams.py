"""Live streams against real sources started here on 127.0.0.1: an HTTP server (a progressive
MP4, a live HLS playlist written while it is read, redirects), GStreamer's RTSP server, a
WebSocket client pushing MediaRecorder-style WebM chunks — and the faults: a server killed
mid-stream, a source that never sends a frame, hosts and protocols outside the allow-list,
a slow SSE reader — and hostile sources: playlists, redirects and a rebinding name that point
at a server on 127.0.0.2 (not allowed), which must count zero connections."""

from __future__ import annotations

import asyncio
import functools
import http.server
import io
import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import DEMO_ONNX, Settings
from service.sources import system_resolver
from service.stream_routes import NOT_END, push_refusal, resume_after
from service.upload import JSON_BYTES
from tests.media.fake_rtsp import CannedRtsp, listener, redirect_to
from tests.service.conftest import faststart, right_then_left

RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.startswith("/redirect/"):  # /redirect/<url>: a hop to anywhere
            self.send_response(302)
            self.send_header("Location", self.path[len("/redirect/") :])
            self.end_headers()
            return
        super().do_GET()


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory, right_left_mp4):
    """The right-then-left clip as a progressive MP4 (index first, as a stream needs)."""
    out = tmp_path_factory.mktemp("www")
    faststart(right_left_mp4, out / "clip.mp4")
    (out / "index-last.mp4").write_bytes(right_left_mp4.read_bytes())  # as written: its index after the media
    return out


@pytest.fixture(scope="module")
def http_server(media_dir):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(media_dir)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


@pytest.fixture(scope="module")
def client():
    settings = Settings(model=DEMO_ONNX, stream_allow="127.0.0.1", stream_stall_s=1.5, stream_retry_s=2.0,
                        max_streams=3)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _events(client, sid, last_id=None, slow_s=0.0):
    """All SSE events of a stream until `end`: [(id, event, data)]."""
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    out = []
    with client.stream("GET", f"/v1/streams/{sid}/events", headers=headers, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        fields = {}
        for line in r.iter_lines():
            if line:
                key, _, value = line.partition(": ")
                fields[key] = value
                continue
            if "event" in fields:
                out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
                if fields["event"] == "end":
                    return out
                time.sleep(slow_s)
            fields = {}
    return out


def _labels(events, name="segment"):
    return [data["label"] for _, event, data in events if event == name]


def test_http_file_is_read_whole_with_two_segments_and_replayed_to_late_subscribers(client, http_server):
    r = client.post("/v1/streams", json={"url": f"{http_server}/clip.mp4", "window_s": 2, "stride_s": 1})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    events = _events(client, sid)
    names = [e for _, e, _ in events]
    assert names[0] == "started" and names[-1] == "end" and events[-1][2]["reason"] == "finished"
    windows = [d for _, e, d in events if e == "window"]
    assert [w["start_s"] for w in windows] == list(range(8))  # a file is never dropped from, the end covered
    assert set(windows[0]) == {"start_s", "end_s", "predictions", "latency_ms", "lag_s"}
    assert _labels(events) == ["moving_right", "moving_left"]
    assert [i for i, _, _ in events] == list(range(1, len(events) + 1))
    late = _events(client, sid, last_id=events[3][0])  # a late subscriber, from Last-Event-ID
    assert late == events[4:]
    info = client.get(f"/v1/streams/{sid}").json()
    assert info["state"] == "finished" and info["stats"]["windows"] == 8 and info["stats"]["dropped"] == 0
    assert sid in [s["id"] for s in client.get("/v1/streams").json()]
    metrics = client.get("/metrics").text
    assert 'sttm_stream_events_total{event="window"}' in metrics and "sttm_stream_windows_total 8.0" in metrics
    assert client.delete(f"/v1/streams/{sid}").status_code == 204
    gone = client.get(f"/v1/streams/{sid}")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"


def test_an_mp4_with_its_index_last_is_refused_at_once_not_retried(client, http_server):
    """It was retried for STTM_STREAM_RETRY_S, then 'corrupt: cannot decode the media'."""
    sid = client.post("/v1/streams", json={"url": f"{http_server}/index-last.mp4"}).json()["id"]
    (*_, (_, event, data)) = _events(client, sid)
    assert event == "end" and data["reason"].startswith("unsupported: the MP4's index (moov) comes after its media")
    info = client.get(f"/v1/streams/{sid}").json()
    assert info["state"] == "failed" and info["stats"]["retries"] == 0


def test_a_last_event_id_that_is_no_id_of_ours_replays_from_the_first(client, http_server):
    """`²` (a digit to `str.isdigit`, not to `int`) and 5,000 digits (past `int`'s limit) were 500s."""
    assert [resume_after(v) for v in (None, "", "7", " 7", "-1", "²", "٣", "1" * 19, "1" * 5000)] == [0, 0, 7] + [0] * 6
    sid = client.post("/v1/streams", json={"url": f"{http_server}/index-last.mp4"}).json()["id"]
    first = [f"id: {i}" for i, _, _ in _events(client, sid)]
    for value in (b"\xb2", b"1" * 5000):  # as a client sends them: bytes, `²` in latin-1
        with client.stream("GET", f"/v1/streams/{sid}/events", headers={b"Last-Event-ID": value}) as r:
            assert r.status_code == 200, r.read()
            assert [line for line in r.iter_lines() if line.startswith("id: ")] == first


def test_slow_sse_reader_does_not_hold_the_stream_up(client, http_server):
    sid = client.post("/v1/streams", json={"url": f"{http_server}/clip.mp4"}).json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/streams/{sid}").json()["state"] != "finished":  # nobody reads: it runs anyway
        assert time.monotonic() < deadline
        time.sleep(0.1)
    events = _events(client, sid, slow_s=0.05)
    assert events[-1][1] == "end" and len([1 for _, e, _ in events if e == "window"]) == 8


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("http://10.1.2.3/clip.mp4", 403),  # not in STTM_STREAM_ALLOW
        ("file:///etc/passwd", 403),
        ("concat:http://127.0.0.1/a.mp4|http://127.0.0.1/b.mp4", 403),
        ("pipe:0", 403),
        ("http:///clip.mp4", 422),
    ],
)
def test_urls_outside_the_allow_list_or_protocols_are_refused(client, url, status):
    r = client.post("/v1/streams", json={"url": url})
    assert r.status_code == status and r.json()["error"]["code"] in ("forbidden_url", "invalid_request")


def test_a_body_that_is_not_json_is_named_so(client):
    r = client.post("/v1/streams", content=b"notjson", headers={"content-type": "application/json"})
    assert r.status_code == 422  # was "0: JSON decode error"
    assert r.json()["error"] == {"code": "invalid_request", "message": "the body is not JSON (Expecting value)"}


def test_redirects_are_followed_by_the_stream_and_each_hop_checked(client, http_server):
    for target, words in [("http://10.1.2.3/clip.mp4", "host 10.1.2.3 refused: 10.1.2.3, a private address,"),
                          ("file:///etc/passwd", "only rtsp, rtsps, http, https URLs are read")]:  # fmt: skip
        r = client.post("/v1/streams", json={"url": f"{http_server}/redirect/{target}"})
        assert r.status_code == 201  # the first URL is allowed: the hop is checked when it is followed
        end = _events(client, r.json()["id"])[-1]
        assert end[1] == "end" and end[2]["reason"].startswith("forbidden_url: ") and words in end[2]["reason"]
    ok = client.post("/v1/streams", json={"url": f"{http_server}/redirect/{http_server}/clip.mp4"})
    assert ok.status_code == 201 and ok.json()["url"] == f"{http_server}/redirect/{http_server}/clip.mp4"
    assert _events(client, ok.json()["id"])[-1][2]["reason"] == "finished"


def test_a_source_that_never_sends_a_frame_is_retried_then_ends(client):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections are accepted by the kernel, never answered
    try:
        started = time.monotonic()
        r = client.post("/v1/streams", json={"url": f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"})
        assert r.status_code == 201
        events = _events(client, r.json()["id"])
        assert events[-1][1] == "end" and "gave up after retrying" in events[-1][2]["reason"]
        assert time.monotonic() - started < 15
        info = client.get(f"/v1/streams/{r.json()['id']}").json()
        assert info["state"] == "failed" and info["stats"]["retries"] >= 1 and info["stats"]["frames"] == 0
    finally:
        silent.close()


def _webm_chunks(frames: np.ndarray, fps: int = 15, chunk: int = 8192) -> list[bytes]:
    """A WebM (VP8) as a MediaRecorder makes it, cut into the chunks it would emit."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as out:
        stream = out.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "10", "b:v": "1M", "deadline": "realtime", "cpu-used": "8"}
        for array in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        out.mux(stream.encode())
    data = buffer.getvalue()
    return [data[i : i + chunk] for i in range(0, len(data), chunk)]


def _push(client, messages: list[str | bytes], pause_s: float = 0.0) -> list[dict]:
    """`messages` to WS /v1/streams/ws (text or binary), then its events until `end`."""
    with client.websocket_connect("/v1/streams/ws") as ws:
        for message in messages:
            if isinstance(message, bytes):
                ws.send_bytes(message)
                time.sleep(pause_s)  # as a recorder's chunks arrive
            else:
                ws.send_text(message)
        events = [ws.receive_json()]
        while events[-1]["event"] != "end":
            events.append(ws.receive_json())
    return events


def test_websocket_push_of_webm_chunks_gets_the_same_events(client):
    options = json.dumps({"window_s": 2, "stride_s": 1, "top_k": 2})
    events = _push(client, [options, *_webm_chunks(right_then_left()), json.dumps({"type": "end"})], pause_s=0.02)
    names = [e["event"] for e in events]
    assert names[0] == "started" and events[-1]["data"]["reason"] == "finished"
    windows = [e["data"] for e in events if e["event"] == "window"]
    info = client.get(f"/v1/streams/{events[0]['data']['id']}").json()
    assert len(windows) + info["stats"]["dropped"] == 8 and len(windows[0]["predictions"]) == 2
    assert [e["data"]["label"] for e in events if e["event"] == "segment"] == ["moving_right", "moving_left"]


@pytest.mark.parametrize(
    ("first", "media", "code"),
    [("not json", b"", "invalid_request"), ('{"window_s": -1}', b"", "invalid_request"),
     ("{}", b"\x00garbage" * 500, "not_a_video")],
)  # fmt: skip
def test_websocket_bad_first_message_or_media_is_an_error_then_end(client, first, media, code):
    events = _push(client, [first, media, '{"type": "end"}'] if media else [first])
    errors = [e["data"] for e in events if e["event"] == "error"]
    assert errors and errors[0]["code"] == code and events[-1]["event"] == "end"
    assert "Errno" not in errors[0]["message"] and "<none>" not in errors[0]["message"], errors
    if first == "not json":
        assert errors[0]["message"].startswith("the message is not JSON (")


def test_websocket_push_of_an_index_last_mp4_or_of_no_media_is_refused_by_name(client, media_dir):
    """An MP4 as written (moov at the end) said 'corrupt: cannot decode the media'; an end before any
    media said 'not_a_video: ... ([Errno 1094995529] Invalid data found ...)'."""
    data = (media_dir / "index-last.mp4").read_bytes()
    for messages, code, words in (
        ([data[:4096], data[4096:]], "unsupported", "the MP4's index (moov) comes after its media"),
        ([], "empty", 'the client sent {"type": "end"} before any media'),
    ):
        events = _push(client, ["{}", *messages, '{"type": "end"}'])
        errors = [e["data"] for e in events if e["event"] == "error"]
        assert [e["code"] for e in errors] == [code] and errors[0]["message"].startswith(words), events
        assert events[-1]["data"]["reason"].startswith(f"{code}: {words}")
    fragmented = _webm_chunks(right_then_left())  # a MediaRecorder's WebM is not refused by its first bytes
    assert push_refusal(fragmented[0], ended=False) is None


def test_websocket_push_that_ends_in_place_of_its_options_is_empty(client):
    """`{"type": "end"}` as the first message (the options are optional) said 'type: not an option here'."""
    events = _push(client, ['{"type": "end"}'])
    assert [e["event"] for e in events] == ["error", "end"]
    assert events[0]["data"] == {"code": "empty", "message": 'the client sent {"type": "end"} before any media'}


def test_websocket_push_that_stops_before_its_media_opens_is_a_timeout(client):
    """Too few bytes to open, then silence: it was 'not_a_video: not a readable ... stream'."""
    events = _push(client, ["{}", _webm_chunks(right_then_left())[0][:64]])
    errors = [e["data"] for e in events if e["event"] == "error"]
    assert errors == [{"code": "timeout", "message": "no media for 1.5 s"}], events  # STTM_STREAM_STALL_S


DEEP = "[" * 30_000 + "]" * 30_000  # under JSON_BYTES, deeper than json.loads recurses


@pytest.mark.parametrize("text", ["[1]", "5", "null", '{"type": "pause"}', "", "not json", DEEP])
def test_websocket_text_other_than_end_after_the_options_ends_the_stream_at_once(client, text):
    """'[1]' raised AttributeError in the receiver (a traceback in the log) and the stream waited
    for media until its stall limit; '{"type": "pause"}' was silently ignored; `DEEP` raised
    RecursionError, which the receiver took for a disconnect ('client closed')."""
    events = _push(client, ["{}", _webm_chunks(right_then_left())[0], text])
    errors = [e["data"] for e in events if e["event"] == "error"]
    assert errors == [{"code": "invalid_request", "message": NOT_END}]
    assert events[-1]["data"]["reason"] == f"invalid_request: {NOT_END}"
    info = client.get(f"/v1/streams/{events[0]['data']['id']}").json()
    assert info["reason"] == f"invalid_request: {NOT_END}" and info["state"] != "running"


def test_json_bodies_and_messages_are_small_before_they_are_parsed(client):
    """A 200 MB JSON body (the upload limit) or a 16 MiB WebSocket message of numbers was parsed
    whole first: ~60 bytes a number, gigabytes for one request."""
    flood = b'{"url": "http://127.0.0.1/x", "window_s": [' + b"0," * 40_000 + b"0]}"
    r = client.post("/v1/streams", content=flood, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == {
        "code": "too_large", "message": f"the body is over the limit of {JSON_BYTES} bytes"
    }  # fmt: skip
    with client.websocket_connect("/v1/streams/ws") as ws:
        ws.send_text(flood.decode())
        events = [ws.receive_json(), ws.receive_json()]
    message = f"a JSON message is at most {JSON_BYTES} bytes, this one {len(flood)}"
    assert events[0] == {"event": "error", "data": {"code": "too_large", "message": message}}
    assert events[1]["event"] == "end"


def test_url_streams_are_refused_by_a_server_of_several_processes(tiny_onnx, http_server):
    """With --workers 2 a stream started in one process answered 404 to its own events, status
    and delete whenever they reached the other (every time, in a run)."""
    settings = Settings(model=tiny_onnx, stream_allow="127.0.0.0/8", workers=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        r = c.post("/v1/streams", json={"url": f"{http_server}/clip.mp4"})
        assert r.status_code == 501 and r.json()["error"]["code"] == "unsupported"
        assert "sttm serve --workers 1; this one runs 2" in r.json()["error"]["message"]
        assert c.get("/v1/streams").json() == []


def test_stream_limit_and_api_key(tiny_onnx, http_server):
    settings = Settings(model=tiny_onnx, stream_allow="127.0.0.0/8", max_streams=1, api_key="k")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        body = {"url": f"{http_server}/clip.mp4"}
        assert c.post("/v1/streams", json=body).status_code == 401
        auth = {"Authorization": "Bearer k"}
        first = c.post("/v1/streams", json=body, headers=auth)
        assert first.status_code == 201
        second = c.post("/v1/streams", json=body, headers=auth)
        if second.status_code != 201:  # the first had not finished yet
            assert second.status_code == 429 and second.json()["error"]["code"] == "too_many_streams"
        with c.websocket_connect("/v1/streams/ws") as ws:  # no key: an error, then the end
            ws.send_text("{}")
            assert ws.receive_json()["data"]["code"] == "unauthorized" and ws.receive_json()["event"] == "end"
        with c.websocket_connect("/v1/streams/ws", headers=auth) as ws:
            ws.send_text("{}")
            ws.send_text('{"type": "end"}')
            assert ws.receive_json()["event"] in ("started", "error")


def _rtsp(path: Path):
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail("the RTSP test needs Debian's python3 with GStreamer's RTSP server (.ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), str(path), str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    yield proc, f"rtsp://127.0.0.1:{port}/clip"
    proc.kill()
    proc.wait()


@pytest.fixture
def rtsp_server(right_left_mp4):
    yield from _rtsp(right_left_mp4)


@pytest.fixture
def short_rtsp_server(tmp_path):
    """A 2 s clip: the server sends it, then says goodbye (RTCP BYE)."""
    from models.synth import write_mp4

    write_mp4(tmp_path / "short.mp4", right_then_left()[:30])
    yield from _rtsp(tmp_path / "short.mp4")


def test_an_rtsp_source_that_ends_finishes_the_stream(client, short_rtsp_server):
    _, url = short_rtsp_server
    sid = client.post("/v1/streams", json={"url": url, "window_s": 1, "stride_s": 1}).json()["id"]
    events = _events(client, sid)
    assert events[-1][2]["reason"] == "finished" and len([1 for _, e, _ in events if e == "window"]) == 2
    info = client.get(f"/v1/streams/{sid}").json()
    assert info["state"] == "finished" and info["stats"]["retries"] == 0


def test_rtsp_live_stream_is_two_segments_then_retried_and_ended_when_the_server_dies(client, rtsp_server):
    proc, url = rtsp_server
    sid = client.post("/v1/streams", json={"url": url, "window_s": 2, "stride_s": 1}).json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/streams/{sid}").json()["stats"]["windows"] < 6:  # real time: 7 s of 8.5
        assert time.monotonic() < deadline
        time.sleep(0.1)
    info = client.get(f"/v1/streams/{sid}").json()
    assert info["state"] == "running" and 10 <= info["stats"]["fps_in"] <= 20  # 15 fps, read in real time
    proc.kill()  # mid-stream: the server is gone
    events = _events(client, sid)
    assert events[-1][1] == "end" and "gave up after retrying" in events[-1][2]["reason"]
    assert _labels(events) == ["moving_right", "moving_left"], [
        (d["start_s"], d["end_s"], d["predictions"][0]["label"], d["lag_s"]) for _, e, d in events if e == "window"
    ]
    lags = [d["lag_s"] for _, e, d in events if e == "window"]
    assert max(lags) < 1.0
    assert client.get(f"/v1/streams/{sid}").json()["stats"]["retries"] >= 1


def test_live_hls_playlist_written_while_it_is_read(client, http_server, media_dir):
    """An HLS playlist (1 s segments) that grows in real time while the stream reads it; its
    end (`#EXT-X-ENDLIST`) finishes the stream."""
    frames = right_then_left()[:45]  # 3 s moving right
    live = media_dir / "live"
    live.mkdir()
    first_segment = threading.Event()

    def write() -> None:
        options = {"hls_time": "1", "hls_list_size": "0", "hls_segment_type": "mpegts"}
        with av.open(str(live / "index.m3u8"), "w", format="hls", options=options) as out:
            stream = out.add_stream("libx264", rate=15)
            stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
            stream.options = {"g": "15", "preset": "ultrafast", "crf": "20"}
            start = time.monotonic()
            for i, array in enumerate(frames):
                time.sleep(max(0.0, start + i / 15 - time.monotonic()))
                out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
                if (live / "index.m3u8").exists():
                    first_segment.set()
            out.mux(stream.encode())

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert first_segment.wait(10)
        assert "#EXT-X-ENDLIST" not in (live / "index.m3u8").read_text()  # live while it is opened
        r = client.post("/v1/streams", json={"url": f"{http_server}/live/index.m3u8", "stride_s": 0.5})
        assert r.status_code == 201, r.text
        events = _events(client, r.json()["id"])
    finally:
        writer.join()
    assert events[-1][2]["reason"] == "finished"
    windows = [d for _, e, d in events if e == "window"]
    starts = [w["start_s"] for w in windows]
    assert len(windows) >= 3 and starts == sorted(starts), starts
    assert sum(w["predictions"][0]["label"] == "moving_right" for w in windows) > len(windows) / 2


def test_live_windows_are_dropped_when_inference_is_behind_and_lag_stays_bounded(tiny_onnx):
    """The whole 8.5 s WebM arrives at once while each model call takes 0.3 s: the oldest
    waiting windows are dropped and counted, never queued, so lag stays within a few calls."""
    from media.stream import Pipe, Progress
    from service.classify import TimelineOptions
    from service.lifecycle import open_classifier

    async def run():
        async with open_classifier(Settings(model=tiny_onnx)) as classifier:
            fast = classifier.batcher.run
            classifier.batcher.run = lambda batch, rung: (time.sleep(0.3), fast(batch, rung))[1]
            pipe = Pipe()
            for chunk in _webm_chunks(right_then_left()):
                pipe.write(chunk)
            pipe.close()
            opts, progress = TimelineOptions(window_s=1, stride_s=0.25), Progress()
            windows = [w async for w in classifier.windows(pipe, opts, progress, live=True)]
            return windows, progress.dropped

    windows, dropped = asyncio.run(run())
    assert dropped > 0 and len(windows) + dropped == 31  # 0, 0.25, ..., 7.5 s (the last partial)
    assert max(w.lag_s for w in windows) < 4 * 0.3 + 0.5
    assert windows[-1].end_s == pytest.approx(128 / 15, abs=0.1)  # the newest window is never the one dropped


def test_streams_hold_at_most_their_share_of_the_batcher_and_uploads_go_on(tiny_onnx, right_left_mp4):
    """Three streams of a file (never dropped from: they wait for the model) against a slow
    model and a queue of 4 clips: together they hold at most 2 (STTM_STREAM_SLOTS capped at
    half the queue), so every upload finds room."""
    from media.stream import Progress
    from service.classify import ClassifyOptions, TimelineOptions
    from service.lifecycle import open_classifier

    async def run():
        settings = Settings(model=tiny_onnx, max_queue=4, max_batch=1, stream_slots=16)
        async with open_classifier(settings) as classifier:
            fast, most = classifier.batcher.run, 0

            def slow(batch, rung):
                nonlocal most
                most = max(most, classifier.batcher.pending_clips)
                time.sleep(0.02)
                return fast(batch, rung)

            classifier.batcher.run = slow

            async def stream():
                return [w async for w in classifier.windows(right_left_mp4, TimelineOptions(), Progress(), live=False)]

            streams = [asyncio.ensure_future(stream()) for _ in range(3)]
            answers = []
            while not all(s.done() for s in streams):
                answers.append(await classifier.classify(right_left_mp4, ClassifyOptions()))  # never QueueFullError
            return [len(await s) for s in streams], len(answers), most

    windows, uploads, most = asyncio.run(run())
    assert windows == [8, 8, 8] and uploads >= 1 and most <= 2 + 1  # the streams' 2, and one upload


# --- hostile sources: only 127.0.0.1 is allowed; a server on 127.0.0.2 must never hear from us ---


class _Counting(http.server.ThreadingHTTPServer):
    """Counts every connection it accepts (before any request is read)."""

    connections = 0

    def verify_request(self, request, client_address) -> bool:
        self.connections += 1
        return True


def _serve(directory: Path, host: str, port: int = 0) -> _Counting:
    server = _Counting((host, port), functools.partial(_Handler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def vod(media_dir):
    """A 3 s HLS VOD (1 s MPEG-TS segments, moving right) at media_dir/vod/index.m3u8, and a
    key: vod/key.bin with vod/enc.m3u8, the same segments AES-128 encrypted."""
    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    out = media_dir / "vod"
    out.mkdir()
    options = {"hls_time": "1", "hls_list_size": "0", "hls_segment_type": "mpegts", "hls_playlist_type": "vod"}
    with av.open(str(out / "index.m3u8"), "w", format="hls", options=options) as hls:
        stream = hls.add_stream("libx264", rate=15)
        stream.width, stream.height, stream.pix_fmt = 128, 128, "yuv420p"
        stream.options = {"g": "15", "preset": "ultrafast", "crf": "20"}
        for array in right_then_left()[:45]:
            hls.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        hls.mux(stream.encode())
    key = bytes(range(16))
    (out / "key.bin").write_bytes(key)
    playlist = (out / "index.m3u8").read_text()
    for segment in sorted(out.glob("index*.ts")):
        padder = padding.PKCS7(128).padder()
        encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        data = padder.update(segment.read_bytes()) + padder.finalize()
        (out / f"enc-{segment.name}").write_bytes(encryptor.update(data) + encryptor.finalize())
        playlist = playlist.replace(f"\n{segment.name}", f"\nenc-{segment.name}")
    key_line = '#EXT-X-KEY:METHOD=AES-128,URI="key.bin",IV=0x00000000000000000000000000000000\n'
    (out / "enc.m3u8").write_text(playlist.replace("#EXTINF", key_line + "#EXTINF", 1))
    return out


@pytest.fixture(scope="module")
def evil(media_dir):
    """A server on 127.0.0.2 (not allowed) with the same files: a fetch that reached it would work."""
    server = _serve(media_dir, "127.0.0.2")
    yield server, f"http://127.0.0.2:{server.server_port}"
    server.shutdown()


def test_an_encrypted_hls_vod_is_fetched_by_us_and_finishes(client, http_server, vod):
    r = client.post("/v1/streams", json={"url": f"{http_server}/vod/enc.m3u8", "window_s": 1, "stride_s": 1})
    assert r.status_code == 201, r.text
    events = _events(client, r.json()["id"])
    windows = [d for _, e, d in events if e == "window"]
    assert events[-1][2]["reason"] == "finished" and len(windows) == 3, events[-1]
    assert sum(w["predictions"][0]["label"] == "moving_right" for w in windows) >= 2


def _hostile(vod: Path, name: str, evil_url: str) -> str:
    """A playlist at vod/<name>.m3u8 that sends one fetch to the server not allowed."""
    plain = (vod / "index.m3u8").read_text()
    if name == "segment":  # the second segment lives there
        text = plain.replace("\nindex1.ts", f"\n{evil_url}/vod/index1.ts")
    elif name == "variant":
        text = f"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000,RESOLUTION=128x128\n{evil_url}/vod/index.m3u8\n"
    elif name == "key":
        text = (vod / "enc.m3u8").read_text().replace('URI="key.bin"', f'URI="{evil_url}/vod/key.bin"')
    else:  # an init section
        text = plain.replace("#EXTINF", f'#EXT-X-MAP:URI="{evil_url}/vod/index0.ts"\n#EXTINF', 1)
    (vod / f"hostile-{name}.m3u8").write_text(text)
    return f"/vod/hostile-{name}.m3u8"


@pytest.mark.parametrize("route", ["segment", "variant", "key", "map", "redirect"])
def test_a_url_of_a_host_not_allowed_ends_the_stream_and_that_host_gets_no_request(client, http_server, vod, evil,
                                                                                   route):  # fmt: skip
    server, evil_url = evil
    before = server.connections
    path = f"/redirect/{evil_url}/vod/index.m3u8" if route == "redirect" else _hostile(vod, route, evil_url)
    r = client.post("/v1/streams", json={"url": f"{http_server}{path}", "window_s": 1, "stride_s": 1})
    assert r.status_code == 201, r.text
    events = _events(client, r.json()["id"])
    reason = events[-1][2]["reason"]
    assert reason == "forbidden_url: host 127.0.0.2 refused: 127.0.0.2, a loopback address, is not in STTM_STREAM_ALLOW"
    assert client.get(f"/v1/streams/{r.json()['id']}").json()["state"] == "failed"
    assert server.connections == before  # not a connection, let alone a request


def test_an_rtsp_redirect_ends_the_stream_and_its_target_hears_nothing(client):
    """FFmpeg would follow a camera's redirect to any host: through the relay it never sees it."""
    inside = listener("127.0.0.2")
    camera = CannedRtsp("127.0.0.1", redirect_to(f"rtsp://127.0.0.2:{inside.port}/cam"))
    try:
        r = client.post("/v1/streams", json={"url": f"rtsp://127.0.0.1:{camera.port}/cam"})
        assert r.status_code == 201, r.text
        reason = _events(client, r.json()["id"])[-1][2]["reason"]
    finally:
        camera.close()
        inside.close()
    assert reason.startswith(f"forbidden_url: the source redirected to rtsp://127.0.0.2:{inside.port}/cam"), reason
    assert inside.connections == 0 and camera.connections == 1


def test_a_name_that_answers_an_allowed_address_then_an_internal_one_is_refused_at_the_second(client, media_dir,
                                                                                              vod):  # fmt: skip
    """DNS rebinding: `rebind.test` resolves to 127.0.0.1 twice (the POST's check, the
    playlist), then to 127.0.0.2 (the segments). Each fetch connects to the address it
    checked, so the server on 127.0.0.2 (same port) hears nothing."""
    for _ in range(20):  # the same port on both addresses
        inside = _serve(media_dir, "127.0.0.2")
        try:
            allowed = _serve(media_dir, "127.0.0.1", inside.server_port)
            break
        except OSError:
            inside.shutdown()
    answers = iter(["127.0.0.1", "127.0.0.1"])
    streams = client.app.state.runtime.streams
    streams.resolver = lambda host, port: [next(answers, "127.0.0.2")] if host == "rebind.test" else []
    try:
        r = client.post("/v1/streams", json={"url": f"http://rebind.test:{inside.server_port}/vod/index.m3u8"})
        assert r.status_code == 201, r.text
        reason = _events(client, r.json()["id"])[-1][2]["reason"]
    finally:
        streams.resolver = system_resolver
        inside.shutdown()
        allowed.shutdown()
    assert reason == ("forbidden_url: host rebind.test refused: neither rebind.test nor 127.0.0.2, a loopback "
                      "address, is in STTM_STREAM_ALLOW")  # fmt: skip
    assert allowed.connections >= 1 and inside.connections == 0


@pytest.mark.parametrize("route", ["/v1/classify", "/v1/timeline"])
def test_classify_and_timeline_take_no_url_and_an_uploaded_playlist_fetches_nothing(client, evil, route):
    """They read the request's body only: a JSON `url`, a URL as the body, or an HLS playlist
    uploaded as the video (naming the server not allowed) are refused, and it hears nothing."""
    server, evil_url = evil
    before = server.connections
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{evil_url}/vod/index0.ts\n#EXT-X-ENDLIST\n"
    answers = [
        client.post(route, json={"url": f"{evil_url}/clip.mp4"}),
        client.post(route, content=f"{evil_url}/clip.mp4".encode(), headers={"Content-Type": "video/mp4"}),
        client.post(route, files={"file": ("a.m3u8", playlist.encode(), "application/vnd.apple.mpegurl")}),
        client.post(route, files={"file": ("a.mp4", playlist.encode(), "video/mp4")}),
    ]
    assert all(400 <= r.status_code < 500 for r in answers), [(r.status_code, r.text) for r in answers]
    assert server.connections == before


def test_finished_streams_are_kept_keep_s_and_the_latest_few_only(monkeypatch):
    """Streams that end at once (a pushed stream closed after its options), started in a loop, were
    all kept for STTM_STREAM_KEEP_S with their events: a registry without a bound."""
    from service import streams as module
    from service.classify import TimelineOptions
    from service.metrics import Metrics

    monkeypatch.setattr(module, "FINISHED_KEPT", 3)
    registry = module.Streams(Settings(stream_keep_s=60), Metrics())
    now = time.monotonic()

    def add(sid, **fields):
        registry.streams[sid] = module.Stream(sid, None, TimelineOptions(), module.EventLog(10), **fields)

    for i in range(6):
        add(f"done{i}", state="stopped", ended_at=now - 10 + i)
    add("stale", state="finished", ended_at=now - 61)
    add("live", state="running")
    assert sorted(s.id for s in registry.list()) == ["done3", "done4", "done5", "live"]  # running ones always stay
