"""FFmpeg's RTSP connection through a relay that refuses redirects.

FFmpeg follows an RTSP server's `3xx` reply to whatever `Location` it names, and has no option
to stop it: a camera that is allowed could send the connection to any host. So FFmpeg connects
to a relay on 127.0.0.1 instead of the camera; the relay connects to the address the caller
checked (TLS for `rtsps`, the URL's host name as its server name) and passes the bytes both
ways. The camera's side is read as RTSP messages — a reply (status line, headers, a
`Content-Length` body) or `$`-framed interleaved media (`rtsp_transport=tcp`: everything
travels on this one connection) — and a `3xx` reply ends both connections before FFmpeg sees
it, with `error` saying why.

    relay = RtspRelay("10.20.0.7", 554, None, timeout_s=10)
    container = media.url.open_url(relay.local_url("rtsp://cam.example/live"), ...)
    ...
    relay.close()
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit, urlunsplit

from media.errors import VideoError

MAX_HEADER = 64 << 10  # an RTSP reply's status line and headers
CHUNK = 64 << 10
POLL_S = 0.5  # how soon `close()` is noticed
STATUS = re.compile(rb"^RTSP/\d\.\d (\d{3})")
LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
LOCATION = re.compile(rb"\r\nlocation:\s*([^\r\n]*)", re.IGNORECASE)


class RtspRelay:
    """One FFmpeg connection relayed to `address:port` (TLS with `server_name` when given).
    Every wait is bounded by `timeout_s`: accepting FFmpeg, connecting, and reading the camera."""

    def __init__(self, address: str, port: int, server_name: str | None, timeout_s: float) -> None:
        self.address, self.port, self.server_name, self.timeout_s = address, port, server_name, timeout_s
        self.error: VideoError | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(timeout_s)
        self._sockets: list[socket.socket] = [self._listener]
        self._closed = threading.Event()
        threading.Thread(target=self._serve, name="rtsp-relay", daemon=True).start()

    def local_url(self, url: str) -> str:
        """`url` pointed at the relay (plain `rtsp`: the relay speaks TLS to the camera)."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo + '@' if userinfo else ''}127.0.0.1:{self._listener.getsockname()[1]}"
        return urlunsplit(("rtsp", netloc, parts.path, parts.query, ""))

    def close(self) -> None:
        """Stop relaying (within `POLL_S`); both connections are closed."""
        self._closed.set()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        try:
            client, _ = self._listener.accept()  # FFmpeg's one connection (TCP transport)
            self._sockets.append(client)
            self._listener.close()
            client.settimeout(self.timeout_s)
            upstream = self._connect()
            self._sockets.append(upstream)
            self._pump(client, upstream)
        except RedirectError as err:
            self._fail("forbidden_url", str(err))
        except (OSError, ValueError) as err:
            if not self._closed.is_set():
                what = "sent what is not RTSP" if isinstance(err, ValueError) else "failed"
                self._fail("unreachable", f"the connection to {self.address}:{self.port} {what} ({err})")
        finally:
            self._closed.set()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.address, self.port), timeout=self.timeout_s)
        if self.server_name is None:
            return sock
        context = ssl.create_default_context()  # as FFmpeg's rtsps (tls_verify=0): encrypted, not authenticated
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        return context.wrap_socket(sock, server_hostname=self.server_name)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        """Both directions in one thread (a TLS connection is not to be read and written from
        two): FFmpeg's requests as they are; the camera's messages whole ones at a time, until
        either side closes, the camera is silent for `timeout_s`, or `close()`."""
        buffer, heard = bytearray(), time.monotonic()
        while not self._closed.is_set():
            pending = isinstance(upstream, ssl.SSLSocket) and upstream.pending()
            ready = [upstream] if pending else select.select([client, upstream], [], [], POLL_S)[0]
            if upstream in ready:
                if not (data := upstream.recv(CHUNK)):
                    return
                heard = time.monotonic()
                buffer += data
                if done := passable(buffer):
                    client.sendall(buffer[:done])
                    del buffer[:done]
            if client in ready:
                if not (data := client.recv(CHUNK)):
                    return
                upstream.sendall(data)
            if time.monotonic() - heard > self.timeout_s:
                raise TimeoutError(f"the source sent nothing for {self.timeout_s:.0f} s")

    def _fail(self, code: str, message: str) -> None:
        if self.error is None:
            self.error = VideoError(code, message)


class RedirectError(ValueError):
    pass


def passable(buffer: bytes | bytearray) -> int:
    """How many leading bytes of the camera's side are whole messages FFmpeg may see. Raises
    `RedirectError` at a `3xx` reply, ValueError at a header over `MAX_HEADER`."""
    at = 0
    while at < len(buffer):
        if buffer[at] == 0x24:  # `$`, channel, 16-bit length: interleaved RTP/RTCP
            if len(buffer) - at < 4:
                break
            end = at + 4 + int.from_bytes(buffer[at + 2 : at + 4], "big")
        else:
            head_end = buffer.find(b"\r\n\r\n", at, at + MAX_HEADER)
            if head_end < 0:
                if len(buffer) - at >= MAX_HEADER:
                    raise ValueError(f"a message header over {MAX_HEADER} bytes")
                break
            head = bytes(buffer[at:head_end])
            status = STATUS.match(head)
            if status and status.group(1).startswith(b"3"):
                where = LOCATION.search(head)
                target = where.group(1).decode(errors="replace")[:200] if where else "another place"
                raise RedirectError(
                    f"the source redirected to {target}: RTSP redirects are refused (name the final URL)"
                )
            length = LENGTH.search(head)
            end = head_end + 4 + (int(length.group(1)) if length else 0)
        if end > len(buffer):
            break
        at = end
    return at
