"""HLS followed here, not by FFmpeg: FFmpeg's HLS demuxer would open every URL a playlist
names (variants, segments, keys, init sections) without asking anyone.

`HlsReader` reads a media playlist (choosing a variant of a master playlist first), reloads a
live one every target duration, and hands each new segment's bytes — the init section
(`EXT-X-MAP`) first, AES-128 segments decrypted — to `write`, which feeds the decoder's pipe.
Every URL goes through the caller's `fetch(url, max_bytes) -> (final url, body)`: the caller
decides which hosts may be fetched (the service checks and pins each one), so nothing here
opens a connection itself. Playlists are parsed with `m3u8.loads` (never `m3u8.load`, which
fetches).

Refused with a clear reason: SAMPLE-AES and other key methods, `EXT-X-BYTERANGE` segments, a
master playlist whose variant is itself a master.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from urllib.parse import urljoin

import m3u8
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from media.errors import VideoError

Fetch = Callable[[str, int], tuple[str, bytes]]
PLAYLIST_BYTES = 1 << 20
SEGMENT_BYTES = 64 << 20
KEY_BYTES = 1024  # an AES-128 key is 16 bytes; more is refused
LIVE_START = 3  # a live playlist is joined this many segments before its end (as players do)
MIN_SHORT_SIDE = 224  # the smallest variant at least this tall is chosen (the model's input is smaller)


def is_playlist(head: bytes) -> bool:
    """Whether a response body is an M3U8 playlist (its first line is `#EXTM3U`)."""
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"#EXTM3U")


def parse(body: bytes) -> m3u8.M3U8:
    try:
        return m3u8.loads(body.decode("utf-8-sig"))
    except Exception as err:  # noqa: BLE001 - m3u8's parser raises what it meets: any of it is a bad playlist
        raise VideoError("bad_playlist", f"not a readable HLS playlist ({type(err).__name__}: {err})") from None


def choose_variant(master: m3u8.M3U8, min_short_side: int = MIN_SHORT_SIDE) -> str:
    """The URI of the cheapest variant at least `min_short_side` tall (else the largest)."""
    variants = [p for p in master.playlists if p.uri]
    if not variants:
        raise VideoError("bad_playlist", "a master playlist without variants")

    def short_side(p) -> int:
        res = p.stream_info.resolution
        return min(res) if res else 0

    def bandwidth(p) -> int:
        return p.stream_info.bandwidth or 0

    big_enough = [p for p in variants if short_side(p) >= min_short_side]
    best = min(big_enough, key=bandwidth) if big_enough else max(variants, key=lambda p: (short_side(p), bandwidth(p)))
    return best.uri


def decrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-128-CBC with PKCS#7 padding, as HLS's `METHOD=AES-128` encrypts a segment."""
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        return unpadder.update(decryptor.update(data) + decryptor.finalize()) + unpadder.finalize()
    except ValueError:
        raise VideoError("corrupt", "an AES-128 segment does not decrypt with its key") from None


class HlsReader:
    """Follows one playlist into `write` until its end (`EXT-X-ENDLIST`) or `stop`.

    `url`/`body`: the playlist as first fetched (master or media). Raises VideoError
    (`bad_playlist`, `unsupported`, `corrupt`) or whatever `fetch` and `write` raise."""

    def __init__(
        self, url: str, body: bytes, fetch: Fetch, write: Callable[[bytes], None], stop: threading.Event
    ) -> None:
        self.fetch, self.write, self.stop = fetch, write, stop
        self.url, self.playlist = url, parse(body)
        if self.playlist.is_variant:
            self.url, body = fetch(urljoin(url, choose_variant(self.playlist)), PLAYLIST_BYTES)
            self.playlist = parse(body)
            if self.playlist.is_variant:
                raise VideoError("bad_playlist", "a variant playlist that is itself a master playlist")
        self.keys: dict[str, bytes] = {}
        self.init_uri: str | None = None
        first = self.playlist.media_sequence or 0
        self.next_seq = first if self.live is False else first + max(0, len(self.playlist.segments) - LIVE_START)

    @property
    def live(self) -> bool:
        return not self.playlist.is_endlist

    @property
    def target_s(self) -> float:
        return min(max(float(self.playlist.target_duration or 2), 0.5), 30.0)

    def run(self) -> None:
        """Fetch and write every new segment; reload a live playlist until it ends."""
        while not self.stop.is_set():
            first = self.playlist.media_sequence or 0
            wrote = False
            for i, segment in enumerate(self.playlist.segments):
                if first + i >= self.next_seq and not self.stop.is_set():
                    self._segment(segment, first + i)
                    self.next_seq, wrote = first + i + 1, True
            if not self.live:
                return
            if self.stop.wait(self.target_s if wrote else self.target_s / 2):
                return
            self.url, body = self.fetch(self.url, PLAYLIST_BYTES)
            self.playlist = parse(body)

    def _segment(self, segment, seq: int) -> None:
        if segment.byterange:
            raise VideoError("unsupported", "EXT-X-BYTERANGE segments are not read")
        init = segment.init_section
        if init is not None and init.uri and urljoin(self.url, init.uri) != self.init_uri:
            if init.byterange:
                raise VideoError("unsupported", "an EXT-X-MAP with a BYTERANGE is not read")
            self.init_uri = urljoin(self.url, init.uri)
            self.write(self.fetch(self.init_uri, SEGMENT_BYTES)[1])
        data = self.fetch(urljoin(self.url, segment.uri), SEGMENT_BYTES)[1]
        self.write(self._decrypted(data, segment.key, seq))

    def _decrypted(self, data: bytes, key, seq: int) -> bytes:
        method = (key.method if key is not None else None) or "NONE"
        if method == "NONE":
            return data
        if method != "AES-128" or not key.uri:
            raise VideoError("unsupported", f"HLS encryption {method} is not read (AES-128 is)")
        key_url = urljoin(self.url, key.uri)
        if key_url not in self.keys:
            value = self.fetch(key_url, KEY_BYTES)[1]
            if len(value) != 16:
                raise VideoError("corrupt", f"an AES-128 key of {len(value)} bytes, not 16")
            self.keys[key_url] = value
        iv = bytes.fromhex(key.iv[2:].rjust(32, "0")) if key.iv else seq.to_bytes(16, "big")
        return decrypt(data, self.keys[key_url], iv)
