"""`service.auth`: keys in headers (HTTP and WebSocket) or a browser's first message, never in a
URL; refusals counted by reason; and the server's own log (uvicorn's) read for the key."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.app import create_app
from service.settings import Settings

STATIC, ALPHA, BETA = "static-key-0001", "alpha-key-0002", "beta-key-0003"


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys"
    path.write_text(f"{ALPHA}\nsha256:{hashlib.sha256(BETA.encode()).hexdigest()}\n")
    return path


@pytest.fixture(scope="module")
def client(tiny_onnx, keys_file):
    settings = Settings(model=tiny_onnx, api_key=STATIC, api_keys_file=keys_file, stream_stall_s=2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _ws_events(ws) -> list[dict]:
    out = []
    try:
        while not out or out[-1]["event"] != "end":
            out.append(ws.receive_json())
    except WebSocketDisconnect:
        pass
    return out


def test_http_keys_in_either_header_from_the_environment_or_the_file(client, keys_file):
    assert client.get("/v1/streams").status_code == 401
    for headers in ({"Authorization": f"Bearer {STATIC}"}, {"X-API-Key": ALPHA}, {"authorization": f"bearer {BETA}"}):
        assert client.get("/v1/streams", headers=headers).status_code == 200, headers
    wrong = client.get("/v1/streams", headers={"X-API-Key": "nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
    in_url = client.get(f"/v1/streams?key={ALPHA}", headers={"X-API-Key": ALPHA})
    assert in_url.status_code == 401 and "never in the URL" in in_url.json()["error"]["message"]
    assert client.get("/v2/health/live").status_code == 200  # health stays open
    metrics = client.get("/metrics", headers={"X-API-Key": BETA}).text
    for reason in ("missing", "invalid", "key_in_url"):
        assert f'sttm_auth_refused_total{{reason="{reason}"}}' in metrics
    assert not any(k in metrics for k in (STATIC, ALPHA, BETA))


def test_a_key_revoked_in_the_file_is_refused_at_the_next_request(client, keys_file):
    headers = {"X-API-Key": ALPHA}
    assert client.get("/v1/streams", headers=headers).status_code == 200
    keys_file.write_text(f"sha256:{hashlib.sha256(BETA.encode()).hexdigest()}\n")
    try:
        assert client.get("/v1/streams", headers=headers).status_code == 401
        assert client.get("/v1/streams", headers={"X-API-Key": BETA}).status_code == 200
    finally:
        keys_file.write_text(f"{ALPHA}\nsha256:{hashlib.sha256(BETA.encode()).hexdigest()}\n")


@pytest.mark.parametrize("how", ["bearer", "x-api-key", "first message"])
def test_websocket_key_in_a_header_or_the_first_message(client, how):
    headers = {"bearer": {"Authorization": f"Bearer {ALPHA}"}, "x-api-key": {"X-API-Key": BETA}}.get(how, {})
    with client.websocket_connect("/v1/streams/ws", headers=headers) as ws:
        if how == "first message":
            ws.send_text(json.dumps({"type": "auth", "key": STATIC}))
        ws.send_text("{}")
        ws.send_text('{"type": "end"}')
        events = _ws_events(ws)
    assert events[0]["event"] == "started" and events[-1]["event"] == "end"


@pytest.mark.parametrize(
    ("path", "first", "words"),
    [("/v1/streams/ws", "{}", "a valid API key is required"),
     ("/v1/streams/ws", json.dumps({"type": "auth", "key": "wrong"}), "a valid API key is required"),
     (f"/v1/streams/ws?key={ALPHA}", None, "never in the URL")],
)  # fmt: skip
def test_websocket_without_a_valid_key_or_with_one_in_the_url_is_told_how(client, path, first, words):
    with client.websocket_connect(path) as ws:
        if first is not None:
            ws.send_text(first)
            ws.send_text("{}")
        events = _ws_events(ws)
    assert events[0]["event"] == "error" and events[0]["data"]["code"] == "unauthorized"
    assert words in events[0]["data"]["message"] and "first message" in events[0]["data"]["message"]
    assert [e["event"] for e in events] == ["error", "end"]


def test_the_server_log_shows_no_key_after_every_kind_of_authenticated_request(tiny_onnx, right_left_mp4):
    """A real uvicorn with its access log on: HTTP with each header, an upload, SSE, a
    WebSocket with a header and one with the key as its first message — and a client that
    put the key in the URL anyway (refused; the log shows `[redacted]`)."""
    import uvicorn
    from websockets.sync.client import connect

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect(logging.INFO)
    loggers = [logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    settings = Settings(model=tiny_onnx, api_key=STATIC, stream_allow="127.0.0.1", stream_stall_s=1,
                        stream_retry_s=0.5)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        _every_kind_of_request(f"127.0.0.1:{port}", right_left_mp4, connect)
    finally:
        server.should_exit = True
        thread.join(30)
        for logger in loggers:
            logger.removeHandler(handler)
    log = "\n".join(lines)
    assert "POST /v1/classify" in log and "GET /v1/streams/" in log and "WebSocket /v1/streams/ws" in log, log
    assert STATIC not in log and "key=[redacted]" in log, log


def _every_kind_of_request(host: str, mp4, connect) -> None:
    bearer, header = {"Authorization": f"Bearer {STATIC}"}, {"X-API-Key": STATIC}
    with httpx.Client(base_url=f"http://{host}", timeout=30) as http:
        assert http.get("/v1/models", headers=header).status_code == 200
        assert http.get("/v2", headers=bearer).status_code == 200  # KServe v2
        assert http.get("/metrics", headers=header).status_code == 200
        with open(mp4, "rb") as f:
            upload = http.post("/v1/classify", files={"file": ("v.mp4", f, "video/mp4")}, headers=bearer)
            assert upload.status_code == 200
        sid = http.post("/v1/streams", json={"url": "rtsp://127.0.0.1:9/none"}, headers=bearer).json()["id"]
        with http.stream("GET", f"/v1/streams/{sid}/events", headers=header) as events:
            assert any(line.startswith("event: end") for line in events.iter_lines())
        assert http.delete(f"/v1/streams/{sid}", headers=bearer).status_code == 204
        assert http.get(f"/v1/models?key={STATIC}").status_code == 401  # a careless client: refused
    as_message = [json.dumps({"type": "auth", "key": STATIC})]
    for extra, first in (({"Authorization": f"Bearer {STATIC}"}, []), ({}, as_message)):
        with connect(f"ws://{host}/v1/streams/ws", additional_headers=extra, open_timeout=10) as ws:
            for message in [*first, "{}", '{"type": "end"}']:
                ws.send(message)
            events = [json.loads(ws.recv(timeout=10))]
            while events[-1]["event"] != "end":
                events.append(json.loads(ws.recv(timeout=10)))
            assert events[0]["event"] == "started"
    with connect(f"ws://{host}/v1/streams/ws?key={STATIC}", open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["data"]["code"] == "unauthorized"
