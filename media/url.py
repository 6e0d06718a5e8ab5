"""Which network sources FFmpeg may open — RTSP(S) only — and opening one with every wait bounded.

HTTP(S) sources (a file, an HLS playlist) are never opened by FFmpeg: its HLS demuxer would
fetch every URL a playlist names, unchecked. The caller fetches them (checking each URL) and
feeds the bytes through a `media.pipe.Pipe`; `media.hls` follows a playlist."""

from __future__ import annotations

import av

from media.decode import Limits, decoder_options
from media.errors import VideoError

# What FFmpeg may open for a URL source: RTSP over TCP (interleaved: no UDP ports, no HTTP
# tunnel) and its demuxer. `http`, `file`, `concat`, `pipe`, `data`, ... are refused.
PROTOCOLS = "tcp,tls,rtsp,rtsps"
URL_FORMATS = "rtsp"
FFMPEG_SCHEMES = ("rtsp", "rtsps")
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")  # what a stream may name (http(s): fetched by the caller)


def open_url(url: str, timeout_s: float, limits: Limits) -> av.container.InputContainer:
    """Open an RTSP(S) source with FFmpeg, only over `PROTOCOLS` (the caller checks the host and
    passes its checked address in the URL). Every wait (connect, read) is bounded by
    `timeout_s`. Raises VideoError."""
    scheme = url.split(":", 1)[0].lower()
    if scheme not in FFMPEG_SCHEMES:
        raise VideoError(
            "bad_url",
            f"FFmpeg opens only {', '.join(FFMPEG_SCHEMES)} URLs, not {scheme!r} "
            "(http(s) is fetched by the caller and fed through a Pipe)",
        )
    micros = str(int(timeout_s * 1e6))
    options = {
        "protocol_whitelist": PROTOCOLS,
        "format_whitelist": URL_FORMATS,
        "rw_timeout": micros,
        **decoder_options(limits),
    }
    options |= {"rtsp_transport": "tcp", "timeout": micros}
    try:
        return av.open(url, mode="r", options=options, timeout=(timeout_s, timeout_s), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise VideoError("unreachable", f"cannot open the source ({err.strerror or err})") from None
