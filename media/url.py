"""Which network sources FFmpeg may open, and opening one with every wait bounded."""

from __future__ import annotations

import av

from media.container import CONTAINERS
from media.decode import Limits, decoder_options
from media.errors import VideoError

# What FFmpeg may open for a URL source: the network protocols of RTSP, HLS and HTTP(S), and
# the demuxers of those plus our containers. `file`, `concat`, `pipe`, `data`, ... are refused,
# also where a playlist names them.
PROTOCOLS = "http,https,tcp,tls,rtsp,rtsps,rtp,udp,crypto"
URL_FORMATS = f"{CONTAINERS},hls,rtsp,sdp,rtp"
URL_SCHEMES = ("rtsp", "rtsps", "http", "https")


def open_url(url: str, timeout_s: float, limits: Limits) -> av.container.InputContainer:
    """Open a network source with FFmpeg, only over `PROTOCOLS` (the caller checks the host,
    and follows HTTP redirects itself: FFmpeg follows none). Every wait (connect, read) is
    bounded by `timeout_s`. Raises VideoError."""
    scheme = url.split(":", 1)[0].lower()
    if scheme not in URL_SCHEMES:
        raise VideoError("bad_url", f"only {', '.join(URL_SCHEMES)} URLs are read, not {scheme!r}")
    micros = str(int(timeout_s * 1e6))
    options = {
        "protocol_whitelist": PROTOCOLS,
        "format_whitelist": URL_FORMATS,
        "rw_timeout": micros,
        **decoder_options(limits),
    }
    if scheme.startswith("rtsp"):
        options |= {"rtsp_transport": "tcp", "timeout": micros}
    else:
        options |= {"max_redirects": "0"}  # FFmpeg follows none: the caller followed and checked them
    try:
        return av.open(url, mode="r", options=options, timeout=(timeout_s, timeout_s), metadata_errors="ignore")
    except av.FFmpegError as err:
        raise VideoError("unreachable", f"cannot open the source ({err.strerror or err})") from None
