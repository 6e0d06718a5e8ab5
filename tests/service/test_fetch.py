"""`service.fetch.Fetcher` against a real HTTP server on 127.0.0.1: the name kept in `Host`
while the checked address is connected to, redirects checked hop by hop, bodies bounded."""

from __future__ import annotations

import http.server
import threading

import pytest

from media.errors import VideoError
from service.fetch import MAX_REDIRECTS, Fetcher
from service.sources import AllowList, RefusedError


class _Origin(http.server.BaseHTTPRequestHandler):
    seen: list[tuple[str, str]] = []

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.seen.append((self.path, self.headers.get("Host")))
        if self.path.startswith("/hop/"):  # /hop/<n>: n more redirects, then /body
            n = int(self.path.split("/")[2])
            self.send_response(302)
            self.send_header("Location", f"/hop/{n - 1}" if n > 1 else "/body")
        elif self.path.startswith("/away"):
            self.send_response(301)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
        elif self.path == "/body":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
        self.end_headers()
        if self.path == "/body":
            self.wfile.write(b"x" * 1000)


@pytest.fixture(scope="module")
def origin():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()


def _fetcher(calls: list) -> Fetcher:
    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"] if host == "camera.test" else []

    return Fetcher(AllowList.parse("127.0.0.1"), 5.0, resolve)


def test_the_checked_address_is_connected_to_and_the_name_kept_in_host(origin):
    _Origin.seen.clear()
    calls = []
    fetcher = _fetcher(calls)
    final, body = fetcher.get(f"http://camera.test:{origin}/hop/2", 10_000)
    assert final == f"http://camera.test:{origin}/body" and body == b"x" * 1000
    assert _Origin.seen == [(p, f"camera.test:{origin}") for p in ("/hop/2", "/hop/1", "/body")]
    assert calls == ["camera.test"] * 3 and fetcher.requests == 3  # one look-up per hop


def test_a_redirect_out_of_the_allow_list_is_refused_before_it_is_followed(origin):
    fetcher = _fetcher([])
    with pytest.raises(RefusedError) as err:
        fetcher.get(f"http://127.0.0.1:{origin}/away", 10_000)
    assert "169.254.169.254, a cloud metadata address" in str(err.value) and fetcher.requests == 1


@pytest.mark.parametrize(
    ("path", "max_bytes", "code", "words"),
    [(f"/hop/{MAX_REDIRECTS + 1}", 10_000, "unreachable", "redirects"), ("/missing", 10_000, "unreachable", "404"),
     ("/body", 999, "too_large", "over")],
)  # fmt: skip
def test_http_errors_redirect_loops_and_large_bodies_end_the_fetch(origin, path, max_bytes, code, words):
    with pytest.raises(VideoError) as err:
        _fetcher([]).get(f"http://127.0.0.1:{origin}{path}", max_bytes)
    assert err.value.code == code and words in str(err.value)
