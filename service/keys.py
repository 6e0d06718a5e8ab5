"""The API keys the server accepts: `STTM_API_KEY` and the lines of `STTM_API_KEYS_FILE`.

The file holds one key per line: the key itself, or `sha256:<64 hex digits>` (the SHA-256 of
the key, so the file need not hold the secret); blank lines and `# comments` are skipped. A
key is a line's whole text, so a plain key may be anything, 64 hex digits included.

Every key is kept as its SHA-256, and a presented key is hashed and compared with each of
them with `hmac.compare_digest` (all of them, whichever matches: no early exit). The file is
re-read when its modification time, size or inode changes (looked at on every check: one
`stat`) and on SIGHUP, so a key is added or revoked without a restart. A file that cannot be
read at start-up stops the server; one that becomes unreadable later accepts none of its keys
(fail closed) until it is readable again; `STTM_API_KEY` keeps working either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)
HASHED = re.compile(r"sha256:([0-9a-fA-F]{64})")


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(text: str) -> list[bytes]:
    """The digests of a keys file's lines (see the module's doc)."""
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        hashed = HASHED.fullmatch(line)
        out.append(bytes.fromhex(hashed.group(1)) if hashed else digest(line))
    return out


class KeyRing:
    """The accepted keys; `required` is False when none is configured (everything is open)."""

    def __init__(self, key: str | None = None, path: Path | None = None) -> None:
        self.static = [digest(key)] if key else []
        self.path = path
        self.from_file: list[bytes] = []
        self._stamp: tuple | None = None
        self._reload = False  # set by SIGHUP
        self._lock = threading.Lock()
        if path is not None:
            try:
                self._load(os.stat(path))
            except OSError as err:
                raise ValueError(f"STTM_API_KEYS_FILE {path}: {err.strerror or err}") from None
            except UnicodeDecodeError as err:
                raise ValueError(f"STTM_API_KEYS_FILE {path}: not UTF-8 text (at byte {err.start})") from None

    @property
    def required(self) -> bool:
        return bool(self.static) or self.path is not None

    def request_reload(self) -> None:
        """SIGHUP: read the file again at the next check (safe from a signal handler)."""
        self._reload = True

    def _load(self, st: os.stat_result) -> None:
        self.from_file = parse_keys(Path(self.path).read_text(encoding="utf-8-sig"))
        self._stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        log.info("API keys: %d from %s", len(self.from_file), self.path)

    def _refresh(self) -> None:
        if self.path is None:
            return
        with self._lock:
            try:
                st = os.stat(self.path)
                if self._reload or (st.st_mtime_ns, st.st_size, st.st_ino) != self._stamp:
                    self._reload = False
                    self._load(st)
            except (OSError, UnicodeDecodeError) as err:
                if self.from_file or self._stamp is not None:
                    log.error("STTM_API_KEYS_FILE %s unreadable (%s): its keys are refused", self.path, err)
                self.from_file, self._stamp = [], None

    def valid(self, presented: str) -> bool:
        """Whether `presented` is one of the keys (constant time in the key's value)."""
        self._refresh()
        candidate = digest(presented)
        found = False
        for known in (*self.static, *self.from_file):
            found |= hmac.compare_digest(candidate, known)
        return found


def open_to_others(host: str, keys: KeyRing) -> bool:
    """Whether the server listens beyond this machine (not a loopback address or `localhost`)
    with no key required: anyone who can reach it may classify and start streams."""
    if keys.required or host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: it may resolve anywhere
        return True


@contextlib.contextmanager
def reload_keys_on_sighup(keys: KeyRing) -> Iterator[None]:
    """While the server runs, SIGHUP re-reads the keys file (where signals can be handled: the
    main thread of a POSIX process with a running loop; elsewhere the file's changes still count)."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, keys.request_reload)
    except (NotImplementedError, RuntimeError, ValueError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
