"""`media.hls`: which URLs a playlist makes us fetch, in which order, and what reaches the decoder."""

from __future__ import annotations

import os
import threading

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from media.errors import VideoError
from media.hls import HlsReader, choose_variant, is_playlist, parse

BASE = "http://origin.test/live/"


class Origin:
    """A fake origin: `fetch` answers from `files` and records every URL asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.asked = files, []

    def fetch(self, url: str, max_bytes: int) -> tuple[str, bytes]:
        self.asked.append(url)
        return url, self.files[url]


def _media(segments: list[str], first: int = 0, end: bool = True, head: str = "") -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:1", f"#EXT-X-MEDIA-SEQUENCE:{first}", head]
    for uri in segments:
        lines += ["#EXTINF:1.0,", uri]
    return "\n".join([*lines, "#EXT-X-ENDLIST" if end else ""]).encode()


def _read(url: str, origin: Origin, stop: threading.Event | None = None) -> list[bytes]:
    out = []
    HlsReader(url, origin.files[url], origin.fetch, out.append, stop or threading.Event()).run()
    return out


def test_a_vod_playlist_is_read_front_to_back_with_relative_and_absolute_uris():
    origin = Origin({BASE + "a.m3u8": _media(["s0.ts", "/other/s1.ts", "http://cdn.test/s2.ts"]),
                     BASE + "s0.ts": b"zero", "http://origin.test/other/s1.ts": b"one",
                     "http://cdn.test/s2.ts": b"two"})  # fmt: skip
    assert _read(BASE + "a.m3u8", origin) == [b"zero", b"one", b"two"]
    assert origin.asked == [BASE + "s0.ts", "http://origin.test/other/s1.ts", "http://cdn.test/s2.ts"]


def test_a_master_playlist_is_read_through_the_smallest_variant_tall_enough():
    master = b"""#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=300000,RESOLUTION=320x180
low.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=900000,RESOLUTION=640x360
mid.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=5000000,RESOLUTION=1920x1080
http://cdn.test/high.m3u8
"""
    assert choose_variant(parse(master)) == "mid.m3u8"
    assert choose_variant(parse(master), min_short_side=2000) == "http://cdn.test/high.m3u8"
    origin = Origin({BASE + "master.m3u8": master, BASE + "mid.m3u8": _media(["m0.ts"]), BASE + "m0.ts": b"mid"})
    assert _read(BASE + "master.m3u8", origin) == [b"mid"]
    assert origin.asked == [BASE + "mid.m3u8", BASE + "m0.ts"]


def test_a_live_playlist_is_joined_near_its_end_and_reloaded_until_it_ends():
    url = BASE + "live.m3u8"
    versions = [_media([f"s{i}.ts" for i in range(5)], end=False),  # joined at s2 (3 before the end)
                _media([f"s{i}.ts" for i in range(2, 7)], first=2, end=False),  # s5, s6 new
                _media([f"s{i}.ts" for i in range(4, 8)], first=4, end=True)]  # s7, then the end  # fmt: skip
    files = {BASE + f"s{i}.ts": f"seg{i}".encode() for i in range(8)}
    loads = iter(versions[1:])

    def fetch(u: str, max_bytes: int) -> tuple[str, bytes]:
        return u, next(loads) if u == url else files[u]

    out = []
    reader = HlsReader(url, versions[0], fetch, out.append, threading.Event())
    assert reader.live and reader.target_s == 1.0
    reader.run()
    assert out == [f"seg{i}".encode() for i in range(2, 8)]


def test_a_stopped_reader_returns_without_another_fetch():
    stop = threading.Event()
    origin = Origin({BASE + "live.m3u8": _media(["s0.ts"], end=False), BASE + "s0.ts": b"x"})
    reader = HlsReader(BASE + "live.m3u8", origin.files[BASE + "live.m3u8"], origin.fetch, lambda d: stop.set(), stop)
    reader.run()
    assert origin.asked == [BASE + "s0.ts"]


def _encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return encryptor.update(padder.update(data) + padder.finalize()) + encryptor.finalize()


def test_aes_128_segments_are_decrypted_with_their_key_fetched_once_and_the_init_section_first():
    key, iv = os.urandom(16), os.urandom(16)
    head = f'#EXT-X-KEY:METHOD=AES-128,URI="k.bin",IV=0x{iv.hex()}\n#EXT-X-MAP:URI="init.mp4"'
    origin = Origin({BASE + "e.m3u8": _media(["a.m4s", "b.m4s"], first=7, head=head), BASE + "k.bin": key,
                     BASE + "init.mp4": b"INIT", BASE + "a.m4s": _encrypt(b"A" * 100, key, iv),
                     BASE + "b.m4s": _encrypt(b"B" * 33, key, iv)})  # fmt: skip
    assert _read(BASE + "e.m3u8", origin) == [b"INIT", b"A" * 100, b"B" * 33]
    assert origin.asked.count(BASE + "k.bin") == 1 and origin.asked.count(BASE + "init.mp4") == 1
    # without an IV, the media sequence number is the IV
    no_iv = Origin({BASE + "n.m3u8": _media(["a.ts"], first=7, head='#EXT-X-KEY:METHOD=AES-128,URI="k.bin"'),
                    BASE + "k.bin": key, BASE + "a.ts": _encrypt(b"seq", key, (7).to_bytes(16, "big"))})  # fmt: skip
    assert _read(BASE + "n.m3u8", no_iv) == [b"seq"]


@pytest.mark.parametrize(
    ("head", "segment", "code", "words"),
    [('#EXT-X-KEY:METHOD=SAMPLE-AES,URI="k"', "a.ts", "unsupported", "SAMPLE-AES"),
     ("", "#EXT-X-BYTERANGE:100@0\na.ts", "unsupported", "BYTERANGE"),
     ('#EXT-X-KEY:METHOD=AES-128,URI="short"', "a.ts", "corrupt", "4 bytes")],
)  # fmt: skip
def test_what_is_not_read_is_refused_with_the_reason(head, segment, code, words):
    origin = Origin({BASE + "x.m3u8": _media([segment], head=head), BASE + "a.ts": b"x" * 16, BASE + "short": b"1234"})
    with pytest.raises(VideoError) as err:
        _read(BASE + "x.m3u8", origin)
    assert err.value.code == code and words in str(err.value)


def test_playlist_sniffing():
    assert is_playlist(b"\xef\xbb\xbf#EXTM3U\n") and is_playlist(b"\n#EXTM3U")
    assert not is_playlist(b"\x00\x00\x00\x18ftypmp42") and not is_playlist(b"")
    with pytest.raises(VideoError) as err:
        parse(b"\xff\xfe not text")
    assert err.value.code == "bad_playlist"
