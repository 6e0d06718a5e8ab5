"""A fake RTSP server for the relay tests: it answers every request with one canned reply."""

from __future__ import annotations

import contextlib
import re
import socket
import threading


class CannedRtsp:
    """Listens on `host`; answers each request on each connection with `reply(cseq)`;
    `connections` counts who connected."""

    def __init__(self, host: str, reply) -> None:
        self.sock = socket.create_server((host, 0))
        self.port, self.reply, self.connections = self.sock.getsockname()[1], reply, 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.connections += 1
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(5)
            while data := conn.recv(4096):
                for cseq in re.findall(rb"CSeq: *(\d+)", data, re.IGNORECASE):
                    conn.sendall(self.reply(int(cseq)))

    def close(self) -> None:
        self.sock.close()


def redirect_to(location: str):
    return lambda cseq: f"RTSP/1.0 301 Moved Permanently\r\nCSeq: {cseq}\r\nLocation: {location}\r\n\r\n".encode()


def listener(host: str) -> CannedRtsp:
    """A host that should hear nothing: it only counts connections (and answers 404)."""
    return CannedRtsp(host, lambda cseq: f"RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n".encode())
