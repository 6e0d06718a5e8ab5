"""A real server process (`sttm serve`, uvicorn) under load and under faults: the load
generator (`sttm bench serve`), a short soak (memory, temp files), a model that cannot be
loaded, clients that go away mid-upload or mid-inference, and SIGTERM with requests in flight.

The servers run `python -m cli serve` in a subprocess whose ONNX Runtime call can be slowed
down from the test (`SLOW_FLAG`: a file holding seconds to sleep per model call), so that
"mid-inference" is a real window rather than a race."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from cli.loadtest import (
    Sample,
    ServerWatch,
    bench,
    parse_levels,
    percentile,
    render,
    server_tmpdir,
    summarize,
)
from cli.main import main

REPO = Path(__file__).resolve().parents[2]

# `sttm serve`, with a test hook: while SLOW_FLAG exists, every model call first sleeps the seconds it holds
SERVER = """
import os, sys, time
from pathlib import Path
from runtime.backends import Backend

flag, real = Path(os.environ["SLOW_FLAG"]), Backend.__call__

def slowed(self, video):
    if flag.exists():
        time.sleep(float(flag.read_text() or 0))
    return real(self, video)

Backend.__call__ = slowed
from cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _until(condition, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class Server:
    proc: subprocess.Popen
    port: int
    tmpdir: Path  # the server's TMPDIR
    flag: Path  # SLOW_FLAG
    log: Path
    startup_files: list[str] | None = None  # in TMPDIR once ready (ONNX Runtime's telemetry writes `.ses`)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def metric(self, name: str) -> float:
        lines = httpx.get(f"{self.url}/metrics").text.splitlines()
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(root: Path, model: Path, env: dict | None = None, log_level: str = "warning", ready: bool = True) -> Server:
    tmpdir, flag, port = root / "tmp", root / "slow", _free_port()
    tmpdir.mkdir(parents=True)
    full_env = {**os.environ, "TMPDIR": str(tmpdir), "SLOW_FLAG": str(flag), **(env or {})}
    argv = ["serve", "--model", str(model), "--port", str(port), "--log-level", log_level]
    with (root / "server.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", SERVER, *argv], cwd=REPO, env=full_env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    server = Server(proc, port, tmpdir, flag, root / "server.log")

    def up() -> bool:
        assert server.proc.poll() is None, f"server exited {server.proc.returncode}:\n{server.output()}"
        try:
            status = httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code
        except httpx.TransportError:
            return False
        return status == 200 or not ready

    _until(up, 90, "the server to start")
    server.startup_files = sorted(os.listdir(tmpdir))
    return server


TRICKLE_CUT_S = 4.0  # the server fixture's STTM_READ_TIMEOUT_S


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    srv = _start(tmp_path_factory.mktemp("server"), tiny_onnx, env={"STTM_READ_TIMEOUT_S": str(TRICKLE_CUT_S)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clip(clips) -> Path:
    return clips / "videos" / "moving_right_00000.mp4"


def _multipart(data: bytes, declared: int | None = None) -> tuple[bytes, bytes]:
    """A POST /v1/classify request line + headers, and the multipart body holding `data`;
    `declared` bytes of file content are announced in Content-Length (default: len(data))."""
    boundary = "sttmtestboundary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="clip.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n").encode()  # fmt: skip
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + (len(data) if declared is None else declared) + len(tail)
    headers = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
               f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n").encode()  # fmt: skip
    return headers, head + data + (tail if declared is None else b"")


def _classify(url: str, clip: Path) -> httpx.Response:
    return httpx.post(f"{url}/v1/classify", files={"file": (clip.name, clip.read_bytes(), "video/mp4")}, timeout=60)


def _assert_clean(server: Server, watch: ServerWatch) -> None:
    """No temp files or open temp handles in the server; the model queue is empty; no traceback."""
    _until(lambda: watch.temp_handles() == 0, 10, "temp handles to close")
    assert sorted(os.listdir(server.tmpdir)) == server.startup_files
    _until(lambda: server.metric("sttm_queue_clips") == 0, 10, "the model queue to empty")
    assert "Traceback" not in server.output(), server.output()


# --- the load generator's pure parts -------------------------------------------------------


def test_percentiles_summary_and_table():
    values = [5.0, 1.0, 3.0, 2.0, 4.0, 10.0]
    for q in (0, 50, 90, 99, 100):
        assert percentile(values, q) == pytest.approx(np.percentile(values, q))
    assert math.isnan(percentile([], 50)) and parse_levels("1, 4,16") == [1, 4, 16]
    for bad in ("", "0", "1,x"):
        with pytest.raises(ValueError):
            parse_levels(bad)
    stages = {"decode": 2.0, "preprocess": 1.0, "queue": 0.5, "inference": 3.0, "total": 7.0}
    samples = [Sample("200", 0.010, stages), Sample("200", 0.030, stages), Sample("503", 0.001, {}),
               Sample("ConnectError", 0.002, {})]  # fmt: skip
    level = summarize(samples, concurrency=4, wall_s=0.5)
    assert level["requests"] == 4 and level["errors"] == 2
    assert level["errors_by_status"] == {"503": 1, "ConnectError": 1}
    assert level["throughput_rps"] == 4.0  # successful answers per second
    assert level["latency_ms"]["p50"] == pytest.approx(20.0) and level["server_ms"] == stages
    report = {"url": "http://h/v1/classify", "clip": "c.mp4", "clip_bytes": 2048, "requests": 4, "levels": [level]}
    table = render(report)
    assert "| 4 | 4 | 2 | 4.0 | 20.0 |" in table and "errors at concurrency 4: 503 x1, ConnectError x1" in table
    assert server_tmpdir({"TMPDIR": "/x", "TMP": "/y"}) == "/x" and server_tmpdir({}) == "/tmp"


# --- load -------------------------------------------------------------------------------------


def test_the_watch_counts_only_temp_files_opened_since_it_began(tmp_path):
    """A server whose log was redirected into its temp dir holds that file from the start: no leak."""
    with open(tmp_path / "serve.log", "w"):
        watch = ServerWatch(os.getpid(), str(tmp_path))
        assert watch.temp_handles() == 0
        with open(tmp_path / "upload", "w"):
            assert watch.temp_handles() == 1 and watch.temp_files_left() == ["upload"]
        assert watch.temp_handles() == 0


def test_short_soak_no_errors_no_growth_no_temp_files(server, clip):
    """60 requests at concurrency 8 against the real server (the 1,000-request soak is in the notes)."""
    report = asyncio.run(bench(server.url, clip, [8], 60, pid=server.proc.pid, rss_mark=20))
    level = report["levels"][0]
    assert level["requests"] == 60 and level["errors"] == 0, level["errors_by_status"]
    assert level["throughput_rps"] > 0 and level["latency_ms"]["p50"] <= level["latency_ms"]["p99"]
    assert all(v >= 0 for v in level["server_ms"].values()) and level["server_ms"]["total"] > 0
    soak = report["server"]
    assert soak["tmpdir"] == os.path.realpath(server.tmpdir) and soak["temp_files_left"] == []
    assert soak["temp_handles_open"] == 0 and sorted(os.listdir(server.tmpdir)) == server.startup_files
    assert soak["rss_mb_at_mark"] > 0 and soak["rss_growth_mb"] < 50, soak
    assert "| 8 | 60 | 0 |" in render(report)


def test_bench_cli_json_table_and_errors(server, clip, capsys):
    argv = ["bench", "serve", server.url, "--clip", str(clip), "--concurrency", "1,2", "--requests", "4"]
    assert main([*argv, "--json", "--pid", str(server.proc.pid)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2] and report["url"] == f"{server.url}/v1/classify"
    assert all(lv["errors"] == 0 and lv["requests"] == 4 for lv in report["levels"])
    soak = report["server"]  # 8 answers, fewer than the default mark (100): memory read at the midpoint
    assert soak["rss_mark"] == 4 and soak["rss_mb_at_mark"] > 0 and soak["fds_at_mark"] > 0
    assert main(argv) == 0
    assert "| concurrency | requests | errors | req/s | p50 ms |" in capsys.readouterr().out
    # a first answer that is a client error stops the run in one line: every request would be refused
    assert main([*argv, "--endpoint", "/v1/nothing", "--json"]) == 2
    assert (
        capsys.readouterr().err
        == f"sttm bench: error: {server.url}/v1/nothing refused the clip (404 not_found: Not Found)\n"
    )
    text = clip.with_name("not-a-clip.mp4")
    text.write_text("hello")
    assert main(["bench", "serve", server.url, "--clip", str(text), "--requests", "1"]) == 2
    assert "refused the clip (422 not_a_video: " in capsys.readouterr().err
    # errors met during the run are counted by status
    report = asyncio.run(bench(server.url, clip, [1], 4, endpoint="/v1/nothing", warmup=0))
    assert report["levels"][0]["errors_by_status"] == {"404": 4}


def test_bench_cli_unreachable_server_or_missing_clip_is_one_line(clip, tmp_path, capsys):
    dead = f"http://127.0.0.1:{_free_port()}"
    assert main(["bench", "serve", dead, "--clip", str(clip), "--requests", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"sttm bench: error: cannot reach {dead}") and err.count("\n") == 1
    assert main(["bench", "serve", dead, "--clip", str(tmp_path / "nope.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sttm bench: error: clip") and "does not exist" in err and err.count("\n") == 1
    # a URL without its scheme was 'cannot reach 127.0.0.1:8000: Request URL is missing ... protocol'
    assert main(["bench", "serve", dead.removeprefix("http://"), "--clip", str(clip)]) == 2
    err = capsys.readouterr().err
    assert err == f"sttm bench: error: the server's URL starts with http:// or https://, got {dead[7:]!r}\n"
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connects, never answers: 'cannot reach URL: ' said nothing
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        assert main(["bench", "serve", url, "--clip", str(clip), "--timeout", "0.2"]) == 2
        assert capsys.readouterr().err == f"sttm bench: error: cannot reach {url}: ReadTimeout\n"


# --- faults -------------------------------------------------------------------------------


def test_corrupt_model_exits_non_zero_with_one_line(tmp_path):
    (tmp_path / "corrupt.onnx").write_bytes(b"not an onnx file")
    cmd = [sys.executable, "-m", "cli", "serve", "--model", str(tmp_path / "corrupt.onnx"),
           "--port", str(_free_port())]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    lines = [line for line in out.splitlines() if "model not loaded" in line]
    assert len(lines) == 1 and "cannot load" in lines[0] and "corrupt.onnx" in lines[0], out
    assert "Traceback" not in out, out


def test_missing_model_not_required_stays_up_not_ready(tmp_path):
    srv = _start(tmp_path / "srv", tmp_path / "missing.onnx", {"STTM_REQUIRE_MODEL": "false"}, ready=False)
    try:
        assert httpx.get(f"{srv.url}/v2/health/live").json() == {"live": True}
        ready = httpx.get(f"{srv.url}/v2/health/ready")
        assert ready.status_code == 503 and ready.json() == {"ready": False}
        r = httpx.post(f"{srv.url}/v1/classify", content=b"x", headers={"content-type": "video/mp4"})
        assert r.status_code == 503 and r.json()["error"]["code"] == "not_ready"
        assert "does not exist" in r.json()["error"]["message"]
    finally:
        srv.stop()


@pytest.mark.parametrize("kind", ["raw", "multipart"])
def test_disconnect_mid_upload_leaves_nothing(server, clip, kind):
    """The upload is big enough to be spooled to a temp file (8 MB raw, 1 MB multipart);
    the client leaves while that file is open."""
    watch = ServerWatch(server.proc.pid)
    sent = 9 << 20 if kind == "raw" else 2 << 20
    if kind == "raw":
        head = (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: video/mp4\r\n"
                f"Content-Length: {20 << 20}\r\n\r\n").encode()  # fmt: skip
        body = bytes(sent)
    else:
        head, body = _multipart(bytes(sent), declared=20 << 20)
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head + body)
        _until(lambda: watch.temp_handles() > 0, 10, "the upload to reach a temp file")
    _assert_clean(server, watch)
    assert _classify(server.url, clip).status_code == 200


def test_trickling_uploads_are_cut_and_uploads_go_on(server, clip):
    """100 clients sending one byte of their body every 0.5 s (slowloris): each is answered
    408 once STTM_READ_TIMEOUT_S has passed, nothing is left behind, and uploads go on."""
    watch = ServerWatch(server.proc.pid)
    head, body = _multipart(clip.read_bytes())
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(100)]
    started = time.monotonic()
    try:
        for sock in socks:
            sock.sendall(head)
        answered: dict[int, bytes] = {}
        offset = 0
        while len(answered) < len(socks) and time.monotonic() - started < TRICKLE_CUT_S + 20:
            pending = [sock for i, sock in enumerate(socks) if i not in answered]
            for sock in select.select(pending, [], [], 0)[0]:  # answered (before any further byte)
                answered[socks.index(sock)] = sock.recv(4096)
            for i, sock in enumerate(socks):
                if i not in answered:
                    with contextlib.suppress(OSError):
                        sock.sendall(body[offset : offset + 1])
            offset += 1
            time.sleep(0.5)
        assert len(answered) == len(socks) and all(a.startswith(b"HTTP/1.1 408") for a in answered.values())
        assert b'"read_timeout"' in next(iter(answered.values()))
        assert time.monotonic() - started < TRICKLE_CUT_S + 15
    finally:
        for sock in socks:
            sock.close()
    assert _classify(server.url, clip).status_code == 200
    _assert_clean(server, watch)


def test_disconnect_mid_inference_leaves_nothing_and_the_batcher_serves_on(server, clip):
    watch = ServerWatch(server.proc.pid)
    server.flag.write_text("1.5")  # every model call now takes 1.5 s
    try:
        head, body = _multipart(clip.read_bytes())
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head + body)
            _until(lambda: server.metric("sttm_queue_clips") >= 1, 10, "the clip to reach the model")
        server.flag.unlink()
        r = _classify(server.url, clip)
        assert r.status_code == 200 and r.json()["predictions"]
    finally:
        server.flag.unlink(missing_ok=True)
    _assert_clean(server, watch)


def test_sigterm_drains_in_flight_requests(tiny_onnx, clip, tmp_path):
    """Three requests in flight (model calls of 1 s, one clip each); SIGTERM; all three answer
    200, new connections are refused meanwhile, and the server shuts down cleanly."""
    srv = _start(tmp_path / "srv", tiny_onnx, {"STTM_MAX_BATCH": "1"}, log_level="info")
    try:
        srv.flag.write_text("1.0")
        results: list[int] = []

        def one() -> None:
            r = _classify(srv.url, clip)
            results.append(r.status_code)

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()

        def in_flight() -> bool:  # the three, plus the /metrics request asking; one of them at the model
            return srv.metric("sttm_inflight_requests") >= 4 and srv.metric("sttm_queue_clips") >= 1

        _until(in_flight, 20, "three requests in flight")
        srv.proc.send_signal(signal.SIGTERM)

        def refused() -> bool:
            # a connection that raced into the accept backlog as the socket closed is reset, not
            # served: that is a refusal too
            try:
                httpx.get(f"{srv.url}/v2/health/live", timeout=1)
            except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
                return True
            return False

        _until(refused, 5, "the listening socket to close")
        assert any(t.is_alive() for t in threads)  # still draining when new connections are refused
        for t in threads:
            t.join(60)
        assert results == [200, 200, 200]
        code = srv.proc.wait(30)
    finally:
        srv.stop()
    out = srv.output()
    assert "Application shutdown complete" in out and "Traceback" not in out, out
    # uvicorn >= 0.29 re-raises the SIGTERM it handled once it has shut down gracefully, so
    # `sttm serve` ends "killed by SIGTERM" (143 in a shell) unless the CLI turns that into 0
    assert code in (0, -signal.SIGTERM), out
