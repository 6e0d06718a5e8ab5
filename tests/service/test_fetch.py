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


def _certificate(name: str, tmp_path):
    """A self-signed certificate for `name` (and its key) as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp_path / f"{name}.crt").write_bytes(cert_pem)
    (tmp_path / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / f"{name}.crt", tmp_path / f"{name}.key"


@pytest.mark.parametrize("served_as", ["camera.test", "other.test"])
def test_https_connects_to_the_address_with_the_name_as_sni_and_in_the_certificate_check(tmp_path, served_as):
    import ssl

    cert, key = _certificate(served_as, tmp_path)
    names = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))  # trusts this certificate only
        fetcher = Fetcher(AllowList.parse("127.0.0.1"), 5.0, lambda host, port: ["127.0.0.1"], verify=trust)
        url = f"https://camera.test:{server.server_port}/body"
        if served_as == "camera.test":
            assert fetcher.get(url, 10_000)[1] == b"x" * 1000
        else:  # the certificate is checked against the name, not the address: another name's is refused
            with pytest.raises(VideoError) as err:
                fetcher.get(url, 10_000)
            assert err.value.code == "unreachable" and "CERTIFICATE_VERIFY_FAILED" in str(err.value)
        assert names and set(names) == {"camera.test"}
    finally:
        server.shutdown()


class _KeepAlive(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # connections stay open between requests

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


def test_a_kept_alive_connection_carries_one_names_requests_only():
    connections = []

    class Server(http.server.ThreadingHTTPServer):
        def verify_request(self, request, client_address) -> bool:
            connections.append(client_address)
            return True

    server = Server(("127.0.0.1", 0), _KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fetcher = Fetcher(AllowList.parse("127.0.0.1"), 5.0, lambda host, port: ["127.0.0.1"])
        for name in ("a.test", "a.test", "a.test", "b.test", "b.test", "a.test"):
            assert fetcher.get(f"http://{name}:{server.server_port}/x", 100)[1] == b"ok"
        assert len(connections) == 3  # a (reused twice), b (reused once), a again on a new one
        fetcher.close()
    finally:
        server.shutdown()
